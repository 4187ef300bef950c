"""Following the player (engine/sessions/follow.py): each estimator and rule on hand-made input with a known
answer, and the rules at work in real sessions of the bundled model."""

from __future__ import annotations

import math
import subprocess
import sys

import mido
import numpy as np
import pytest
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.follow import Follower
from musebridge.engine.sessions.follow_config import FOLLOW_PARTS, FollowConfig
from musebridge.engine.sessions.hearing import percentile
from musebridge.engine.sessions.session import Engine
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.sessions.timeline import State
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES
from musebridge.engine.tokens.midifile import notes_from_events
from musebridge.engine.tokens.tonality import key_name, parse_key

PIANO, BASS, STRINGS, ORGAN = (INSTRUMENT_NAMES.index(n) for n in ("piano", "bass", "strings", "organ"))
E_MINOR_PHRASE = [64, 66, 67, 71, 69, 67, 66, 64, 59, 64, 67, 71, 72, 71, 69, 66, 63, 64]


def played(pitches, player=True, step=25, cls=PIANO, velocity_bin=20) -> State:
    """A state after `pitches` played one after another, each held for `step` grid steps."""
    state = State()
    state.apply(V.velocity_token(velocity_bin), player)
    for pitch in pitches:
        state.apply(V.note_on_token(cls, pitch), player)
        state.apply(V.time_tokens(step)[0], player)
        state.apply(V.note_off_token(cls, pitch), player)
    return state


def only(*parts: str) -> FollowConfig:
    """Following with only these parts (FOLLOW_PARTS) on."""
    return FollowConfig(key="auto" if "key" in parts else "off",
                        **{part: part in parts for part in FOLLOW_PARTS if part != "key"})


@pytest.fixture(scope="module")
def engine():
    return Engine.load(None)


def test_a_phrase_in_e_minor_is_heard_as_e_minor():
    follower = Follower(FollowConfig(), (STRINGS,))
    assert key_name(follower.heard(played(E_MINOR_PHRASE)).key) == "E minor"


def test_the_key_does_not_flicker_on_one_foreign_note():
    follower = Follower(FollowConfig(), (STRINGS,))
    c_major = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 65, 62, 60, 67, 64, 60]
    state = played(c_major)
    assert key_name(follower.heard(state).key) == "C major"
    state.apply(V.note_on_token(PIANO, 66), True)  # an F#
    assert key_name(follower.heard(state).key) == "C major"


def test_a_long_answer_still_follows_the_player_after_its_own_notes_fill_the_timeline():
    """The player's E-minor phrase around E4, then more engine notes than the timeline keeps (C major, two
    octaves up): the engine still hears the player's key and register, not its own."""
    state = played(E_MINOR_PHRASE)
    follower = Follower(FollowConfig(), (STRINGS,))
    follower.heard(state)
    for pitch in [84, 86, 88, 89, 91, 93, 95, 96] * 8:
        state.apply(V.note_on_token(STRINGS, pitch), False)
        state.apply(V.time_tokens(10)[0], False)
        state.apply(V.note_off_token(STRINGS, pitch), False)
    assert not any(o.player for o in state.recent)  # the phrase has left the timeline's memory
    heard = follower.heard(state)
    assert key_name(heard.key) == "E minor" and abs(heard.centre - np.mean(E_MINOR_PHRASE)) < 1


def test_out_of_key_note_ons_lose_weight_and_a_fixed_key_with_infinite_strength_masks_them():
    state = played(E_MINOR_PHRASE)
    bias = Follower(FollowConfig(register=False, polyphony=False), (STRINGS,)).bias(state)
    on = V.note_on_token(STRINGS, 0)
    assert bias[on + 64] - bias[on + 65] == pytest.approx(3.0)  # E in key, F not
    fixed = Follower(FollowConfig(key="C major", key_strength=math.inf), (STRINGS,)).bias(state)
    assert fixed[on + 61] == -np.inf and np.isfinite(fixed[on + 60])
    with pytest.raises(ValueError, match="unknown key"):
        FollowConfig(key="H major")
    assert parse_key("bb minor") == (10, "minor")


def test_the_engines_bass_is_kept_below_the_players_line():
    state = played([55, 57, 59, 60, 62, 64, 62, 60])  # the player's lowest notes around G3
    bias = Follower(FollowConfig(), (BASS, STRINGS)).bias(state)
    on = V.note_on_token(BASS, 0)
    assert bias[on + 43] > bias[on + 50] > bias[on + 60]  # G2 over D3 over C4


