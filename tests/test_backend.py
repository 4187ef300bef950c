"""The inference backend: one logits row per request, the same for a session asked alone or with others, and a
session runs the model only through it."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from model_fixtures import export_small
from musebridge.engine.inference.backend import Backend, Cache, LogitsRequest
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.session import Session
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.tokens import vocab as V


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return Model.load(export_small(tmp_path_factory.mktemp("be"))[1], RuntimeOptions(provider="cpu"))


A = V.conditioning("bach", (0, 5)) + [V.time_token(10), V.note_on_token(5, 67), V.time_token(20)]
B = V.conditioning("jazz", (4,)) + [V.velocity_token(20), V.note_on_token(4, 40)]


def test_the_cpu_model_is_a_backend(model):
    assert isinstance(model, Backend) and isinstance(model.new_cache(64), Cache)


def test_one_row_per_request_in_order(model):
    a, b = model.new_cache(), model.new_cache(64)
    rows = model.logits([LogitsRequest(a, A), LogitsRequest(b, B), LogitsRequest(a, [V.note_off_token(5, 67)])])
    assert len(rows) == 3 and all(r.shape == (V.VOCAB_SIZE,) and r.dtype == np.float32 for r in rows)
    assert a.length == len(A) + 1 and b.length == len(B)
    assert np.abs(rows[0] - rows[2]).max() > 0  # the third ran after the first on the same cache


def test_two_sessions_together_get_what_each_gets_alone(model):
    a, b = model.new_cache(), model.new_cache()
    together = model.logits([LogitsRequest(a, A), LogitsRequest(b, B)])
    steps = model.logits([LogitsRequest(a, [V.note_off_token(5, 67)]), LogitsRequest(b, [V.time_token(3)])])
    alone_a, alone_b = model.new_cache(), model.new_cache()
    want = [model.logits([LogitsRequest(alone_a, A)])[0], model.logits([LogitsRequest(alone_b, B)])[0]]
    want += [model.logits([LogitsRequest(alone_a, [V.note_off_token(5, 67)])])[0],
             model.logits([LogitsRequest(alone_b, [V.time_token(3)])])[0]]
    for got, expected in zip(together + steps, want, strict=True):
        assert np.abs(got - expected).max() < 1e-5


def test_rows_are_the_callers_own(model):
    cache = model.new_cache()
    first = model.logits([LogitsRequest(cache, A)])[0]
    kept = first.copy()
    model.logits([LogitsRequest(cache, [V.note_off_token(5, 67)])])  # one-token steps reuse a buffer inside
    assert np.array_equal(first, kept)


class Recording:
    """A backend that hands every request to the model and keeps count: what a batching backend would see."""

    def __init__(self, model: Model):
        self.model, self.calls, self.tokens = model, 0, 0

    def new_cache(self, capacity=None):
        cache = self.model.new_cache(capacity)
        forward = cache.forward

        def counted(tokens):
            self.tokens -= len(tokens)  # balanced by logits(): a forward pass outside it leaves a deficit
            return forward(tokens)

        cache.forward = counted
        return cache

    def logits(self, requests):
        self.calls += 1
        self.tokens += sum(len(r.tokens) for r in requests)
        return self.model.logits(requests)


def test_a_session_runs_the_model_only_through_the_backend(model):
    config = SessionConfig(style="bach", instruments=(0, 5), player_instrument=0,
                           sampling=SamplingConfig(seed=7), context=64, slide_tokens=16)
    backend = Recording(model)
    via, direct = Session(backend, config), Session(model, config)
    for s in (via, direct):
        s.generate(n_tokens=80, best_of=2)
        s.insert(s.time + 0.1, mido.Message("note_on", note=60, velocity=70))
        s.generate(n_tokens=30)
        s.anticipate(s.time + 0.5)
        s.precompute()
    assert via.tokens == direct.tokens and via.dropped == direct.dropped > 0
    assert backend.calls > 0 and backend.tokens == 0
