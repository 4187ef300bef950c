"""Sampler: seeded reproducibility, filter semantics (temperature, top-k, top-p, min-p), constraint masks."""

from __future__ import annotations

import numpy as np
import pytest
from musebridge.engine.inference.sampler import (
    Constraints,
    Sampler,
    SamplingConfig,
    additive,
    dynamic_mask,
    scale_pitch_classes,
)
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import DRUMS, INSTRUMENTS


def logits(seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=V.VOCAB_SIZE) * scale).astype(np.float32)


def draws(config: SamplingConfig, n: int = 200, seed: int = 0) -> list[int]:
    s = Sampler(config)
    return [s.sample(logits(seed + i)) for i in range(n)]


def test_same_seed_same_tokens_other_seed_other_tokens():
    assert draws(SamplingConfig(seed=7)) == draws(SamplingConfig(seed=7))
    assert draws(SamplingConfig(seed=7)) != draws(SamplingConfig(seed=8))


def test_temperature_zero_is_argmax():
    z = logits(3)
    assert Sampler(SamplingConfig(temperature=0)).sample(z) == int(np.argmax(z))


def test_top_k_keeps_exactly_the_k_best():
    z = logits(4)
    ids, p = Sampler(SamplingConfig(top_k=5)).probabilities(z)
    assert sorted(ids.tolist()) == sorted(np.argsort(-z)[:5].tolist())
    assert p.sum() == pytest.approx(1.0)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    z = logits(5, scale=2.0)
    full = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    ids, _ = Sampler(SamplingConfig(top_p=0.5)).probabilities(z)
    order = np.argsort(-full)
    cum = np.cumsum(full[order])
    k = int(np.searchsorted(cum, 0.5)) + 1
    assert sorted(ids.tolist()) == sorted(order[:k].tolist())
    assert full[ids].sum() >= 0.5 and full[ids].sum() - full[ids].min() < 0.5


def test_min_p_drops_tokens_below_the_fraction_of_the_best():
    z = logits(6)
    full = np.exp(z - z.max())
    ids, _ = Sampler(SamplingConfig(min_p=0.2)).probabilities(z)
    assert set(ids.tolist()) == set(np.flatnonzero(full >= 0.2).tolist())


def test_sampling_follows_the_distribution():
    z = np.full(V.VOCAB_SIZE, -np.inf, np.float32)
    z[[10, 20]] = [0.0, np.log(3.0)]
    s = Sampler(SamplingConfig(seed=1))
    counts = np.bincount([s.sample(z) for _ in range(4000)], minlength=V.VOCAB_SIZE)
    assert counts[10] + counts[20] == 4000 and 0.7 < counts[20] / 4000 < 0.8


def note_ons(allowed: np.ndarray) -> list[tuple[int, int]]:
    out = []
    for t in np.flatnonzero(allowed):
        kind, arg = V.token_kind(int(t))
        if kind == "note_on":
            out.append(divmod(arg, V.N_PITCHES))
    return out


def test_static_mask_instruments_player_range_scale():
    c = Constraints(instruments=(0, 4, 5, DRUMS), player_instrument=0, scale=scale_pitch_classes("D", "minor"),
                    pitch_ranges=((5, 60, 72),))
    allowed = c.static_mask()
    ons = note_ons(allowed)
    assert {i for i, _ in ons} == {4, 5, DRUMS}  # never the player's class 0
    for inst, pitch in ons:
        low, high = (60, 72) if inst == 5 else (INSTRUMENTS[inst].low, INSTRUMENTS[inst].high)
        assert low <= pitch <= high
        if inst != DRUMS:
            assert pitch % 12 in (2, 4, 5, 7, 9, 10, 0)
    assert sum(1 for i, _ in ons if i == DRUMS) == INSTRUMENTS[DRUMS].high - INSTRUMENTS[DRUMS].low + 1
    for token in [V.PAD, V.BOS, V.EOS, V.style_token("bach"), V.set_token(0), V.pedal_token(0, True),
                  V.note_off_token(4, 40)]:
        assert not allowed[token], V.describe(token)
    assert allowed[V.time_token(1)] and allowed[V.velocity_token(3)] and allowed[V.pedal_token(4, True)]


def test_dynamic_mask_note_offs_and_polyphony_cap():
    static = additive(Constraints(instruments=(4,), player_instrument=0).static_mask())
    assert dynamic_mask(static, [], 0, None) is static
    m = dynamic_mask(static, [(4, 40)], 1, 1)
    assert m[V.note_off_token(4, 40)] == 0 and m[V.note_off_token(0, 40)] == -np.inf
    assert not np.isfinite(m[V.OFFSETS["note_on"] : V.OFFSETS["note_off"]]).any()
    assert np.isfinite(dynamic_mask(static, [(4, 40)], 1, 2)[V.note_on_token(4, 40)])
    struck = dynamic_mask(static, [(4, 40)], 1, 2, struck=[(4, 40)])
    assert not np.isfinite(struck[V.note_on_token(4, 40)]), "a key the engine sounds is not struck again"
    assert np.isfinite(struck[V.note_on_token(4, 41)]) and np.isfinite(struck[V.note_off_token(4, 40)])


@pytest.mark.parametrize("config", [SamplingConfig(seed=3), SamplingConfig(seed=3, temperature=2.0, top_k=50),
                                    SamplingConfig(seed=3, top_p=0.95, min_p=0.01)])
def test_masked_tokens_are_never_drawn(config):
    c = Constraints(instruments=(5,), player_instrument=0, scale=scale_pitch_classes("C"))
    static = additive(c.static_mask())
    s = Sampler(config)
    for i in range(300):
        z = logits(i)
        z[V.OFFSETS["note_on"] : V.OFFSETS["note_on"] + V.N_PITCHES] += 50.0  # the model loves the player's notes
        token = s.sample(z, static)
        assert np.isfinite(static[token]), V.describe(token)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        SamplingConfig(top_p=0)
    with pytest.raises(ValueError, match="unknown key"):
        scale_pitch_classes("H")
    assert scale_pitch_classes("Bb", "major") == (0, 2, 3, 5, 7, 9, 10)
