"""Each mode's turn-taking, mode switching, and every panic path, on in-memory ports with a FakeClock and a
scripted engine (tests/bridge_fakes.py)."""

from __future__ import annotations

import math
import time

import mido
import pytest
from musebridge.bridge.config import CCMap, ModeConfig
from musebridge.bridge.errors import EngineLost
from musebridge.bridge.midiclock import ClockConfig
from musebridge.bridge.modes import ANSWER_FIRST_TOKENS, ANTICIPATE_LEAD_S
from musebridge.bridge.scheduler import SchedulerConfig
from musebridge.engine.tokens.vocab import GRID_S

from tests.bridge_fakes import FakeLink, Rig, cc, off, on, stuck_notes, unreleased_note_ons

STRINGS = 5  # the fake engine plays strings on channel 6 (5 on the wire)


def phrase(rig, notes=(60, 62, 64), length=0.15):
    for n in notes:
        rig.play(on(n))
        rig.run(length)
        rig.play(off(n))
        rig.run(0.05)


# -- respond ---------------------------------------------------------------------------------------------------
def test_respond_waits_for_the_pause_then_answers_at_once():
    rig = Rig("respond", modes=ModeConfig(pause_s=0.5, answer_s=1.0))
    phrase(rig)
    last_player = rig.clock.now()
    rig.run(0.45)
    assert not rig.note_ons(STRINGS), "no answer before the pause has elapsed"
    rig.run(0.06)
    answer = rig.note_ons(STRINGS)
    assert answer and answer[0][0] - (last_player + 0.5) <= 0.0101  # within one 5 ms tick (+ rounding)
    assert [e["note"] for e in rig.link.fed if e["type"] == "note_on"] == [60, 62, 64]
    rig.run(1.5)
    answer = rig.note_ons(STRINGS)
    assert answer[-1][0] - answer[0][0] <= 1.0 + 1e-6, "the answer lasts answer_s"
    assert not stuck_notes(m for _, m in rig.heard)


def test_respond_does_not_answer_while_a_key_is_held():
    rig = Rig("respond", modes=ModeConfig(pause_s=0.3))
    rig.play(on(60))
    rig.run(1.0)
    assert not rig.note_ons(STRINGS)
    rig.play(off(60))
    rig.run(0.35)
    assert rig.note_ons(STRINGS)


def test_respond_player_cutting_in_stops_the_answer_at_once():
    rig = Rig("respond", modes=ModeConfig(pause_s=0.3, answer_s=4.0))
    phrase(rig, (60,))
    rig.run(0.6)
    assert rig.note_ons(STRINGS)
    cut = rig.clock.now()
    rig.play(on(67))  # no clock advance: everything below happened at `cut`
    assert not stuck_notes(m for t, m in rig.heard if m.channel == STRINGS), "answer notes ended at once"
    rig.run(0.2)
    assert not rig.note_ons(STRINGS, after=cut + 1e-9), "silent while the player plays"
    assert rig.link.fed[-1]["note"] == 67
    rig.play(off(67))
    rig.run(0.4)
    assert rig.note_ons(STRINGS, after=cut + 0.3), "answers again after the next pause"


def test_respond_trigger_cc_answers_without_a_pause():
    rig = Rig("respond", modes=ModeConfig(pause_s=5.0))
    phrase(rig, (60,))
    t = rig.clock.now()
    rig.play(cc(107))
    rig.run(0.005)
    assert rig.note_ons(STRINGS) and rig.note_ons(STRINGS)[0][0] <= t + 0.005
    assert not any(m.type == "control_change" and m.control == 107 for _, m in rig.heard), "mapped CCs are eaten"
    assert not any(g["now"] for g in rig.link.generates), "the model's own first note (it plays one at once here)"


class WaitingLink(FakeLink):
    """A model that always starts with a long wait (time shifts) before any note of its own."""

    def generate(self, until=None, notes=None, max_tokens=None, now=False):
        if now or until is not None:
            return super().generate(until=until, notes=notes, max_tokens=max_tokens, now=now)
        self._check("generate")
        self.generates.append({"until": until, "notes": notes, "max_tokens": max_tokens, "now": now})
        self.time = round(self.time + 0.01 * max_tokens, 6)
        return [], self.time


