"""The judge's style classifier (export/quality/style.py) on hand-made music with known answers."""

from __future__ import annotations

import random

import numpy as np
import pytest
from musebridge.engine.tokens.midifile import Note
from musebridge.export.quality import style as S


def _note(start: float, end: float, pitch: int, velocity: int = 80, channel: int = 0) -> Note:
    return Note(start, end, pitch, velocity, channel, 0)


def _feature(notes, name: str) -> float:
    return float(S.features(notes)[S.FEATURES.index(name)])


def test_a_held_major_triad_sounds_two_imperfect_intervals_and_one_perfect():
    triad = [_note(0.0, 2.0, p) for p in (60, 64, 67)]  # C-E a third, E-G a third, C-G a fifth
    assert _feature(triad, "imperfect") == pytest.approx(2 / 3)
    assert _feature(triad, "perfect") == pytest.approx(1 / 3)
    assert _feature(triad, "dissonant") == 0.0
    assert _feature(triad, "chord_share") == 1.0


def test_swung_onsets_are_long_short_pairs_and_straight_ones_are_not():
    swung = [_note(t, t + 0.1, 60 + i % 5) for i, t in enumerate(b + o for b in np.arange(0, 8, 0.6)
                                                                   for o in (0.0, 0.4))]
    straight = [_note(t, t + 0.1, 60 + i % 5) for i, t in enumerate(np.arange(0, 8, 0.3))]
    assert _feature(swung, "long_short") > 0.4
    assert _feature(straight, "long_short") == 0.0


def test_dynamics_do_not_change_a_pieces_features():
    rng = random.Random(0)
    notes = [_note(i * 0.25, i * 0.25 + 0.2, 60 + rng.randrange(12)) for i in range(60)]
    louder = [_note(n.start, n.end, n.pitch, velocity=rng.randrange(20, 127)) for n in notes]
    assert np.allclose(S.features(notes), S.features(louder), equal_nan=True)


def test_a_drum_part_is_heard_only_in_the_drum_figures():
    line = [_note(i * 0.5, i * 0.5 + 0.4, 60 + i % 7) for i in range(40)]
    drums = [_note(i * 0.25, i * 0.25 + 0.05, 36, channel=9) for i in range(80)]
    with_drums = S.features(line + drums)
    without = S.features(line)
    drum_figures = [S.FEATURES.index(n) for n in ("drum_rate", "drum_ioi_spread")]
    others = [i for i in range(len(S.FEATURES)) if i not in drum_figures]
    assert np.allclose(with_drums[others], without[others])
    assert with_drums[S.FEATURES.index("drum_rate")] > without[S.FEATURES.index("drum_rate")]


def test_the_classifier_tells_a_chorale_from_a_fast_swung_line():
    """Held four-part chords against a fast swung single line, each drawn at random: fitted on 30 of each, it
    names 10 new ones of each correctly."""
    rng = random.Random(1)

    def chorale() -> list[Note]:
        notes = []
        for i in range(12):
            root = 48 + rng.choice((0, 5, 7, 9))
            notes += [_note(i * 1.0, i * 1.0 + 0.95, root + p) for p in (0, 7, 12, 16)]
        return notes

    def swing() -> list[Note]:
        times = [b + o for b in np.arange(0, 10, 0.5) for o in (0.0, 0.33)]
        return [_note(t, t + 0.12, 70 + rng.randrange(-5, 6)) for t in times]

    x = np.array([S.features(make()) for make in (chorale, swing) for _ in range(30)])
    labels = ["chorale"] * 30 + ["swing"] * 30
    classifier = S.fit(x, labels)
    assert classifier.predict(np.array([S.features(chorale()) for _ in range(10)])) == ["chorale"] * 10
    assert classifier.predict(np.array([S.features(swing()) for _ in range(10)])) == ["swing"] * 10

    pieces = np.arange(60) // 2  # rows taken two to a piece
    assert S.cross_validate(x, labels, pieces) == {"chorale": 1.0, "swing": 1.0}


def test_cross_validation_keeps_a_pieces_rows_in_one_fold():
    """A style that is one piece played twice cannot be recognised when that piece is held out (it would be, by
    its own twin, if the folds split a piece's renderings)."""
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 1, (40, 3)), np.full((2, 3), 6.0)])
    labels = ["many"] * 40 + ["one"] * 2
    pieces = list(range(40)) + [40, 40]
    assert S.cross_validate(x, labels, pieces)["one"] == 0.0
    assert S.cross_validate(x, labels, range(42))["one"] == 1.0


def test_the_feature_furthest_from_the_real_pieces_comes_first():
    """Real rows spread 1 apart in every feature; the model's rows sit 3 sd off in one feature, 1 sd in
    another and on the real mean elsewhere (one of them without notes: NaN)."""
    rng = np.random.default_rng(0)
    real = rng.normal(0.0, 1.0, (400, len(S.FEATURES)))
    real = (real - real.mean(axis=0)) / real.std(axis=0)
    made = np.zeros((5, len(S.FEATURES)))
    made[:, S.FEATURES.index("dissonant")] = 3.0
    made[:, S.FEATURES.index("range")] = -1.0
    made = np.vstack([made, np.full(len(S.FEATURES), np.nan)])
    found = S.furthest(real, made, count=2)
    assert [f["feature"] for f in found] == ["dissonant", "range"]
    assert found[0]["z"] == pytest.approx(3.0) and found[1]["z"] == pytest.approx(-1.0)
    assert found[0]["real"] == pytest.approx(0.0) and found[0]["model"] == pytest.approx(3.0)


def test_a_feature_every_real_piece_shares_is_not_ranked():
    real = np.ones((10, len(S.FEATURES)))
    real[:, 0] = np.arange(10)
    made = np.full((3, len(S.FEATURES)), 5.0)
    assert [f["feature"] for f in S.furthest(real, made)] == [S.FEATURES[0]]