def test_velocities_are_drawn_to_the_players_level():
    bias = Follower(FollowConfig(), (STRINGS,)).bias(played(E_MINOR_PHRASE, velocity_bin=8))
    vel = V.velocity_token(0)
    row = bias[vel : vel + V.VELOCITY_BINS]
    assert row[7] == row[9] == row[np.isfinite(row)].max()  # around 8 (the current bin itself is redundant)
    assert row[7] > row[3] and row[9] > row[13]


def test_engine_notes_drifted_above_the_players_centre_are_pulled_back_down():
    """The player plays around C4 (60); the engine's last notes sit an octave above: its lower notes gain
    weight against its higher ones, more than with no drift, and the pull goes the other way after a drift
    down."""
    def drifted(engine_pitches):
        state = played([57, 60, 62, 60, 59, 62, 64, 60])
        for pitch in engine_pitches:
            state.apply(V.note_on_token(STRINGS, pitch), False)
            state.apply(V.time_tokens(10)[0], False)
            state.apply(V.note_off_token(STRINGS, pitch), False)
        return state

    follower = Follower(FollowConfig(key="off", polyphony=False, onsets=False, density=False), (STRINGS,))
    on = V.note_on_token(STRINGS, 0)
    tilt = {}
    for name, pitches in (("none", [59, 60, 61, 60]), ("up", [72, 74, 72, 71, 74]), ("down", [48, 47, 48, 50])):
        bias = follower.bias(drifted(pitches))
        tilt[name] = bias[on + 55] - bias[on + 65]  # a note below the centre against one above it
    assert tilt["up"] > tilt["none"] + 0.5 and tilt["down"] < tilt["none"] - 0.5


def test_the_engine_presses_the_pedal_about_as_often_as_the_player():
    """A player who never pedals: an engine press loses weight, more after its own recent presses; a player
    who pedals about once a second: a first engine press does not."""
    def state_with(player_pedals: bool, engine_presses: int) -> State:
        state = State()
        state.apply(V.velocity_token(20), True)
        for i, pitch in enumerate([60, 64, 67, 65, 62, 60, 64, 67, 72, 71]):
            if player_pedals:
                state.apply(V.pedal_token(PIANO, True), True)
            state.apply(V.note_on_token(PIANO, pitch), True)
            if i < engine_presses:
                state.apply(V.pedal_token(STRINGS, True), False)
            state.apply(V.time_tokens(50)[0], True)
            state.apply(V.note_off_token(PIANO, pitch), True)
            if player_pedals:
                state.apply(V.pedal_token(PIANO, False), True)
            if i < engine_presses:
                state.apply(V.pedal_token(STRINGS, False), False)
        return state

    follower = Follower(FollowConfig(), (STRINGS,))
    press = V.pedal_token(STRINGS, True)
    none_first = follower.bias(state_with(False, 0))[press]
    none_more = Follower(FollowConfig(), (STRINGS,)).bias(state_with(False, 10))[press]
    pedalling = Follower(FollowConfig(), (STRINGS,)).bias(state_with(True, 0))[press]
    assert none_first < -1.0 and none_more < none_first
    assert pedalling > -0.5
    assert Follower(FollowConfig(pedal=False), (STRINGS,)).bias(state_with(False, 10))[press] == 0.0


def test_an_aged_note_gets_its_note_off_and_time_cannot_carry_it_past_its_limit():
    follower = Follower(FollowConfig(lifetimes=(("strings", 2.0),)), (STRINGS,))
    state = State()
    state.apply(V.note_on_token(STRINGS, 60), False)
    for token in V.time_tokens(150):  # 1.5 s old: 0.5 s to go
        state.apply(token, False)
    bias = follower.bias(state)
    time0 = V.OFFSETS["time"]
    assert bias[time0 + 49] == 0 and bias[time0 + 50] == -np.inf  # a shift of 0.5 s at most
    assert bias[V.note_off_token(STRINGS, 60)] > 1.0
    state.apply(V.time_tokens(50)[0], False)  # at the limit: only a note-off may follow
    bias = follower.bias(state)
    allowed = np.flatnonzero(np.isfinite(bias))
    assert V.note_off_token(STRINGS, 60) in allowed
    assert all(V.token_kind(t)[0] == "note_off" for t in allowed)


