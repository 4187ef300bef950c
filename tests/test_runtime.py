"""Runtime: the KV cache is kept across calls, truncation and slides are exact cache operations, providers."""

from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import export_small
from musebridge.engine.errors import EngineError, ModelError
from musebridge.engine.inference.model_file import choose_providers, default_model_path
from musebridge.engine.inference.runtime import Model, RuntimeOptions


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return Model.load(export_small(tmp_path_factory.mktemp("rt"))[1], RuntimeOptions(provider="cpu"))


def toks(n, seed=0):
    return np.random.default_rng(seed).integers(0, 3259, n).tolist()


def test_cached_steps_equal_one_prefill(model):
    t = toks(30)
    whole = model.new_cache().forward(t)
    cache = model.new_cache()
    cache.forward(t[:10])
    steps = np.stack([cache.forward([x]).copy()[0] for x in t[10:]])
    assert np.abs(steps - whole[10:]).max() < 1e-4 and cache.length == 30


def test_truncate_then_continue_equals_a_fresh_cache(model):
    t, other = toks(40, 1), toks(10, 2)
    cache = model.new_cache()
    cache.forward(t)
    cache.truncate(25)
    got = cache.forward(other)
    want = model.new_cache().forward(t[:25] + other)[25:]
    assert np.abs(got - want).max() < 1e-5 and cache.length == 35


def test_capacity_is_enforced_and_slide_frees_room(model):
    cache = model.new_cache()
    cache.forward(toks(128))
    with pytest.raises(EngineError, match="overflow"):
        cache.forward([1])
    cache.slide(3, 32)
    assert cache.length == 96
    cache.forward([1])
    with pytest.raises(EngineError):
        cache.slide(3, 200)


def test_a_shorter_cache_is_a_shorter_context_with_the_same_results(model):
    """A session's `context`: a cache smaller than the block size slides within it, exactly as a full-size
    cache slid at the same points."""
    small, full = model.new_cache(40), model.new_cache()
    small.plan_slides(3, 10, chunk=4)
    for x in toks(120, 6):
        if small.length == small.capacity:
            small.slide(3, 10)
            full.slide(3, 10)
        a, b = small.forward([x]).copy(), full.forward([x]).copy()
        assert np.abs(a - b).max() < 1e-5 and small.length == full.length <= 40
    for bad in (0, model.info.block_size + 1):
        with pytest.raises(EngineError, match="1-128 tokens"):
            model.new_cache(bad)


def test_copy_from_gives_the_same_continuation(model):
    a = model.new_cache()
    a.forward(toks(20, 3))
    b = model.new_cache()
    b.copy_from(a)
    assert np.array_equal(a.forward([5]).copy(), b.forward([5]).copy())


def test_provider_choice():
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert choose_providers("auto")[0] == "CUDAExecutionProvider"
    else:
        assert choose_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(ModelError, match="onnxruntime-gpu"):
            choose_providers("cuda")


def test_default_model_loads_or_says_how_to_make_one():
    if default_model_path().is_file():
        assert Model.load().info.vocab["size"] == 3259
    else:
        with pytest.raises(ModelError, match="musebridge export"):
            Model.load()


@pytest.mark.parametrize(("chunk", "idle_every"), [(1, 0), (7, 0), (32, 0), (32, 5), (7, 3)])
def test_background_slides_equal_immediate_slides(model, chunk, idle_every):
    """Slides prepared step by step (and, with idle_every, by prepare() between steps, as the server does)
    give the same logits as immediate slides."""
    t = toks(400, 4)
    planned, plain = model.new_cache(), model.new_cache()
    planned.plan_slides(3, 40, chunk=chunk)
    planned.forward(t[:100])
    plain.forward(t[:100])
    for i, x in enumerate(t[100:]):
        for cache in (planned, plain):
            if cache.length == cache.capacity:
                cache.slide(3, 40)
        if i == 50:  # a rollback in between
            planned.truncate(90)
            plain.truncate(90)
        a, b = planned.forward([x]).copy(), plain.forward([x]).copy()
        assert planned.length == plain.length <= planned.capacity
        assert np.abs(a - b).max() < 1e-5
        if idle_every and i % idle_every == 0:
            planned.prepare()
            assert not planned.prepare()  # everything waiting was copied


def test_prepare_leaves_the_slide_nothing_to_copy(model):
    cache = model.new_cache()
    assert not cache.prepare()  # no plan: nothing to do
    cache.plan_slides(3, 40, chunk=32)
    cache.forward(toks(50, 2))  # 7 entries the slide keeps: fewer than a chunk, not copied by the step
    assert cache.prepare() and not cache.prepare()
    cache.forward(toks(78, 3))
    assert cache.length == cache.capacity
    cache.prepare()
    assert cache._copied == cache.length - 43  # every entry the slide keeps
    shadow = cache._shadow
    cache.slide(3, 40)
    assert cache._buffers is shadow and cache.length == 88  # swapped in, everything kept already copied
