"""Which style does a piece sound like? A small classifier fitted on the corpus's real pieces.

Features are statistics of the music alone (no instrument, no style token, nothing of how it is performed:
no dynamics), from a piece's first WINDOW_S seconds: note rate, polyphony, silence, note lengths, inter-onset
intervals, register and range, melodic steps, how diatonic and how consonant it is, which intervals sound
together (perfect, imperfect, dissonant), how evenly it uses the twelve pitch classes, how its bass moves, how
often it strikes chords, how often a long onset gap is followed by one about half as long (swing, dotted
rhythms), and the rate and evenness of a drum part. The classifier is multinomial logistic regression (numpy,
L2-regularised, classes weighted equally) on the standardised features and their pairwise products, fitted on up
to `per_style` train-split pieces per style, each twice: as notated and as the performer plays it
(export/perform.py), so that it tells styles apart and not renderings (the model plays like a performer).
Generated pieces are then asked which style they are in; the share recognised per style says whether the style
token changes the music the way the real styles differ.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from musebridge.engine.files import atomic_write
from musebridge.engine.tokens.instruments import DRUM_CHANNEL
from musebridge.engine.tokens.midifile import Note

from ..errors import ExportError
from . import metrics as M
from .prompts import RENDERINGS, Source, rendered_notes

log = logging.getLogger(__name__)

WINDOW_S = 30.0  # seconds of each piece the features look at
FEATURES = ("log_rate", "polyphony", "silence", "log_duration", "long_share", "log_ioi", "ioi_spread",
            "register", "range", "step", "leap_share", "diatonic", "consonance", "perfect", "imperfect",
            "dissonant", "pc_entropy", "bass_leap", "chord_share", "long_short", "drum_rate", "drum_ioi_spread")
INTERVAL_CLASSES = {"perfect": (0, 5, 7), "imperfect": (3, 4, 8, 9), "dissonant": (1, 2, 6, 10, 11)}


def features(notes: Sequence[Note], span: float = WINDOW_S) -> np.ndarray:
    """The FEATURES of the notes starting in the first `span` seconds (drums only in the drum_ figures: the
    rhythm of a drum part is part of a band style)."""
    drums = M.onsets([n for n in notes if n.channel == DRUM_CHANNEL and n.start < span])
    drum_gaps = np.diff(drums)
    notes = [n for n in M.pitched(notes) if n.start < span]
    if not notes:
        return np.full(len(FEATURES), np.nan)
    end = max(min(span, max(n.end for n in notes)), 1.0)
    durations = np.array([n.end - n.start for n in notes])
    gaps = np.diff(M.onsets(notes))
    ratios = gaps[:-1] / np.maximum(gaps[1:], 1e-3)  # long-short pairs: swung or dotted rhythm
    pitches = np.array([n.pitch for n in notes])
    chords = _chords(notes)
    top, bass = [max(c) for c in chords], [min(c) for c in chords]  # the melody as heard, the bass line
    steps = np.abs(np.diff(top)) if len(top) > 1 else np.zeros(1)
    vertical = M.interval_classes(notes)
    profile = M.pitch_class_profile(notes)
    used = profile[profile > 0]
    return np.array([
        np.log(M.density(notes, end) + 1e-3), M.polyphony(notes, 0.0, end), M.silence_share(notes, 0.0, end),
        np.log(np.median(durations) + 1e-3), M.long_share(notes, 1.0),
        np.log(np.median(gaps) + 1e-3) if gaps.size else 0.0, np.std(np.log(gaps + 1e-3)) if gaps.size else 0.0,
        float(pitches.mean()), float(np.percentile(pitches, 95) - np.percentile(pitches, 5)),
        float(steps.mean()), float(np.mean(steps > 4)), M.in_key_share(notes, notes),
        _self_consonance(notes), *(float(vertical[list(ics)].sum()) for ics in INTERVAL_CLASSES.values()),
        float(-(used * np.log(used)).sum()), float(np.abs(np.diff(bass)).mean()) if len(bass) > 1 else 0.0,
        float(np.mean([len(c) >= 3 for c in chords])), float(np.mean((ratios > 1.6) & (ratios < 2.5)))
        if ratios.size else 0.0,
        np.log(drums.size / end + 1e-3), float(np.std(np.log(drum_gaps + 1e-3))) if drum_gaps.size else 0.0,
    ])


def furthest(real: np.ndarray, made: np.ndarray, count: int = 4) -> list[dict]:
    """The `count` FEATURES in which the mean of the rows `made` (n, features) lies furthest from the mean of the
    rows `real`, in standard deviations of `real` (z): what keeps a style's generated pieces from being taken for
    it. Rows may hold NaN (a piece without pitched notes); a feature constant in `real` is skipped."""
    mean, spread = np.nanmean(real, axis=0), np.nanstd(real, axis=0)
    made_mean = np.nanmean(made, axis=0)
    z = np.where(spread > 1e-9, (made_mean - mean) / np.where(spread > 1e-9, spread, 1.0), np.nan)
    order = [i for i in np.argsort(-np.abs(np.nan_to_num(z))) if np.isfinite(z[i])][:count]
    return [{"feature": FEATURES[i], "real": float(mean[i]), "model": float(made_mean[i]), "z": float(z[i])}
            for i in order]


def _chords(notes: Sequence[Note]) -> list[list[int]]:
    """The pitches starting at each onset (CHORD_S apart), in time order."""
    by_onset: dict[int, list[int]] = {}
    for n in notes:
        by_onset.setdefault(round(n.start / M.CHORD_S), []).append(n.pitch)
    return [by_onset[t] for t in sorted(by_onset)]


def _top_line(notes: Sequence[Note]) -> list[int]:
    """The highest pitch at each onset (the melody as a listener follows it)."""
    return [max(chord) for chord in _chords(notes)]


def _self_consonance(notes: Sequence[Note]) -> float:
    """Consonance of the top line against everything else sounding (1.0 for a melody alone)."""
    tops = set(_top_line(notes))
    upper = [n for n in notes if n.pitch in tops]
    lower = [n for n in notes if n.pitch not in tops]
    value = M.consonance(upper, lower)
    return 1.0 if np.isnan(value) else value


def pairs(x: np.ndarray) -> np.ndarray:
    """(n, f + f(f+1)/2): feature rows x (n, f) followed by the product of every pair of features (each with
    itself too), so that a linear classifier on them draws quadratic borders between styles (a fast piece is
    folk when it is diatonic and pop when it has a drum part)."""
    x = np.atleast_2d(x)
    i, j = np.triu_indices(x.shape[1])
    return np.hstack([x, x[:, i] * x[:, j]])


@dataclass(frozen=True)
class StyleClassifier:
    """Standardisation and the weights of the logistic regression on `pairs` of the features; `styles` in the
    order of the classes."""

    styles: tuple[str, ...]
    mean: np.ndarray  # (paired features,)
    scale: np.ndarray
    weights: np.ndarray  # (paired features + 1, styles)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(n, styles) class probabilities of feature rows x (n, features); missing values count as the mean."""
        z = np.nan_to_num((pairs(x) - self.mean) / self.scale)
        logits = np.hstack([z, np.ones((len(z), 1))]) @ self.weights
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, x: np.ndarray) -> list[str]:
        return [self.styles[i] for i in self.probabilities(x).argmax(axis=1)]