def test_a_continuation_keeps_its_prompts_pulse_counted_from_its_own_last_onset():
    """A prompt struck every 25 steps, then the engine's own note 7 steps after the prompt's beat: off the pulse
    (counted from that note) its note-ons lose prompt_pulse_strength and the shift that lands on the pulse gains
    it; on the pulse, and while a chord may still grow, nothing is added; with no prompt (the engine follows
    itself) nothing is."""
    state = played([60, 62, 64, 65, 67, 65, 64, 62], player=False)
    follower = Follower(only("onsets"), (PIANO,))
    follower.prime(state)
    state.apply(V.time_tokens(7)[0], False)
    state.apply(V.note_on_token(PIANO, 60), False)
    on, time0 = V.note_on_token(PIANO, 64), V.OFFSETS["time"]
    assert follower.bias(state)[on] == 0  # 0 steps after the engine's onset: a chord may grow
    state.apply(V.time_tokens(10)[0], False)
    off_pulse = follower.bias(state)
    strength = follower.config.prompt_pulse_strength
    assert off_pulse[on] == -strength and off_pulse[time0 + 15 - 1] == strength  # 15 more steps: on the pulse
    state.apply(V.time_tokens(15)[0], False)
    assert follower.bias(state)[on] == 0
    unprimed = Follower(follower.config, (PIANO,))
    assert unprimed.bias(state)[on] == 0 and unprimed.bias(state)[time0 + 9] == 0


def test_between_a_players_notes_the_engine_keeps_to_the_players_pulse():
    """A player striking every 25 steps, then silent: 10 steps past a beat the engine's note-ons lose
    onsets_strength (not a continuation's prompt_pulse_strength) and the shift to the next beat gains it (not to
    a half-beat); on the beat nothing is added."""
    state = played([60, 62, 64, 65, 67, 65, 64, 62])  # 25 steps each, the last note released at step 200
    follower = Follower(only("onsets"), (STRINGS,))
    on, time0 = V.note_on_token(STRINGS, 64), V.OFFSETS["time"]
    state.apply(V.time_tokens(10)[0], True)  # the player's last onset was at step 175: 35 steps ago
    off_pulse = follower.bias(state)
    strength = follower.config.onsets_strength
    assert off_pulse[on] == -strength and off_pulse[time0 + 15 - 1] == strength
    state.apply(V.time_tokens(15)[0], True)
    assert follower.bias(state)[on] == 0


def test_the_density_rule_follows_a_player_or_a_prompt_never_the_engine_itself():
    """Alone, with no prompt, the engine's reference is its own notes: a density term comparing its rate with
    its own last notes' fed back on itself (a drum part ran away to a hit every 10 ms), so none is added; the
    same notes primed as a prompt are followed."""
    def fast_then_slow() -> State:
        state = played([60, 62, 64, 65, 67, 65, 64, 62] * 3, player=False, step=5)  # 20 onsets a second
        state.apply(V.time_tokens(100)[0], False)
        return state

    config = only("density")
    time0 = V.OFFSETS["time"]
    alone = Follower(config, (PIANO,))
    assert alone.bias(fast_then_slow())[time0 + 9] == 0
    primed = Follower(config, (PIANO,))
    state = fast_then_slow()
    primed.prime(state)
    assert primed.bias(state)[time0 + 9] < -0.5  # slower than the prompt now: time shifts lose weight


def test_an_answer_that_has_just_begun_is_not_taken_for_a_slow_one():
    """A player at 4 onsets a second for 4 s, then an engine answer of 3 onsets in its first 0.9 s: its rate is
    counted since it began (3 a second), so time shifts lose little weight, not as if it had played 3 in 4 s."""
    state = played([60, 62, 64, 65, 67, 65, 64, 62] * 2)
    for pitch in (67, 69, 71):
        state.apply(V.note_on_token(STRINGS, pitch), False)
        state.apply(V.time_tokens(30)[0], False)
        state.apply(V.note_off_token(STRINGS, pitch), False)
    follower = Follower(only("density"), (STRINGS,))
    assert -1.0 < follower.bias(state)[V.OFFSETS["time"] + 9] < 0


def test_a_polyphony_cap_masks_note_ons_but_never_note_offs():
    state = played([60, 64, 67])
    for pitch in (48, 52, 55, 59, 62):  # the engine sounds five notes against a one-note line
        state.apply(V.note_on_token(STRINGS, pitch), False)
    state.apply(V.time_tokens(5)[0], False)
    bias = Follower(FollowConfig(), (STRINGS,)).bias(state)
    assert np.all(bias[V.note_on_token(STRINGS, 0) : V.note_on_token(STRINGS, 0) + 128] == -np.inf)
    assert np.isfinite(bias[V.note_off_token(STRINGS, 48)])


