"""No stuck notes, ever: random player input, mode switches (CC and control protocol), panics, transport and song
position messages, engine losses (a failing request or the engine watcher's news) and quantization grids on the
in-memory rig (tests/bridge_fakes.py), then the bridge stops. Right after each panic nothing sounds; in the end
every note-on the out port sent has its own note-off, no engine note sounded longer than the scheduler's maximum
note length (the player's own notes, passed thru, last as long as the key is held: docs/live.md, "No stuck
notes"), and the recording of the take has a note-off for every note-on."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mido
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from musebridge.bridge.config import CC_ACTIONS, CCMap, ModeConfig
from musebridge.bridge.midiclock import GRIDS, ClockConfig
from musebridge.bridge.scheduler import SchedulerConfig
from musebridge.engine.server.protocol import MODES

from tests.bridge_fakes import Rig, cc, off, on, unreleased_note_ons

MAX_NOTE_S = 1.0
PLAYER_CHANNEL = 0  # tests/bridge_fakes.py plays on channel 1; the fake engine on 6
TICK_S = 0.005  # Rig.run's clock step: a note-off is sent at the first pump at or after its due time

PITCHES = st.integers(min_value=55, max_value=60)  # few pitches: repeated and overlapping keys
CCS = CCMap()  # the bridge's default CC numbers (modes, trigger, stop, temperature)
PANICS = {("cc", 123, 0), ("cc", 123, 127), ("cc", CCS.stop, 127), ("transport", "stop"),  # silence at once
          ("engine_stopping",)}
ACTIONS = st.one_of(
    st.tuples(st.just("on"), PITCHES, st.integers(min_value=1, max_value=127)),
    st.tuples(st.just("off"), PITCHES),
    # the mapped CCs, pedal 64, all sound off 120, all notes off 123
    st.tuples(st.just("cc"), st.sampled_from(sorted({64, 120, 123, *(getattr(CCS, a) for a in CC_ACTIONS)})),
              st.sampled_from([0, 127])),
    st.tuples(st.just("transport"), st.sampled_from(["start", "stop", "continue"])),
    st.tuples(st.just("clock"), st.integers(min_value=1, max_value=24)),
    st.tuples(st.just("run"), st.floats(min_value=0.0, max_value=1.5)),
    st.tuples(st.just("songpos"), st.integers(min_value=0, max_value=64)),
    st.tuples(st.just("engine"), st.booleans()),
    st.tuples(st.just("engine_stopping")),  # the engine watcher: the server said it is stopping
    st.tuples(st.just("mode"), st.sampled_from(MODES)),  # `set mode` through the control protocol
)


def _apply(rig: Rig, action: tuple) -> None:
    kind = action[0]
    if kind == "on":
        rig.play(on(action[1], velocity=action[2]))
    elif kind == "off":
        rig.play(off(action[1]))
    elif kind == "cc":
        rig.play(cc(action[1], action[2]))
    elif kind == "transport":
        rig.play(mido.Message(action[1]))
    elif kind == "clock":  # ticks at 120 bpm (24 per beat, about 21 ms apart)
        for _ in range(action[1]):
            rig.play(mido.Message("clock"))
            rig.run(0.5 / 24)
    elif kind == "songpos":
        rig.play(mido.Message("songpos", pos=action[1]))
    elif kind == "run":
        rig.run(action[1])
    elif kind == "engine":
        rig.link.alive = action[1]
    elif kind == "engine_stopping":
        rig.bridge.engine_lost("the engine server is stopping")
        rig.bridge.pump()
    else:
        rig.bridge.engine_params({"mode": action[1]})
        rig.bridge.pump()


def _longest_engine_note(heard) -> float:
    """The longest time (s) a note-on on the out port sounded before its note-off (player's channel left out)."""
    started: dict[tuple[int, int], float] = {}
    longest = 0.0
    for t, msg in heard:
        if getattr(msg, "channel", -1) == PLAYER_CHANNEL:
            continue
        key = (getattr(msg, "channel", -1), getattr(msg, "note", -1))
        if msg.type == "note_on" and msg.velocity > 0:
            started.setdefault(key, t)
        elif msg.type in ("note_on", "note_off") and key in started:
            longest = max(longest, t - started.pop(key))
    return longest


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mode=st.sampled_from(MODES), thru=st.booleans(), grid=st.sampled_from([None, *GRIDS]),
       actions=st.lists(ACTIONS, min_size=5, max_size=40))