def test_respond_does_not_wait_for_a_model_that_waits():
    """The first answer note comes at once even when the model would sample a long pause first: after
    ANSWER_FIRST_TOKENS tokens without a note it is asked for `now` (one model step per note)."""
    rig = Rig("respond", modes=ModeConfig(pause_s=5.0), link=WaitingLink())
    phrase(rig, (60,))
    t = rig.clock.now()
    rig.play(cc(107))
    rig.run(0.005)
    assert rig.note_ons(STRINGS) and rig.note_ons(STRINGS)[0][0] <= t + 0.005
    first, second = rig.link.generates[:2]
    assert (first["now"], first["max_tokens"]) == (False, ANSWER_FIRST_TOKENS) and second["now"]


def test_respond_answer_length_in_beats_follows_the_tempo():
    rig = Rig("respond", modes=ModeConfig(pause_s=0.2, answer_beats=2), clock=ClockConfig(bpm=60))
    phrase(rig, (60,))
    rig.run(3.0)
    answer = rig.note_ons(STRINGS)
    assert 1.8 <= answer[-1][0] - answer[0][0] <= 2.0  # two beats at 60 bpm


# -- accompany -------------------------------------------------------------------------------------------------
def test_accompany_plays_along_ahead_and_replans_on_the_player():
    rig = Rig("accompany", modes=ModeConfig(horizon_s=0.3, chunk_s=0.2))
    rig.run(1.0)
    before = rig.note_ons(STRINGS)
    assert len(before) >= 8, "plays without waiting for the player"
    planned_to = rig.link.time
    assert planned_to >= rig.bridge.time.session(rig.clock.now()) + 0.3 - 1e-6, "planned a horizon ahead"
    cut = rig.clock.now()
    rig.play(on(60))  # earlier than the engine's plan: rolled back
    assert rig.link.epoch == 1
    rig.run(1.0)
    later = rig.note_ons(STRINGS, after=cut)
    assert later and all(m.velocity == 101 for _, m in later), "after the cut only the new plan sounds"
    rig.play(off(60))
    rig.bridge.stop()
    assert not unreleased_note_ons(m for _, m in rig.heard)


# -- harmonize -------------------------------------------------------------------------------------------------
def test_harmonize_voices_sound_with_the_note_and_end_with_it():
    rig = Rig("harmonize", modes=ModeConfig(voices=3))
    rig.run(0.2)
    assert not rig.note_ons(STRINGS), "nothing without the player"
    t = rig.clock.now()
    rig.play(on(60, velocity=37))
    voices = rig.note_ons(STRINGS)
    assert len(voices) == 3 and all(vt == t for vt, _ in voices), "voices at the same instant"
    assert rig.link.last_generate["now"], "the engine is asked for notes at the player's time"
    first = rig.link.generates[-2]
    assert [(e["type"], e["note"]) for e in first["feed"]] == [("note_on", 60)] and first["notes"] == 1, \
        "the note rides in the first voice's request: one round trip"
    assert all(m.velocity == 37 for _, m in voices), "voices follow the player's dynamics"
    rig.run(0.5)
    assert len(rig.note_ons(STRINGS)) == 3 and stuck_notes(m for _, m in rig.heard if m.channel == STRINGS)
    rig.play(off(60))
    assert not stuck_notes(m for _, m in rig.heard)


def test_harmonize_tells_the_engine_its_voices_ended_with_the_players_note():
    rig = Rig("harmonize", modes=ModeConfig(voices=2), channels={"strings": 2})
    rig.play(on(60))
    voices = [m for _, m in rig.heard if m.type == "note_on" and m.channel == 2]
    assert len(voices) == 2
    rig.link.fed.clear()
    rig.play(off(60))
    player, *ends = rig.link.fed
    assert player["type"] == "note_off" and player["note"] == 60 and "engine" not in player
    assert [(e["type"], e["channel"], e["note"], e["engine"]) for e in ends] == \
        [("note_off", STRINGS, v.note, True) for v in voices], "engine channels, not the remapped ones"
    assert {e["t"] for e in ends} == {player["t"]}
    assert not stuck_notes(m for _, m in rig.heard)