def test_note_ons_that_clash_with_a_held_player_note_lose_weight():
    state = played([60])
    state.apply(V.note_on_token(PIANO, 67), True)  # the player holds G
    bias = Follower(FollowConfig(key="off", register=False), (STRINGS,)).bias(state)
    on = V.note_on_token(STRINGS, 0)
    assert bias[on + 64] > bias[on + 66]  # E (a third below) over F# (a second)


def test_the_register_of_a_prompt_is_followed_and_the_engines_own_is_not():
    """The same notes around middle C: primed as a prompt, a bass note-on two octaves up loses weight against
    one below them; as the engine's own notes (from scratch), nothing is added to any note-on."""
    state = played([60, 64, 67, 72, 67, 64, 60, 55], player=False)
    on = V.note_on_token(BASS, 0)
    primed = Follower(only("register"), (PIANO, BASS))
    primed.prime(state)
    bias = primed.bias(state)
    assert bias[on + 84] < bias[on + 40]
    own = Follower(only("register"), (PIANO, BASS)).bias(state)
    assert not own[on : on + V.N_PITCHES].any() and not own[V.note_on_token(PIANO, 0) + 96]


def test_from_scratch_the_engine_keeps_its_first_key_until_the_player_plays():
    follower = Follower(FollowConfig(), (STRINGS,))
    c_major = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 65, 62, 60, 67, 64, 60]
    f_sharp_major = [66, 68, 70, 71, 73, 75, 77, 78, 73, 70, 71, 68, 66, 73, 70, 66]
    state = played(c_major, player=False)
    assert key_name(follower.heard(state).key) == "C major"
    for pitch in f_sharp_major * 2:  # the engine's own notes drift far away: its key stays
        state.apply(V.note_on_token(STRINGS, pitch), False)
        state.apply(V.time_tokens(25)[0], False)
        state.apply(V.note_off_token(STRINGS, pitch), False)
    assert key_name(follower.heard(state).key) == "C major"
    for pitch in f_sharp_major:  # the player's notes move it
        state.apply(V.note_on_token(PIANO, pitch), True)
        state.apply(V.time_tokens(25)[0], True)
        state.apply(V.note_off_token(PIANO, pitch), True)
    assert key_name(follower.heard(state).key) == "F# major"


def test_note_ons_that_clash_with_a_sounding_engine_note_lose_self_harmony_strength():
    state = played([60], player=False)
    state.apply(V.note_on_token(STRINGS, 67), False)  # the engine holds G
    config = only("harmony")
    bias = Follower(config, (STRINGS,)).bias(state)
    on = V.note_on_token(STRINGS, 0)
    assert bias[on + 64] - bias[on + 66] == pytest.approx(config.self_harmony_strength)  # E over F#
    assert bias[on + 64] == bias[on + 55]  # a third and an octave alike
    unguided = Follower(only(), (STRINGS,)).bias(state)
    assert unguided[on + 64] == unguided[on + 66]


def test_following_off_adds_nothing():
    assert Follower(FollowConfig(enabled=False), (STRINGS,)).bias(played(E_MINOR_PHRASE)) is None


def run_session(engine, config: SessionConfig, player=(), seconds=12.0):
    session = engine.new_session(config)
    for time_s, msg in player:
        session.insert(time_s, msg)
    return notes_from_events(session.generate(until_time=seconds) + session.finish())


def test_real_session_every_note_ends_within_its_instruments_limit(engine):
    notes = run_session(engine, SessionConfig(instruments=(STRINGS,), sampling=SamplingConfig(seed=3),
                                              follow=FollowConfig(lifetimes=(("strings", 1.5),))), seconds=15.0)
    assert notes and max(n.end - n.start for n in notes) <= 1.5 + 1e-9


def test_real_session_every_asked_instrument_plays(engine):
    for seed in (1, 2):
        config = SessionConfig(instruments=(STRINGS, ORGAN), sampling=SamplingConfig(seed=seed))
        notes = run_session(engine, config)
        assert {n.instrument for n in notes} == {STRINGS, ORGAN}


