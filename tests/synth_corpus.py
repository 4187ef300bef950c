"""Synthetic token corpora for the training, dataset and evaluation tests (not a test module itself).

A piece is a few random-walk melodies, one per instrument of its set, on the C major scale inside each
instrument's range, tokenized by the real codec: conditioning prefix, events, EOS.
"""

from __future__ import annotations

import mido
import numpy as np
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import Timed, encode_events
from musebridge.engine.tokens.instruments import DRUMS, INSTRUMENTS, instrument_index
from musebridge.export.dataset import write_split

SCALE = (0, 2, 4, 5, 7, 9, 11)

# (style, instrument names): each style always comes with its own instruments, so a model can learn both.
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("bach", ("voice",)),
    ("folk", ("pipe", "strings")),
    ("classical", ("piano",)),
    ("renaissance", ("organ", "brass")),
)


def _line(rng: np.random.Generator, inst: int, n_notes: int, step_s: float) -> list[Timed]:
    lo, hi = INSTRUMENTS[inst].low, INSTRUMENTS[inst].high
    channel = 9 if inst == DRUMS else inst % 9
    middle = (lo + hi) // 2
    pitches = [p for p in range(middle - 6, middle + 7) if p % 12 in SCALE]  # one octave of C major
    k = len(pitches) // 2
    events = [Timed(0.0, mido.Message("program_change", channel=channel, program=INSTRUMENTS[inst].program))]
    t = 0.0
    for _ in range(n_notes):
        k = int(np.clip(k + rng.integers(-2, 3), 0, len(pitches) - 1))
        dur = step_s * int(rng.integers(1, 3))
        vel = int(rng.integers(50, 100))
        events.append(Timed(t, mido.Message("note_on", channel=channel, note=pitches[k], velocity=vel)))
        events.append(Timed(t + dur, mido.Message("note_off", channel=channel, note=pitches[k])))
        t += dur
    return events


def synth_piece(style: str, instruments: list[int], seed: int, n_notes: int = 24,
                step_s: float = 0.25) -> list[int]:
    """Tokens of one synthetic piece: prefix, events, EOS."""
    rng = np.random.default_rng(seed)
    events = sorted((e for i in instruments for e in _line(rng, i, n_notes, step_s)),
                    key=lambda e: (e.time, e.msg.type != "note_off"))
    return V.conditioning(style, instruments) + encode_events(events) + [V.EOS]


def kind_instruments(names: tuple[str, ...]) -> list[int]:
    return sorted(instrument_index(n) for n in names)


def write_corpus(root, pieces_per_split=(24, 4, 4), n_notes: int = 24, seed: int = 0) -> None:
    """A train/valid/test corpus cycling through KINDS, in the on-disk format."""
    for s, (split, count) in enumerate(zip(("train", "valid", "test"), pieces_per_split, strict=True)):
        pieces, styles = [], []
        for i in range(count):
            style, names = KINDS[i % len(KINDS)]
            piece_seed = (seed * 3 + s) * 100_000 + i
            pieces.append(synth_piece(style, kind_instruments(names), piece_seed, n_notes=n_notes))
            styles.append(style)
        write_split(root, split, pieces, styles=styles)
