"""The generator: a request stops at its limits (tokens, notes, time), `now` adds notes without moving time, and
best-of keeps one of its candidates, never a token beyond what was asked."""

from __future__ import annotations

import pytest
from model_fixtures import export_small
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.generator import Generator, Limits
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.sessions.steps import finish
from musebridge.engine.sessions.timeline import Timeline
from musebridge.engine.tokens import vocab as V


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return Model.load(export_small(tmp_path_factory.mktemp("gen"))[1], RuntimeOptions(provider="cpu"))


def make(model, seed=3, temperature=1.2, **kw) -> Generator:
    config = SessionConfig(style="bach", instruments=(0, 5), player_instrument=0,
                           sampling=SamplingConfig(seed=seed, temperature=temperature), **kw)
    return Generator(Timeline(model, config.prefix(), config.context, config.slide_tokens), config)


def kinds(tokens):
    return [V.token_kind(t)[0] for t in tokens]


def test_limits_from_a_request():
    assert Limits.of(50, None, None, 4096, False) == Limits(50)
    assert Limits.of(None, 3, None, 200, False) == Limits(200, notes=3)
    assert Limits.of(9000, None, 2.004, 4096, True) == Limits(4096, until_step=200, now=True)
    with pytest.raises(AttributeError):
        Limits(5).tokens = 6  # frozen: a round's limits are a new value


def test_a_request_stops_at_its_token_limit(model):
    g = make(model)
    start = len(g.timeline.tokens)
    finish(g.generate_steps(Limits(37)))
    assert len(g.timeline.tokens) - start == 37


def test_a_request_stops_at_its_note_limit(model):
    g = make(model)
    start = len(g.timeline.tokens)
    finish(g.generate_steps(Limits(4096, notes=5)))
    made = kinds(g.timeline.tokens[start:])
    assert made.count("note_on") == 5 and made[-1] == "note_on"


def test_a_request_stops_once_the_timeline_reaches_its_step(model):
    g = make(model)
    events = finish(g.generate_steps(Limits(4096, until_step=150)))
    steps = g.timeline.entries.steps
    assert steps[-1] >= 150 > steps[-2]  # the last token crossed it
    assert all(t <= steps[-1] * V.GRID_S + 1e-9 for t, _ in events)


def test_now_adds_notes_without_moving_time(model):
    g = make(model)
    finish(g.generate_steps(Limits(30)))
    step, start = g.timeline.live.step, len(g.timeline.tokens)
    finish(g.generate_steps(Limits(4096, notes=2, now=True)))
    made = kinds(g.timeline.tokens[start:])
    assert g.timeline.live.step == step and set(made) <= {"note_on", "note_off"} and made.count("note_on") <= 2


def test_each_step_yields_its_events_and_the_result_gathers_them(model):
    g = make(model)
    steps, seen = g.generate_steps(Limits(60)), []
    result = finish(steps, seen.extend)
    assert result == seen and result


def test_best_of_with_greedy_sampling_is_the_single_greedy_continuation(model):
    one, three = make(model, temperature=0), make(model, temperature=0)
    a = finish(one.generate_steps(Limits(60)))
    b = finish(three.generate_steps(Limits(60), best_of=3))
    assert one.timeline.tokens == three.timeline.tokens and a == b
    assert three.timeline.pending == 0  # the chosen candidate was read through the model again


def test_best_of_rounds_never_exceed_the_request(model):
    g = make(model, context=64, slide_tokens=16)
    start = len(g.timeline.tokens) + g.timeline.dropped
    finish(g.generate_steps(Limits(150), best_of=2))  # more than the window: several rounds and slides
    assert len(g.timeline.tokens) + g.timeline.dropped - start == 150
    assert g.timeline.dropped > 0 and len(g.timeline.tokens) <= 64