def test_real_session_a_played_line_keeps_the_engines_bass_below_it(engine):
    line = []
    for k, pitch in enumerate([60, 64, 67, 72, 67, 64, 62, 65, 69, 72, 69, 65, 60, 64, 67, 72]):
        line += [(k * 0.5, mido.Message("note_on", note=pitch, velocity=80)),
                 (k * 0.5 + 0.45, mido.Message("note_off", note=pitch))]
    config = SessionConfig(instruments=(BASS,), player_instrument=PIANO, sampling=SamplingConfig(seed=5))
    session = engine.new_session(config)
    bass = []
    for time_s, msg in line:
        bass += session.plan(until_time=time_s)
        session.insert(time_s, msg)
    bass = notes_from_events(bass + session.plan(until_time=10.0) + session.finish())
    assert bass and max(n.pitch for n in bass) < 60


def test_over_the_protocol_the_key_heard_is_reported_and_following_can_be_fixed_and_switched(engine):
    from musebridge.engine.server.protocol import ProtocolError, check_args
    from musebridge.engine.server.service import Service

    service = Service(engine)
    sid = service.handle("session.create", {"instruments": ["strings"], "player_instrument": "piano",
                                            "seed": 1})[0]["session"]
    phrase = []
    for k, pitch in enumerate(E_MINOR_PHRASE):
        phrase += [{"t": k * 0.3, "type": "note_on", "note": pitch, "velocity": 70},
                   {"t": k * 0.3 + 0.25, "type": "note_off", "note": pitch}]
    reply, _ = service.handle("generate", {"session": sid, "feed": phrase, "until": 7.0})
    assert reply["key"] == "E minor"
    service.handle("set", {"session": sid, "follow_key": "Bb major"})
    assert service.handle("generate", {"session": sid, "until": 8.0})[0]["key"] == "Bb major"
    service.handle("set", {"session": sid, "follow": False})
    assert service.sessions[sid].session.follower.bias(service.sessions[sid].session._live) is None
    service.handle("set", {"session": sid, "follow": True, "follow_off": ["key", "lifetime"]})
    follow = service.sessions[sid].session.follower.config
    assert follow.enabled and follow.key == "off" and not follow.lifetime and follow.register
    with pytest.raises(ProtocolError, match="unknown part of following 'tempo'"):
        service.handle("set", {"session": sid, "follow_off": ["tempo"]})
    with pytest.raises(ProtocolError, match="unknown key"):
        service.handle("set", {"session": sid, "follow_off": [], "follow_key": "H major"})
    with pytest.raises(ProtocolError, match="'follow'"):
        check_args("set", {"session": sid, "follow": "yes"})
    assert service.handle("session.list", {})[0]["sessions"][0]["key"] in ("E minor", "Bb major", "-")


def test_no_velocity_churn_and_no_zero_length_engine_notes():
    state = played([60, 64, 67])
    state.apply(V.velocity_token(12), False)
    bias = Follower(FollowConfig(), (STRINGS,)).bias(state)
    vel = V.velocity_token(0)
    assert np.all(bias[vel : vel + V.VELOCITY_BINS] == -np.inf)  # a velocity token never follows another
    state.apply(V.note_on_token(STRINGS, 55), False)
    bias = Follower(FollowConfig(), (STRINGS,)).bias(state)
    assert bias[V.note_off_token(STRINGS, 55)] == -np.inf  # not at the step it started
    assert bias[V.note_on_token(STRINGS, 55)] == -np.inf
    assert bias[vel + 12] == -np.inf and np.isfinite(bias[vel + 11])  # the current bin is not repeated


def test_the_heard_register_is_numpys_percentile_without_its_first_call_cost():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 24):
        values = np.sort(rng.integers(21, 109, n).astype(float))
        for q in (0, 10, 50, 90, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


FIRST_ANSWER = """
import sys, mido
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.session import Engine
from musebridge.engine.sessions.session_config import SessionConfig
session = Engine.load().new_session(SessionConfig(instruments=(6,), player_instrument=0,
                                                  sampling=SamplingConfig(seed=1)))
for i, pitch in enumerate([60, 62, 64, 65, 67, 65, 64, 62]):
    session.insert(i * 0.25, mido.Message("note_on", note=pitch, velocity=70))
    session.insert(i * 0.25 + 0.2, mido.Message("note_off", note=pitch))
before = set(sys.modules)
session.generate(n_notes=1, now=True, max_tokens=8)
session.generate(n_notes=4, max_tokens=64)
print(" ".join(sorted(set(sys.modules) - before)))
"""


def test_a_fresh_engines_first_answer_imports_nothing():
    # a module imported on the first answer (numpy.ma, by np.percentile: 12 ms) delays the note a player waits for
    done = subprocess.run([sys.executable, "-c", FIRST_ANSWER], capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.split() == []