def test_harmonize_anticipates_each_grid_step_while_the_player_is_active():
    """At each 10 ms step (ANTICIPATE_LEAD_S early) the engine hears where the player may play next, so the
    note's time shift is ready; never before the first note, not after anticipate_s of silence, not when off."""
    rig = Rig("harmonize", modes=ModeConfig(voices=1, anticipate_s=1.5))
    rig.run(0.2, step=0.001)
    assert rig.link.anticipated == [] and rig.bridge.mode.wake_in(rig.clock.now()) == math.inf
    rig.play(on(60))
    sent = []
    for _ in range(100):
        now = rig.clock.now()
        wait = rig.bridge.mode.wake_in(now)
        assert 0 < wait <= GRID_S + 1e-4
        before = len(rig.link.anticipated)
        rig.clock.advance(wait)
        rig.bridge.pump()  # the worker wakes when the mode asked: one anticipation per step, on time
        assert len(rig.link.anticipated) == before + 1
        sent.append((rig.bridge.time.session(rig.clock.now()), rig.link.anticipated[-1]))
    for when, t in sent:  # asked for just before the step starts (a note at t +- 5 ms lands on it)
        assert 0 < (round(t / GRID_S) - 0.5) * GRID_S - when <= ANTICIPATE_LEAD_S
    steps = [round(t / GRID_S) for _, t in sent]
    assert steps == list(range(steps[0], steps[0] + 100))
    rig.play(off(60))
    rig.run(1.6, step=0.001)
    quiet = len(rig.link.anticipated)
    rig.run(0.3, step=0.001)
    assert len(rig.link.anticipated) == quiet, "no anticipation after anticipate_s without the player"
    off_rig = Rig("harmonize", modes=ModeConfig(voices=1, anticipate_s=0))
    off_rig.play(on(60))
    off_rig.run(0.2, step=0.001)
    assert off_rig.link.anticipated == [] and off_rig.bridge.mode.wake_in(off_rig.clock.now()) == math.inf


# -- generate --------------------------------------------------------------------------------------------------
def clock_ticks(rig, bpm, seconds, step=0.001):
    """An external clock source: a tick every 1/24 beat, the bridge pumped every `step` seconds."""
    spt = 60 / bpm / 24
    start = rig.clock.now()
    n = 0
    while rig.clock.now() < start + seconds:
        rig.clock.advance(step)
        while start + (n + 1) * spt <= rig.clock.now() + 1e-9:
            n += 1
            rig.keyboard.send(mido.Message("clock"))
        rig.bridge.pump()


def test_generate_follows_the_external_clock_and_its_transport():
    rig = Rig("generate", clock=ClockConfig(quantize="1/16"))
    rig.keyboard.send(mido.Message("start"))
    start = rig.clock.now() + 60 / 150 / 24  # the first tick after Start is the downbeat
    clock_ticks(rig, 150, 2.0)
    notes = rig.note_ons(STRINGS)
    assert rig.bridge.follower.bpm == pytest.approx(150, rel=0.01)
    grid = 60 / 150 / 4
    assert len(notes) >= 5
    locked = [t for t, _ in notes if t > start + 0.5]  # planned after the tempo estimate locked
    phases = [abs((t - start) / grid - round((t - start) / grid)) for t in locked]
    assert len(locked) >= 5 and max(phases) < 0.05, phases
    rig.keyboard.send(mido.Message("stop"))
    rig.bridge.pump()
    stopped = rig.clock.now()
    assert not stuck_notes(m for _, m in rig.heard), "transport stop silences"
    rig.run(1.0)
    assert not rig.note_ons(STRINGS, after=stopped + 1e-9), "stopped transport: silence"
    rig.keyboard.send(mido.Message("continue"))
    clock_ticks(rig, 150, 1.0)
    assert rig.note_ons(STRINGS, after=stopped + 1.0)