# a clock jump while generate plays: a note-off mapped at the tempo after the jump still follows its note-on
@example(mode="generate", thru=False, grid=None,
         actions=[("clock", 5), ("run", 0.25), ("transport", "start"), ("clock", 1), ("clock", 24)])
def test_random_input_never_leaves_a_note_hanging(mode, thru, grid, actions):
    with tempfile.TemporaryDirectory() as tmp:
        take = Path(tmp) / "take.mid"
        rig = Rig(mode, thru=thru, modes=ModeConfig(pause_s=0.2, answer_s=0.5), clock=ClockConfig(quantize=grid),
                  scheduler=SchedulerConfig(max_note_s=MAX_NOTE_S), record=str(take))
        _play(rig, actions)
        recorded = [m for track in mido.MidiFile(take).tracks for m in track]
    heard = [m for _, m in rig.heard]
    assert not unreleased_note_ons(heard), f"left sounding after stop: {unreleased_note_ons(heard)}"
    assert _longest_engine_note(rig.heard) <= MAX_NOTE_S + TICK_S + 1e-9
    assert not unreleased_note_ons(recorded), f"the recording leaves {unreleased_note_ons(recorded)} sounding"


def _play(rig: Rig, actions: list) -> None:
    """Apply the actions, checking that nothing sounds right after a panic, that in respond mode the player
    cutting in ends the answer at once, that in harmonize mode no voice outlives its player's key, and that no
    note-off is planned before its own note-on; then stop the bridge."""
    _check_note_off_times(rig.bridge.scheduler)
    for action in actions:
        echoes = rig.bridge.echo.suppressed  # a key struck twice without a release looks like a thru echo
        respond = rig.bridge.mode.name == "respond" and rig.bridge.engine_ok
        _apply(rig, action)
        respond = respond and rig.bridge.echo.suppressed == echoes
        heard = [m for _, m in rig.heard]
        if action in PANICS:
            assert not unreleased_note_ons(heard), f"sounding after {action}: {unreleased_note_ons(heard)}"
        if respond and action[0] == "on" and rig.bridge.mode.name == "respond":
            answer = {k for k in unreleased_note_ons(heard) if k[0] != PLAYER_CHANNEL}
            assert not answer, f"the answer still sounds after the player cut in: {answer}"
        if rig.bridge.mode.name == "harmonize":
            voices = rig.bridge.output.voices()
            orphans = {k for k in unreleased_note_ons(heard) if k[0] != PLAYER_CHANNEL} - voices
            assert not orphans, f"voices sounding for no held key: {orphans}"
    rig.bridge.stop()


@settings(max_examples=150, deadline=None)
@given(notes=st.lists(st.tuples(PITCHES, st.floats(min_value=0.02, max_value=0.3),
                                st.floats(min_value=0.0, max_value=0.8)), min_size=2, max_size=12))
def test_respond_the_player_cutting_in_ends_the_answer_at_once(notes):
    """Phrases with pauses (note, its length, the gap after it, seconds): whenever the player starts a note while
    the engine answers, the answer's notes end before anything else happens."""
    rig = Rig("respond", modes=ModeConfig(pause_s=0.2, answer_s=0.6))
    for pitch, length, gap in notes:
        answering = rig.bridge.mode.state == "answering"
        rig.play(on(pitch))
        if answering:
            answer = {k for k in unreleased_note_ons(m for _, m in rig.heard) if k[0] != PLAYER_CHANNEL}
            assert not answer, f"the answer still sounds after the player cut in: {answer}"
        rig.run(length)
        rig.play(off(pitch))
        rig.run(gap)
    rig.bridge.stop()
    assert not unreleased_note_ons(m for _, m in rig.heard)


def _check_note_off_times(scheduler) -> None:
    """Wrap scheduler.schedule: a note-off carrying a note id is never due before that note's note-on."""
    schedule, due_on = scheduler.schedule, {}

    def checked(due, msg, source="engine"):
        note_id = schedule(due, msg, source)
        if note_id is not None and msg.type == "note_on" and msg.velocity:
            due_on[note_id] = due
        elif note_id is not None:
            assert due >= due_on.get(note_id, due) - 1e-9, f"{msg} planned before its note-on"
        return note_id

    scheduler.schedule = checked
