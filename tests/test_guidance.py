"""Style guidance (engine/inference/guidance.py): the guided logits are the unconditional stream's plus `scale`
times the difference to the conditional one, both streams stay in step through rollbacks and window slides, and
a model that never saw its style dropped is refused."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from model_fixtures import export_small
from musebridge.engine.errors import EngineError
from musebridge.engine.inference.backend import LogitsRequest
from musebridge.engine.inference.guidance import GuidedCache, StyleGuidance, style_dropped, without_style
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.server.protocol import PARAMS
from musebridge.engine.sessions.session import Engine, Session
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.tokens import vocab as V

TRAINED = {"config": {"augment": {"style_drop": 0.15}}}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("guide")
    return export_small(folder)[1], export_small(folder, train=TRAINED)[1]


@pytest.fixture(scope="module")
def model(paths):
    return Model.load(paths[1], RuntimeOptions(provider="cpu"))


PIECE = [V.velocity_token(20), V.note_on_token(0, 60), V.time_token(25), V.note_off_token(0, 60)]


def test_only_the_prefix_style_is_replaced():
    prefix = V.conditioning("jazz", (0, 4))
    assert without_style(prefix + PIECE, 0) == V.conditioning("unknown", (0, 4)) + PIECE
    assert without_style(prefix[1:], 1) == V.conditioning("unknown", (0, 4))[1:]
    assert without_style(PIECE, len(prefix)) == PIECE  # past the prefix nothing changes


def test_guided_logits_move_away_from_the_unconditional_stream(model):
    scale = 2.5
    guided = StyleGuidance(model, scale)
    cache = guided.new_cache()
    tokens = V.conditioning("bach", (0,)) + PIECE
    got = [guided.logits([LogitsRequest(cache, part)])[0] for part in (tokens[:3], tokens[3:])]
    cond, uncond = model.new_cache(), model.new_cache()
    plain = V.conditioning("unknown", (0,)) + PIECE
    for row, n in zip(got, (3, len(tokens)), strict=True):
        c = model.logits([LogitsRequest(cond, tokens[cond.length : n])])[0]
        u = model.logits([LogitsRequest(uncond, plain[uncond.length : n])])[0]
        assert np.abs(row - (u + scale * (c - u))).max() < 1e-4
    assert np.abs(c - u).max() > 1e-3  # the style changed something, so the test can tell the streams apart


def test_plain_caches_pass_through(model):
    guided, cache = StyleGuidance(model, 3.0), model.new_cache()
    tokens = V.conditioning("bach", (0,)) + PIECE
    row = guided.logits([LogitsRequest(cache, tokens)])[0]
    assert np.abs(row - model.logits([LogitsRequest(model.new_cache(), tokens)])[0]).max() < 1e-5


def test_both_streams_stay_in_step_through_rollbacks_slides_and_a_new_style(model):
    config = SessionConfig(style="bach", instruments=(0, 5), player_instrument=0, sampling=SamplingConfig(seed=3),
                           context=64, slide_tokens=16, style_guidance=2.0)
    session = Session(model, config)
    session.generate(n_tokens=80, best_of=2)
    session.insert(session.time + 0.1, mido.Message("note_on", note=60, velocity=70))
    session.generate(n_tokens=40)
    session.reconfigure(SessionConfig(**{**config.__dict__, "style": "jazz"}))
    session.generate(n_tokens=40)
    cache = session.cache
    assert isinstance(cache, GuidedCache) and session.dropped > 0
    assert cache.conditional.length == cache.unconditional.length == cache.length


def test_a_session_at_scale_1_runs_one_stream(model):
    assert not isinstance(Session(model, SessionConfig(style="bach")).cache, GuidedCache)


def test_the_scale_is_fixed_for_a_session_and_bounded(model):
    session = Session(model, SessionConfig(style="bach", style_guidance=2.0))
    with pytest.raises(EngineError, match="fixed when a session is created"):
        session.reconfigure(SessionConfig(style="bach", style_guidance=3.0))
    with pytest.raises(EngineError, match="between 1 and 8"):
        Session(model, SessionConfig(style="bach", style_guidance=0.5))


def test_a_model_never_trained_without_its_style_is_refused(paths):
    untrained, trained = (Engine(Model.load(p, RuntimeOptions(provider="cpu"))) for p in paths)
    assert style_dropped(untrained.model.info) == 0.0 and style_dropped(trained.model.info) == 0.15
    with pytest.raises(EngineError, match="--style-drop") as err:
        untrained.new_session(SessionConfig(style="bach", style_guidance=2.0))
    assert "\n" not in str(err.value)
    untrained.new_session(SessionConfig(style="bach"))
    assert isinstance(trained.new_session(SessionConfig(style="bach", style_guidance=2.0)).cache, GuidedCache)


def test_the_protocol_limit_is_the_engine_limit():
    from musebridge.engine.inference.guidance import MAX_SCALE

    assert (PARAMS["style_guidance"].low, PARAMS["style_guidance"].high) == (1.0, MAX_SCALE)