@pytest.mark.parametrize("how", ["transport", "stop_cc", "cc123"])
def test_accompany_pauses_when_silenced_until_the_player_or_the_transport(how):
    """Silenced by a transport stop (or the stop CC, or CC123), accompany plans nothing at its next ticks: it stays
    stopped until the transport continues or the player plays."""
    rig = Rig("accompany")
    rig.run(0.5)
    assert rig.note_ons(STRINGS)
    rig.play({"transport": mido.Message("stop"), "stop_cc": cc(108), "cc123": cc(123)}[how])
    silenced = rig.clock.now()
    rig.run(1.0)
    assert not rig.note_ons(STRINGS, after=silenced - 1e-9) and rig.bridge.mode.state == "stopped"
    if how == "transport":
        rig.play(mido.Message("continue"))
    else:
        rig.play(on(60))
    resumed = rig.clock.now()
    rig.run(0.5)
    assert rig.note_ons(STRINGS, after=resumed - 1e-9)


def test_generate_pauses_at_the_stop_cc_until_the_trigger():
    rig = Rig("generate")
    rig.run(1.0)
    assert rig.note_ons(STRINGS)
    rig.play(cc(108))
    stopped = rig.clock.now()
    rig.run(1.0)
    assert not rig.note_ons(STRINGS, after=stopped - 1e-9)
    rig.play(cc(107))
    rig.run(1.0)
    assert rig.note_ons(STRINGS, after=stopped + 1.0)


def test_generate_runs_on_the_internal_clock_and_ignores_the_player():
    rig = Rig("generate")
    rig.play(on(60), off(60))
    rig.run(1.0)
    assert rig.note_ons(STRINGS) and not rig.link.fed


# -- thru, filters, feedback -----------------------------------------------------------------------------------
def test_thru_passes_notes_and_asks_the_engine_nothing():
    rig = Rig("thru")
    rig.play(on(60), off(60), mido.Message("pitchwheel", pitch=300))
    rig.run(1.0)
    assert [m.type for _, m in rig.heard] == ["note_on", "note_off", "pitchwheel"]
    assert "generate" not in rig.link.calls and not rig.link.fed


def test_channel_filter_and_malformed_bytes():
    rig = Rig("thru", channel=1)
    rig.play(on(60, channel=0), on(61, channel=1))
    rig.bridge.input.inbox.put((rig.clock.now(), [0x90, 200]))  # data byte out of range
    rig.bridge.input.inbox.put((rig.clock.now(), [0xF7]))
    rig.play(off(61, channel=1))
    assert [(m.channel, m.note) for _, m in rig.heard] == [(1, 61), (1, 61)]
    assert rig.bridge.counts["malformed"] == 2


def looped(mode: str) -> Rig:
    """A rig (thru on) whose out port feeds its in port: one loopback port carrying both directions."""
    rig = Rig(mode, thru=True)
    rig.midi.listen("MuseBridge Out", lambda data: rig.bridge.input.inbox.put((rig.clock.now(), data)))
    return rig


def test_feedback_through_a_loopback_port_is_suppressed():
    rig = looped("harmonize")
    rig.play(on(60))
    rig.run(0.1)
    rig.play(off(60))
    rig.run(0.1)
    assert [e["note"] for e in rig.link.fed if e["type"] == "note_on"] == [60], "echoes are not fed again"
    assert rig.bridge.echo.suppressed >= 4


def test_a_players_cc123_like_one_just_sent_is_still_obeyed():
    """A player's CC123 within the echo window of the bridge's own CC123 (a transport stop's panic) is the
    player's, not that echo: it is obeyed, and the note passed thru meanwhile is silenced."""
    rig = Rig("respond", thru=True)
    rig.play(on(55), off(55))
    rig.play(mido.Message("stop"))  # panic: CC123 value 0 on channel 1 goes out
    rig.play(on(55))
    assert unreleased_note_ons(m for _, m in rig.heard) == {(0, 55)}
    rig.play(cc(123, 0))  # the same bytes, from the player
    assert not unreleased_note_ons(m for _, m in rig.heard)


def test_a_panic_over_a_loopback_port_does_not_echo_into_another():
    rig = looped("accompany")
    rig.play(on(48))
    rig.run(0.3)
    rig.play(cc(123))
    rig.run(0.1)
    assert not unreleased_note_ons(m for _, m in rig.heard)
    panics = [m.channel for _, m in rig.heard if m.type == "control_change" and m.control == 123]
    assert sorted(panics) == sorted(set(panics)), "one CC123 per channel: its echo did not panic again"


