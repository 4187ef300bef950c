"""Sessions: constraints hold on everything generated, rollback is a cache truncation that leaves exactly the
tokens a fresh session would have, window slides keep memory bounded, seeds reproduce."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_fixtures import export_small
from musebridge.engine.errors import EngineError
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.engine.inference.sampler import SamplingConfig, scale_pitch_classes
from musebridge.engine.sessions.session import Engine
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.sessions.timeline import PLAYER_BODY_TOKENS, State, encode_player
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENTS

SCALE = scale_pitch_classes("G", "major")


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(Model.load(export_small(tmp_path_factory.mktemp("se"))[1], RuntimeOptions(provider="cpu")))


def config(seed=1, **kw):
    base = dict(style="bach", instruments=(0, 4, 5), player_instrument=0,
                sampling=SamplingConfig(seed=seed, temperature=1.5))
    return SessionConfig(**{**base, **kw})


class Counting:
    """Counts the tokens a cache runs through the model."""

    def __init__(self, cache):
        self.cache, self.tokens, self.max_length = cache, 0, 0
        self._forward = cache.forward
        cache.forward = self

    def __call__(self, tokens):
        self.tokens += len(tokens)
        out = self._forward(tokens)
        self.max_length = max(self.max_length, self.cache.length)
        return out


def test_generated_notes_obey_every_constraint(engine):
    s = engine.new_session(config(scale=SCALE, pitch_ranges=((5, 55, 79),), max_polyphony=3))
    generated, events = [], []
    for _ in range(1500):  # past the window: slides happen on the way
        token, _, out = s.step()
        generated.append(token)
        events += out
    assert s.dropped > 0
    ons = [divmod(V.token_kind(t)[1], 128) for t in generated if V.token_kind(t)[0] == "note_on"]
    assert len(ons) > 20
    for inst, pitch in ons:
        assert inst in (4, 5) and pitch % 12 in SCALE
        low, high = (55, 79) if inst == 5 else (INSTRUMENTS[inst].low, INSTRUMENTS[inst].high)
        assert low <= pitch <= high
    sounding, worst = set(), 0
    for _, msg in events:
        assert msg.channel in (INSTRUMENTS[4].channel, INSTRUMENTS[5].channel)
        if msg.type == "note_on" and msg.velocity:
            assert (msg.channel, msg.note) not in sounding, "a sounding key is not struck again"
            sounding.add((msg.channel, msg.note))
        elif msg.type in ("note_off", "note_on"):
            sounding.discard((msg.channel, msg.note))
        worst = max(worst, len(sounding))
    assert worst <= 3


def test_same_seed_same_session(engine):
    a, b = engine.new_session(config(seed=4)), engine.new_session(config(seed=4))
    assert a.generate(n_tokens=200) == b.generate(n_tokens=200) and a.tokens == b.tokens
    c = engine.new_session(config(seed=5))
    c.generate(n_tokens=200)
    assert c.tokens != a.tokens


def test_rollback_is_truncation_and_matches_a_fresh_session(engine):
    a = engine.new_session(config(seed=2))
    a.plan(until_time=3.0)
    assert a.speculative > 0
    steps = a.timeline.entries.steps
    keep = sum(1 for s in steps if s <= 100)  # tokens planned at or before t = 1.0 s (prefix included)
    planned = len(a.tokens)
    counter = Counting(a.cache)
    result = a.insert(1.0, mido.Message("note_on", note=64, velocity=80))
    inserted = len(a.tokens) - keep
    assert result.rolled_back == planned - keep and result.time == 1.0
    assert counter.tokens == inserted  # only the player's tokens ran: the committed past was not recomputed
    assert a.cache.length == len(a.tokens) and a.speculative == 0

    b = engine.new_session(config(seed=2))
    b.generate(n_tokens=keep - len(b.tokens))
    b.insert(1.0, mido.Message("note_on", note=64, velocity=80))
    assert a.tokens == b.tokens
    assert np.abs(a._next_logits() - b._next_logits()).max() < 1e-4
    assert V.note_on_token(0, 64) == a.tokens[-1]


def test_insert_earlier_than_committed_time_is_placed_at_it(engine):
    s = engine.new_session(config(seed=3))
    s.plan(until_time=2.0)
    s.commit(until_time=1.5)
    committed = s.committed_time
    r = s.insert(0.2, mido.Message("note_on", note=60, velocity=64))
    assert r.time == pytest.approx(committed)
    assert s.insert(0.3, mido.Message("note_off", note=61)).rolled_back == 0  # not held: no tokens, no rollback


def test_window_slides_keep_memory_bounded(engine):
    s = engine.new_session(config(seed=6, slide_tokens=40))
    counter = Counting(s.cache)
    prefix = s.config.prefix()
    for i in range(12):
        s.generate(n_tokens=100)
        s.insert(s.time + 0.05, mido.Message("note_on", note=60 + i % 5, velocity=70))
        assert s.tokens[: len(prefix)] == prefix
        assert len(s.tokens) == s.cache.length <= s.cache.capacity
    assert counter.max_length <= s.cache.capacity and s.dropped >= 1000
    assert s.dropped % 40 == 0


def test_best_of_n_keeps_one_candidate(engine):
    s = engine.new_session(config(seed=8))
    start = len(s.tokens)
    s.generate(n_tokens=16, best_of=3)
    assert len(s.tokens) == start + 16 == s.cache.length + s.pending and s.pending <= 1
    t = engine.new_session(config(seed=8))
    t.generate(n_tokens=16, best_of=3)
    assert t.tokens == s.tokens


def test_best_of_runs_in_rounds_that_never_cross_a_window_slide(engine):
    """Best-of runs its candidates in rounds that never cross a window slide: a candidate that slid the window
    would commit its own tokens, and could then not be taken back ("cannot roll back into the committed past")."""
    s = engine.new_session(config(seed=4, context=48))
    before = len(s.tokens) + s.dropped
    s.generate(n_tokens=150, best_of=2)
    assert len(s.tokens) + s.dropped - before == 150 and s.dropped > 0
    assert len(s.tokens) <= s.cache.capacity
    t = engine.new_session(config(seed=4, context=48))
    t.generate(n_tokens=150, best_of=2)
    assert t.tokens == s.tokens, "reproducible with the same seed"


def test_session_errors(engine):
    s = engine.new_session(config(player_instrument=None))
    with pytest.raises(EngineError, match="player_instrument"):
        s.insert(0.0, mido.Message("note_on", note=60, velocity=60))
    with pytest.raises(EngineError):
        s.generate()


def test_reconfigure_new_instruments_keeps_the_timeline_and_bounds(engine):
    s = engine.new_session(config(seed=9))
    s.generate(n_tokens=300)
    time_before, total = s.time, len(s.tokens) + s.dropped
    s.reconfigure(config(seed=9, instruments=(0, 7), style="folk"))
    assert s.tokens[: len(s.config.prefix())] == s.config.prefix() and s.time == time_before
    assert len(s.tokens) + s.dropped >= total - 10
    events = s.generate(n_tokens=400)
    assert s.pending <= 1 and len(s.tokens) == s.cache.length + s.pending <= s.cache.capacity
    ons = [m for _, m in events if m.type == "note_on" and m.velocity]
    assert ons and all(m.channel == INSTRUMENTS[7].channel for m in ons)  # old notes may still end


def test_a_new_prefix_is_read_lazily_and_a_slide_waits_for_it(engine):
    """After a style change the window waits to be read again (the server does it in chunks between requests);
    a player event that needs a window slide first reads it, so nothing is dropped from an empty cache."""
    s = engine.new_session(config(seed=4))
    s.generate(n_tokens=400)
    while len(s.tokens) < s.cache.capacity:  # a window with no room left: the next event needs a slide
        s.generate(n_tokens=1)
    s.reconfigure(config(seed=4, style="folk"))
    assert s.cache.length == 0 and s.pending == len(s.tokens)
    assert s.precompute(budget=16) and s.cache.length == 16  # one chunk
    end = s.time
    for i in range(40):  # more than the window holds: slides
        s.insert(end + 0.1 * (i + 1), mido.Message("note_on" if i % 2 == 0 else "note_off", note=60, velocity=70))
    assert s.pending <= 1 and len(s.tokens) <= s.cache.capacity and s.dropped > 0
    assert s.tokens[: len(s.config.prefix())] == s.config.prefix()
    assert s.generate(n_tokens=10)


def test_state_copies_are_independent():
    a = State()
    for token in [V.time_token(5), V.velocity_token(10), V.note_on_token(4, 40)]:
        a.apply(token, player=False)
    a.apply(V.note_on_token(0, 60), player=True)
    b = a.copy()
    b.apply(V.note_off_token(4, 40), player=False)
    b.apply(V.note_off_token(0, 60), player=True)
    b.apply(V.time_token(7), player=False)
    assert a.decoder.held == {(4, 40): 1} and a.player_held == {60: 1} and a.step == 5
    assert b.decoder.held == {} and b.player_held == {} and b.step == 12


def test_now_gives_notes_at_the_players_time_one_step_each(engine):
    s = engine.new_session(config(seed=3, max_polyphony=2))
    for i, pitch in enumerate((60, 64, 67, 72, 65, 69)):
        s.insert(i * 0.5, mido.Message("note_on", note=pitch, velocity=80))
        before, t = len(s.tokens) + s.dropped, s.time
        events = s.generate(n_notes=2, now=True)
        made = s.tokens[len(s.tokens) - (len(s.tokens) + s.dropped - before):]
        kinds = [V.token_kind(tok)[0] for tok in made]
        assert s.time == t and {e.time for e in events} <= {t}, "no time passes"
        assert kinds.count("note_on") == 2 and set(kinds) <= {"note_on", "note_off"}
        # note-offs only for the engine's own earlier notes (the polyphony cap of 2 needs them)
        assert len(made) <= 2 + 2
    with pytest.raises(EngineError, match="until_time"):
        s.generate(until_time=9.0, now=True)


def test_ending_engine_notes_from_outside_leaves_nothing_for_now_to_release(engine):
    """A harmony voice ends with the player's note: fed back as an engine note-off at that time, it ends the
    note in the stream too, so the next `now` request is one model step per voice (no note-offs first)."""
    s = engine.new_session(config(seed=5, max_polyphony=2))
    for i, pitch in enumerate((60, 64, 67, 72, 65, 69)):
        s.insert(i * 0.5, mido.Message("note_on", note=pitch, velocity=80))
        before = len(s.tokens) + s.dropped
        voices = [e.msg for e in s.generate(n_notes=2, now=True) if e.msg.type == "note_on"]
        made = s.tokens[len(s.tokens) - (len(s.tokens) + s.dropped - before):]
        assert [V.token_kind(tok)[0] for tok in made] == ["note_on", "note_on"], "no note-off to sample first"
        s.insert(i * 0.5 + 0.25, mido.Message("note_off", note=pitch))
        for v in voices:
            s.insert(i * 0.5 + 0.25, mido.Message("note_off", channel=v.channel, note=v.note), engine=True)
        assert not s._live.decoder.held and s.time == i * 0.5 + 0.25
    n = len(s.tokens)
    s.insert(3.5, mido.Message("note_off", channel=5, note=40), engine=True)  # not sounding: nothing
    s.insert(3.5, mido.Message("note_on", channel=5, note=40, velocity=0), engine=True)
    assert len(s.tokens) == n


def test_a_sampled_token_runs_through_the_model_later_with_the_same_result(engine):
    """Deferring a sampled token's forward pass (off the reply's path) changes no logits."""
    lazy, eager = engine.new_session(config(seed=12)), engine.new_session(config(seed=12))
    lazy.generate(n_tokens=50)
    assert lazy.pending == 1
    counter = Counting(lazy.cache)
    lazy.precompute()
    assert lazy.pending == 0 and counter.tokens == 1
    eager.timeline.append(lazy.tokens[len(eager.tokens):], player=False)  # the same tokens, run at once
    assert np.abs(lazy._next_logits() - eager._next_logits()).max() < 1e-4
    lazy.generate(n_tokens=1)
    before = len(lazy.tokens)
    lazy.insert(lazy.time, mido.Message("note_on", note=62, velocity=70))  # pending token and player's together
    played = len(lazy.tokens) - before  # the note-on, after a velocity token unless its bin is the current one
    assert lazy.pending == 0 and played in (1, 2) and counter.tokens == 1 + 1 + played


def test_now_with_constraints_that_allow_no_note_adds_nothing(engine):
    # strings limited to one pitch that is not in the scale: no note-on can ever be sampled
    s = engine.new_session(config(instruments=(0, 5), scale=scale_pitch_classes("C", "major"),
                                  pitch_ranges=((5, 61, 61),)))
    before = list(s.tokens)
    assert s.generate(n_notes=1, now=True) == [] and s.tokens == before


def test_now_stops_when_every_allowed_key_already_sounds(engine):
    """A chord asked for `now` in a range of three keys has at most three notes (none struck twice), and asking
    for more is not an error (the random test model struck one key four times in one `now` call before)."""
    s = engine.new_session(config(instruments=(0, 5), pitch_ranges=((5, 60, 62),)))
    chord = s.generate(n_notes=10, now=True, max_tokens=40)
    keys = [(m.channel, m.note) for _, m in chord if m.type == "note_on" and m.velocity]
    assert 1 <= len(keys) <= 3 and len(set(keys)) == len(keys)


def test_an_anticipated_time_shift_takes_the_players_note_off_the_critical_path(engine):
    """anticipate(t) runs the time shift to t through the model before the player plays (precompute); a note at
    that grid step then runs only its own tokens, and the stream is exactly what it would have been."""
    a, b = engine.new_session(config(seed=9)), engine.new_session(config(seed=9))
    for s in (a, b):
        s.insert(0.5, mido.Message("note_on", note=60, velocity=80))
        s.generate(n_notes=2, now=True)
    end = a.time
    assert a.anticipate(2.3) == 2 and a.time == end  # TIME 1 s, TIME 0.8 s: tentative, not yet the timeline's
    assert a.anticipate(2.3) == 2 and a.anticipate(0.2) == 0  # nothing to add before the end of the timeline
    a.anticipate(2.304)  # the same 10 ms grid step: kept as it is
    a.precompute()
    counter = Counting(a.cache)
    a.insert(2.3, mido.Message("note_on", note=64, velocity=80))
    b.insert(2.3, mido.Message("note_on", note=64, velocity=80))
    assert counter.tokens == 1 and a.tokens == b.tokens  # the note alone (same velocity bin: no VEL token)
    assert np.abs(a._next_logits() - b._next_logits()).max() < 1e-4
    a.anticipate(2.5)
    a.precompute()
    counter.tokens = 0
    for s in (a, b):  # a note elsewhere: the shift is taken back, and nothing runs again for it
        s.insert(2.61, mido.Message("note_on", note=62, velocity=80))
    assert counter.tokens == 2 and a.tokens == b.tokens  # TIME, NOTE: the last kept token is not run again
    assert np.abs(a._next_logits() - b._next_logits()).max() < 1e-4


@given(messages=st.lists(st.tuples(st.sampled_from(["note_on", "note_off", "pedal"]), st.integers(0, 127),
                                   st.integers(0, 30)), max_size=30))
def test_a_player_event_adds_at_most_player_body_tokens_after_its_time_shift(messages):
    """anticipate() leaves room for this many tokens after the shift (PLAYER_BODY_TOKENS)."""
    state, step = State(), 0
    for kind, value, dt in messages:
        step += dt
        msg = (mido.Message("control_change", control=64, value=value) if kind == "pedal"
               else mido.Message(kind, note=value, velocity=value if kind == "note_on" else 0))
        tokens = encode_player(state, step, msg, instrument=0)
        body = [t for t in tokens if V.token_kind(t)[0] != "time"]
        assert len(body) <= PLAYER_BODY_TOKENS
        for t in tokens:
            state.apply(t, player=True)


def test_anticipation_that_would_slide_the_window_adds_nothing(engine):
    """A slide cannot be taken back: near a full window, anticipate() adds nothing, so a tentative shift never
    slides the window (the stream stays the same as a twin's), and the player's note never slides it after the kept
    shift was computed over the longer window (the property test below checks both at random)."""
    s = engine.new_session(config(seed=3, slide_tokens=16, context=64))
    while len(s.tokens) < s.cache.capacity - 4:
        s.generate(n_tokens=1)
    tokens, dropped = list(s.tokens), s.dropped
    # 3 TIME tokens + the note's velocity and note (PLAYER_BODY_TOKENS) would need 65 of 64 places
    assert s.anticipate(s.time + 2.5) == 0 and s.tokens == tokens and s.dropped == dropped
    assert s.anticipate(s.time + 0.5) == 1  # one TIME token: the note fits after it


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["anticipate", "on", "off", "voices", "engine_off", "commit",
                                                "plan"]),
                              st.integers(0, 150)), max_size=40))
def test_anticipation_never_changes_the_token_stream(engine, ops):
    """Whatever the player does after anticipate() (a note at that step, another step, nothing), and whatever
    the engine does next, the tokens are those of a session that never anticipated (window slides included).
    The twin runs its pending token where `a` does (as the server does between requests either way): a token run
    before a slide keeps what it saw of the dropped tokens (its deeper layers' keys), one run after it does not,
    and that difference would otherwise show in the logits."""
    a = engine.new_session(config(seed=3, slide_tokens=16, context=64))
    b = engine.new_session(config(seed=3, slide_tokens=16, context=64))
    for op, dt in ops:
        t = b.time + dt / 200  # times a few grid steps apart: anticipations and events often share a step
        if op == "anticipate":
            a.anticipate(t)
            a.precompute()
            b.precompute()
            continue
        for s in (a, b):
            if op in ("on", "off"):
                s.insert(t, mido.Message("note_on", note=60 + dt % 5, velocity=1 + dt % 127 if op == "on" else 0))
            elif op == "voices":
                s.generate(n_notes=1 + dt % 2, now=True)
            elif op == "engine_off":
                for cls, pitch in list(s._live.decoder.held)[:1]:
                    s.insert(t, mido.Message("note_off", channel=s._live.decoder.channels[cls], note=pitch),
                             engine=True)
            elif op == "commit":
                s.commit(t)
            else:
                s.plan(until_time=t + 0.1)
    a.timeline.drop_tentative()
    assert a.tokens == b.tokens and a.dropped == b.dropped and a.time == b.time
    assert np.abs(a._next_logits() - b._next_logits()).max() < 1e-4


def test_a_slide_over_half_the_window_is_refused_and_the_largest_allowed_works(engine):
    with pytest.raises(EngineError, match=r"slide_tokens 40 is more than half .* use at most"):
        engine.new_session(config(seed=2, slide_tokens=40, context=64))
    room = 64 - len(config().prefix())
    s = engine.new_session(config(seed=2, slide_tokens=room // 2, context=64))
    prompt = [(0.05 * i, mido.Message("note_on" if i % 2 == 0 else "note_off", note=60 + (i // 2) % 12,
                                      velocity=70)) for i in range(120)]
    s.prime(prompt)  # a prompt longer than the window: it slides as it goes
    s.generate(n_tokens=90, best_of=3)  # best-of rounds beside a full window
    assert s.dropped > 0 and len(s.tokens) <= 64
