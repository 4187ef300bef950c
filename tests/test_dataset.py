"""Packed training windows: every window starts with the conditioning prefix of the piece it is in."""

from __future__ import annotations

import numpy as np
import pytest
from musebridge.engine.tokens import vocab as V
from musebridge.export.augment import AugmentConfig, prefix_length
from musebridge.export.dataset import (
    WindowSampler,
    load_split,
    load_training,
    mix_weights,
    piece_source,
    write_split,
)
from musebridge.export.errors import DataError
from synth_corpus import write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, (12, 3, 3), n_notes=20)
    return root


def piece_at(data, pos):
    return int(np.searchsorted(data.offsets, pos, side="right")) - 1


def test_split_round_trip(tmp_path):
    pieces = [V.conditioning("bach", [6]) + [V.time_token(4), V.EOS], V.conditioning("folk", [9, 5]) + [V.EOS]]
    write_split(tmp_path, "train", pieces, ids=["a", "b"], styles=["bach", "folk"])
    data = load_split(tmp_path, "train")
    assert len(data) == 2 and data.ids == ("a", "b") and data.styles == ("bach", "folk")
    assert data.piece(1).tolist() == pieces[1]
    assert data.prefix_lengths().tolist() == [3, 4]


def test_missing_split_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="musebridge corpus build"):
        load_split(tmp_path, "train")


@pytest.mark.parametrize("augment", [None, AugmentConfig(revoice_prob=0.5)])
def test_every_window_starts_with_its_pieces_prefix(corpus, augment):
    data = load_split(corpus, "train")
    sampler = WindowSampler(data, 48, augment, seed=1)
    rng = np.random.default_rng(0)
    for start in list(range(0, len(data.tokens), 37)) + [int(data.offsets[3]), int(data.offsets[3]) + 1]:
        w = sampler.window(start, 49, rng)
        assert len(w.tokens) == 49
        piece = data.piece(piece_at(data, start))
        n = prefix_length(piece)
        assert prefix_length(w.tokens) == n  # re-voicing renames SET tokens but keeps their number
        assert w.tokens[:2].tolist() == piece[:2].tolist()  # BOS and the piece's STYLE
        if augment is None:
            assert w.tokens[:n].tolist() == piece[:n].tolist()
        inside = start - data.offsets[piece_at(data, start)] >= n
        # a re-inserted prefix is learned like a piece start; the jump into the middle of the piece is not
        assert w.target[1:n].all() and (not w.target[n] if inside else w.target[n])


def test_windows_pack_the_next_pieces_and_pad_only_at_the_end(corpus):
    data = load_split(corpus, "train")
    sampler = WindowSampler(data, 256, None)
    w = sampler.window(0, 257)
    assert w.tokens[: len(data.piece(0))].tolist() == data.piece(0).tolist()
    assert w.tokens[len(data.piece(0))] == V.BOS  # the next piece follows at once
    tail = sampler.window(len(data.tokens) - 5, 257)
    assert (tail.tokens[-200:] == V.PAD).all() and not tail.target[-200:].any()


def test_batches_are_pure_functions_of_seed_rank_step(corpus):
    data = load_split(corpus, "train")
    sampler = WindowSampler(data, 32, AugmentConfig(), seed=7)
    x1, y1 = sampler.batch(4, step=3, rank=0)
    x2, y2 = sampler.batch(4, step=3, rank=0)
    assert (x1 == x2).all() and (y1 == y2).all()
    assert x1.shape == y1.shape == (4, 32)
    assert not (sampler.batch(4, step=3, rank=1)[0] == x1).all()
    assert (x1[:, 0] == V.BOS).all()
    # targets are the inputs shifted by one, PAD where nothing is predicted
    w = [sampler.window(0, 33)]
    x, y = sampler._stack(w)
    assert (y[0][y[0] != V.PAD] == w[0].tokens[1:][w[0].target[1:]]).all()


def test_fixed_validation_windows_are_shared_out_between_ranks(corpus):
    sampler = WindowSampler(load_split(corpus, "valid"), 32, None)
    whole = np.concatenate([x for x, _ in sampler.fixed_batches(10, 3)])
    parts = [np.concatenate([x for x, _ in sampler.fixed_batches(10, 3, rank=r, world=2)]) for r in range(2)]
    assert len(whole) == 10 and sum(len(p) for p in parts) == 10
    assert sorted(map(bytes, whole)) == sorted(map(bytes, np.concatenate(parts)))