# -- switching ---------------------------------------------------------------------------------------------------
def test_modes_switch_by_cc_and_by_the_control_protocol():
    rig = Rig("accompany")
    rig.run(0.5)
    assert rig.note_ons(STRINGS)
    rig.play(cc(104))  # harmonize
    assert rig.bridge.mode.name == "harmonize" and rig.link.params["mode"] == "harmonize"
    assert not stuck_notes(m for _, m in rig.heard), "leaving a mode ends its notes"
    t = rig.clock.now()
    rig.run(0.5)
    assert not rig.note_ons(STRINGS, after=t + 1e-9)
    rig.bridge.engine_params({"mode": "generate"})  # `musebridge ctl set mode generate`
    rig.run(0.5)
    assert rig.bridge.mode.name == "generate" and rig.note_ons(STRINGS, after=t + 0.1)
    rig.play(cc(102, value=0))  # below 64: ignored
    assert rig.bridge.mode.name == "generate"


def test_custom_cc_map_on_one_channel():
    rig = Rig("respond", cc=CCMap(accompany=20, channel=15))
    rig.play(cc(20, channel=0))
    assert rig.bridge.mode.name == "respond"
    rig.play(cc(20, channel=15))
    assert rig.bridge.mode.name == "accompany"


def test_temperature_cc():
    rig = Rig("respond")
    rig.play(cc(109, value=127))
    assert rig.link.params["temperature"] == pytest.approx(2.0)


# -- panic paths ----------------------------------------------------------------------------------------------
def sounding_engine_notes(rig):
    rig.run(0.3)
    assert stuck_notes(m for _, m in rig.heard) or rig.note_ons(STRINGS)


@pytest.mark.parametrize("how", ["cc123", "stop_cc", "transport_stop", "engine_event", "engine_fails", "exit"])
def test_every_panic_path_leaves_no_note_hanging(how):
    rig = Rig("accompany", thru=True, scheduler=SchedulerConfig(max_note_s=30.0))
    rig.play(on(48))  # a held player note, passed thru
    rig.link.generate = _long_notes(rig.link)
    rig.run(0.3)
    assert unreleased_note_ons(m for _, m in rig.heard)
    if how == "cc123":
        rig.play(cc(123))
    elif how == "stop_cc":
        rig.play(cc(108))
    elif how == "transport_stop":
        rig.play(mido.Message("stop"))
    elif how == "engine_event":
        rig.bridge.engine_lost("the engine server is stopping")
        rig.bridge.pump()
    elif how == "engine_fails":
        rig.link.alive = False
        rig.run(0.6)  # the next plan request fails
    else:
        rig.bridge.stop()
    assert not unreleased_note_ons(m for _, m in rig.heard)
    ccs = {(m.channel, m.control) for _, m in rig.heard if m.type == "control_change"}
    assert {(0, 123), (0, 120), (STRINGS, 123), (STRINGS, 120)} <= ccs


def _long_notes(link):
    """A generate that starts notes and never ends them (the engine would end them later)."""
    def generate(until=None, notes=None, max_tokens=None):
        link.calls.append("generate")
        if not link.alive:
            raise EngineLost("gone")
        start = link.time
        link.time = max(link.time, until or link.time)
        return [(start, mido.Message("note_on", channel=STRINGS, note=70 + len(link.calls) % 10, velocity=90))], \
            link.time
    return generate


def test_engine_loss_is_recovered_by_reconnecting():
    rig = Rig("accompany")
    rig.link.alive = False
    rig.run(0.1)
    assert not rig.bridge.engine_ok and "gone" in rig.bridge.lost_reason
    rig.link.alive = True
    rig.run(2.1)
    assert rig.bridge.engine_ok and rig.note_ons(STRINGS, after=rig.clock.now() - 0.5)