def fit(x: np.ndarray, labels: Sequence[str], l2: float = 3e-3, steps: int = 1500, lr: float = 0.5
        ) -> StyleClassifier:
    """Fit the classifier by full-batch gradient descent on the class-weighted cross-entropy. The defaults were
    chosen by 5-fold cross-validation on the judge's training set (folds by piece)."""
    styles = tuple(sorted(set(labels)))
    y = np.array([styles.index(s) for s in labels])
    x = pairs(x)
    mean, scale = np.nanmean(x, axis=0), np.nanstd(x, axis=0) + 1e-6
    z = np.nan_to_num((x - mean) / scale)
    z = np.hstack([z, np.ones((len(z), 1))])
    onehot = np.eye(len(styles))[y]
    weight = (1.0 / np.bincount(y, minlength=len(styles)))[y]
    weight /= weight.sum()
    w = np.zeros((z.shape[1], len(styles)))
    for _ in range(steps):
        logits = z @ w
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        grad = z.T @ ((p - onehot) * weight[:, None]) + l2 * w
        w -= lr * grad
    return StyleClassifier(styles, mean, scale, w)


def cross_validate(x: np.ndarray, labels: Sequence[str], groups: Sequence[int], folds: int = 5, seed: int = 0
                   ) -> dict[str, float]:
    """Recall per style of classifiers fitted on all folds but one and asked about the held-out fold, with every
    row of a group (a piece's renderings) in the same fold: how well real pieces of each style can be told apart
    at all, the ceiling for the model's pieces."""
    labels = [str(s) for s in labels]
    keys = sorted(set(groups))
    fold_of = dict(zip(keys, np.random.default_rng(seed).permutation(len(keys)) % folds, strict=True))
    fold = np.array([fold_of[g] for g in groups])
    hits: dict[str, list[bool]] = {s: [] for s in sorted(set(labels))}
    for k in range(folds):
        held = np.flatnonzero(fold == k)
        kept = [labels[i] for i in np.flatnonzero(fold != k)]
        if len(set(kept)) > 1:
            guesses = fit(x[fold != k], kept).predict(x[held])
        else:  # a style seen by no fitted classifier is never named
            guesses = kept[:1] * len(held)
        for i, guess in zip(held, guesses, strict=True):
            hits[labels[i]].append(labels[i] == guess)
    return {s: float(np.mean(h)) for s, h in hits.items()}


def training_set(sources: Sequence[Source], cache_dir: str | os.PathLike | None, seed: int = 0
                 ) -> tuple[np.ndarray, list[str]]:
    """Features and styles of the given real pieces, each as notated and as performed (seeded by `seed`): a row
    per rendering (RENDERINGS, in order), a piece's rows together. Cached in `cache_dir` under a hash of their
    paths and sizes (so a rebuilt corpus is read again)."""
    key = hashlib.sha1(json.dumps([[str(s.path), s.path.stat().st_size, s.style] for s in sources]
                                  + [FEATURES, WINDOW_S, RENDERINGS, seed]).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"style-features-{key}.npz" if cache_dir else None
    if cache is not None and cache.is_file():
        data = np.load(cache)
        return data["x"], [str(s) for s in data["styles"]]
    rows, styles = [], []
    for source in sources:
        for notes in rendered_notes(source, seed):
            rows.append(features(notes))
            styles.append(source.style)
    x = np.array(rows) if rows else np.zeros((0, len(FEATURES)))
    if cache is not None:
        def make(tmp: Path) -> None:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=x, styles=np.array(styles))

        atomic_write(cache, make, ExportError, make_folder=True)
    return x, styles