def test_some_windows_start_at_a_piece_start_so_the_first_event_is_learned(corpus):
    data = load_split(corpus, "train")
    sampler = WindowSampler(data, 32, None, seed=5)
    piece_starts = 0
    for step in range(100):
        x, y = sampler.batch(4, step)
        for row in range(4):
            n = prefix_length(x[row])
            if y[row, n - 1] != V.PAD:  # the token after the prefix is a target: a real piece start
                piece_starts += 1
    # START_PROB of 400 windows, plus the few whose drawn position was a piece start anyway
    assert 0.05 * 400 < piece_starts < 0.2 * 400


def mixed_split(tmp_path):
    """Three sources in two styles: notated folk (long), notated bach, band folk, live folk renderings."""
    body = [V.time_token(4), V.velocity_token(20), V.note_on_token(0, 60), V.time_token(10),
            V.note_off_token(0, 60)]
    pieces, ids, styles = [], [], []
    for pid, style, reps in [("folk-a", "folk", 40), ("bach-b", "bach", 5), ("folk-band-folk-a", "folk", 10),
                             ("folk-a@live0", "folk", 10), ("bach-b@live0", "bach", 10)]:
        pieces.append(V.conditioning(style, [0]) + body * reps + [V.EOS])
        ids.append(pid)
        styles.append(style)
    write_split(tmp_path, "train", pieces[:3], ids[:3], styles[:3])
    write_split(tmp_path, "live-train", pieces[3:], ids[3:], styles[3:])
    return load_training(tmp_path, "train")


def drawn_share(data, weights, n=40_000):
    sampler = WindowSampler(data, 16, None, seed=3, weights=weights)
    starts = sampler._draw(np.random.default_rng(0), n)
    pieces = np.searchsorted(data.offsets, starts, side="right") - 1
    return np.bincount(pieces, minlength=len(data)) / n


def test_training_split_joins_its_live_renderings(tmp_path):
    data = mixed_split(tmp_path)
    sources = [piece_source(i, s) for i, s in zip(data.ids, data.styles, strict=True)]
    assert sources == ["notated", "notated", "band", "live", "live"]
    assert data.piece(3)[:2].tolist() == [V.BOS, V.style_token("folk")]
    assert data.offsets[-1] == len(data.tokens)


def test_mix_gives_each_source_its_share_and_balances_styles(tmp_path):
    data = mixed_split(tmp_path)
    assert mix_weights(data, None, 0.0) is None
    share = drawn_share(data, mix_weights(data, {"live": 0.6, "band": 0.2, "notated": 0.2}, 0.0))
    assert share[3] + share[4] == pytest.approx(0.6, abs=0.02)
    assert share[2] == pytest.approx(0.2, abs=0.02)
    # inside "notated" the styles keep their token shares (folk 40 bodies, bach 5) at balance 0 ...
    assert share[0] / share[1] == pytest.approx(len(data.piece(0)) / len(data.piece(1)), rel=0.2)
    # ... and are drawn alike at balance 1
    balanced = drawn_share(data, mix_weights(data, {"notated": 1.0}, 1.0))
    assert balanced[0] == pytest.approx(0.5, abs=0.02) and balanced[2:].sum() == 0


def test_mix_without_any_present_source_is_refused(tmp_path):
    data = mixed_split(tmp_path)
    with pytest.raises(DataError, match="give one of them a share"):
        mix_weights(data, {"live": 0.0, "band": 0.0}, 0.0)
    with pytest.raises(DataError, match="between 0 and 1"):
        mix_weights(data, None, 1.5)


def test_weighted_windows_still_start_with_their_pieces_prefix(tmp_path):
    data = mixed_split(tmp_path)
    sampler = WindowSampler(data, 24, None, seed=1, weights=mix_weights(data, {"live": 1.0}, 0.5))
    x, _ = sampler.batch(64, step=0)
    assert (x[:, 0] == V.BOS).all() and (x[:, 1] == V.style_token("folk")).sum() > 10