def test_record_writes_both_parts(tmp_path):
    path = tmp_path / "take.mid"
    rig = Rig("respond", record=str(path), modes=ModeConfig(pause_s=0.2, answer_s=0.5))
    phrase(rig, (60, 64))
    rig.run(1.0)
    rig.bridge.stop()
    mid = mido.MidiFile(path)
    names = {t.name for t in mid.tracks}
    assert {"player", "strings"} <= names
    notes = [m for m in mido.merge_tracks(mid.tracks) if m.type == "note_on" and m.velocity]
    assert {m.note for m in notes if m.channel == 0} == {60, 64} and any(m.channel == STRINGS for m in notes)
    assert FakeLink  # the fake engine made the strings part


def test_a_key_held_when_the_take_stops_ends_there_in_the_recording(tmp_path):
    """A key still down when the take stops (or struck twice without a release) ends there in the recording:
    every note-on in the file has its note-off."""
    path = tmp_path / "take.mid"
    rig = Rig("respond", record=str(path))
    rig.play(on(60))
    rig.run(0.3)
    rig.play(on(60))  # again, no release in between
    rig.run(0.7)
    rig.bridge.stop()
    timed, t = [], 0.0
    for m in mido.MidiFile(path):  # times in seconds from the previous message
        t += m.time
        if m.type in ("note_on", "note_off") and m.channel == 0:
            timed.append((round(t, 3), m.type, m.velocity > 0))
    assert timed == [(0.0, "note_on", True), (0.3, "note_off", False), (0.3, "note_on", True),
                     (1.0, "note_off", False)], "retriggered at 0.3 s, and the held note ends at the stop"


def test_harmonize_ignores_the_grid_and_respond_never_quantizes_into_the_past():
    rig = Rig("harmonize", clock=ClockConfig(bpm=60, quantize="1/4"))
    rig.clock.advance(0.3)
    t = rig.clock.now()
    rig.play(on(60))
    assert [vt for vt, _ in rig.note_ons(STRINGS)] == [t] * 3, "voices sound now, not on the next beat"
    rig = Rig("respond", clock=ClockConfig(bpm=60, quantize="1/4"), modes=ModeConfig(pause_s=0.2, answer_s=3.0))
    phrase(rig, (60,))
    rig.run(3.0)
    answer = rig.note_ons(STRINGS)
    assert answer and rig.bridge.scheduler.dropped_late == 0
    origin = rig.bridge.time.origin
    assert all(abs((t - origin) - round(t - origin)) < 0.0051 for t, _ in answer), "on beats"


def test_instrument_channels_are_configurable_and_program_changes_optional():
    rig = Rig("accompany", channels={"strings": 2})
    rig.run(0.5)
    assert rig.note_ons(2) and not rig.note_ons(STRINGS)
    assert [(m.channel, m.program) for _, m in rig.heard if m.type == "program_change"] == [(2, 48)]
    rig = Rig("accompany", program_changes=False)
    rig.run(0.5)
    assert rig.note_ons(STRINGS) and not any(m.type == "program_change" for _, m in rig.heard)


def test_a_panic_during_an_engine_request_drops_its_answer():
    """The input thread silences (transport stop) while the worker waits for the engine: the reply that arrives
    afterwards must not start notes."""
    rig = Rig("accompany")
    generate = rig.link.generate

    def slow_generate(**limits):
        result = generate(**limits)
        rig.bridge.panic("transport stop")  # arrives while the request is in flight
        return result

    rig.link.generate = slow_generate
    rig.run(0.5)
    assert not rig.note_ons(STRINGS)
    assert not unreleased_note_ons(m for _, m in rig.heard)


@pytest.mark.parametrize("mode", ["harmonize", "generate", "respond"])
def test_a_mode_switch_that_finds_the_engine_gone_leaves_a_working_bridge(mode):
    """A mode CC while the engine has just gone enters the new mode without raising (the switch's engine request
    fails quietly), silencing still works and the worker thread lives on; the bridge enters the mode again once the
    engine is back."""
    rig = Rig("accompany", thru=True)
    rig.play(on(60))
    rig.link.alive = False
    rig.play(cc({"harmonize": 104, "generate": 105, "respond": 102}[mode]))  # fails on the engine: no exception
    assert rig.bridge.mode.name == mode and not rig.bridge.engine_ok
    rig.run(0.1)
    rig.play(off(60))
    rig.link.alive = True
    rig.run(2.5)  # reconnects and enters the mode again
    assert rig.bridge.engine_ok
    rig.bridge.stop()
    assert not unreleased_note_ons(m for _, m in rig.heard)


def test_an_unexpected_error_in_the_worker_silences_and_the_worker_carries_on(caplog):
    """The threaded bridge: a bug in a mode (here its tick raises) is logged, notes are silenced, and the engine
    worker keeps serving (it never dies leaving notes sounding)."""
    from musebridge.bridge.clock import MonotonicClock

    rig = Rig("accompany", thru=True, time_source=MonotonicClock())
    ticks = []

    def broken_tick(now):
        ticks.append(now)
        raise RuntimeError("a bug in a mode")

    rig.bridge.mode.tick = broken_tick
    rig.bridge.start()
    try:
        rig.keyboard.send(on(60))  # passed thru by the input thread
        for _ in range(500):
            if len(ticks) >= 3 and unreleased_note_ons(m for _, m in rig.heard) == set():
                break
            time.sleep(0.01)
        assert len(ticks) >= 3, "the worker kept ticking after the error"
        assert not unreleased_note_ons(m for _, m in rig.heard), "the error silenced the held note"
        assert "a bug in a mode" in caplog.text
    finally:
        rig.bridge.stop()


def test_the_stop_cc_silences_even_with_the_engine_gone():
    """The stop CC silences a note passed thru even while the engine is lost: it does not wait on the engine
    worker, which ignores everything until the engine is back."""
    rig = Rig("respond", thru=True)
    rig.link.alive = False
    rig.play(off(55))  # the worker finds the engine gone (and silences)
    rig.play(on(55))  # thru: sounds; the worker asks the engine nothing now
    assert not rig.bridge.engine_ok and unreleased_note_ons(m for _, m in rig.heard)
    rig.play(cc(108))
    assert not unreleased_note_ons(m for _, m in rig.heard)


def test_a_key_played_again_at_once_is_heard_not_taken_for_an_echo():
    """A fast repeat of one key at the same velocity (note-on, note-off, note-on within the echo window) is the
    player's, not the echo of the first note-on passed thru."""
    rig = Rig("harmonize", thru=True)
    for _ in range(3):
        rig.play(on(55))
        rig.run(0.02)
        rig.play(off(55))
        rig.run(0.02)
    assert [e["note"] for e in rig.link.fed if e["type"] == "note_on"] == [55, 55, 55]
    assert len([m for _, m in rig.heard if m.type == "note_on" and m.channel == 0 and m.velocity]) == 3
    assert rig.bridge.echo.suppressed == 0


def test_a_quantized_note_keeps_its_length_when_its_note_off_comes_in_a_later_request():
    """The quantization shift of a note-on is kept across engine replies: a note-off that comes in a later reply
    (an answer asked for in chunks) moves with its note-on, so it is never due before it (and dropped, leaving the
    note sounding until max_note_s)."""
    rig = Rig("respond", modes=ModeConfig(pause_s=0.2, answer_s=0.5), clock=ClockConfig(quantize="1/4"))
    phrase(rig, (55,))
    rig.run(1.0)  # the answer was planned in several requests, each note moved to the next beat, and it ended
    assert rig.bridge.mode.state == "listening" and rig.note_ons(STRINGS)
    assert not stuck_notes(m for _, m in rig.heard), "every answer note ended with its own note-off"


@pytest.mark.parametrize("relocate", [mido.Message("start"), mido.Message("songpos", pos=1)])
def test_generate_relocated_while_playing_leaves_no_note_to_its_guard(relocate):
    """A Start (or a song position) while generate plays re-anchors its beat mapping; what was planned on the old
    mapping is released first, so no note gets a note-off planned on the new mapping before its note-on (which
    would leave it sounding until max_note_s)."""
    rig = Rig("generate", scheduler=SchedulerConfig(max_note_s=5.0))
    rig.run(0.01)  # planned ahead, nothing sounding yet
    rig.play(relocate)
    rig.run(1.0)
    assert rig.note_ons(STRINGS)
    assert not stuck_notes(m for _, m in rig.heard if m.channel == STRINGS), "every note ended by its own note-off"
