"""How long real notes last, per instrument class: the limit the engine keeps its own notes to.

The engine never lets one of its notes outlive what the training music holds for that instrument
(engine/sessions/follow.py, "lifetime"). `note_lifetimes` measures it on a token split: each note's duration from
its note-on to its note-off (the key's time down; the sustain pedal is a token of its own and does not lengthen
it), and per class a high quantile of those durations. `musebridge export` stores the result in the model's data
summary (`data["lifetimes"]`, seconds per class name), which the engine reads when it builds a session; classes
with too few notes keep the engine's defaults.
"""

from __future__ import annotations

from collections import defaultdict, deque

import numpy as np
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import DRUMS, INSTRUMENT_NAMES

from .dataset import TokenData

QUANTILE = 0.99  # a note longer than 99% of the class's real notes is cut
MIN_NOTES = 200  # fewer notes than this: no figure for the class (the engine's default stays)
MIN_LIFETIME_S = 1.5  # seconds: no pitched class is limited below this (a held answer stays possible) ...
MAX_LIFETIME_S = 8.0  # ... nor above this (chord-symbol guitar parts hold a chord for a whole line)
DRUMS_LIFETIME_S = 0.5  # a drum hit is a trigger: its note-off follows at once


def note_durations(tokens: np.ndarray) -> dict[int, list[float]]:
    """Seconds each note of a token stream lasted, per instrument class (notes never ended are left out).
    Overlapping notes of one key pair first in, first out, as the codec pairs them."""
    on, off, time_ = V.OFFSETS["note_on"], V.OFFSETS["note_off"], V.OFFSETS["time"]
    keys = V.N_INSTRUMENTS * V.N_PITCHES
    step, started = 0, defaultdict(deque)
    out: dict[int, list[float]] = defaultdict(list)
    for token in tokens.tolist():
        if time_ <= token < time_ + V.MAX_SHIFT_STEPS:
            step += token - time_ + 1
        elif on <= token < on + keys:
            started[token - on].append(step)
        elif off <= token < off + keys:
            if started[token - off]:
                out[(token - off) // V.N_PITCHES].append((step - started[token - off].popleft()) * V.GRID_S)
        elif token in (V.BOS, V.EOS):
            step, started = 0, defaultdict(deque)
    return out


def note_lifetimes(data: TokenData, max_tokens: int = 4_000_000, seed: int = 0) -> dict[str, float]:
    """Per class name, the QUANTILE of its notes' durations (seconds, 0.1 s steps, within MIN_LIFETIME_S ..
    MAX_LIFETIME_S; drums DRUMS_LIFETIME_S), over pieces of `data` drawn at random up to about `max_tokens` tokens;
    classes with fewer than MIN_NOTES notes are left out."""
    order = np.random.default_rng(seed).permutation(len(data))
    durations: dict[int, list[float]] = defaultdict(list)
    seen = 0
    for i in order:
        piece = data.piece(int(i))
        for cls, values in note_durations(piece).items():
            durations[cls] += values
        seen += len(piece)
        if seen >= max_tokens:
            break
    return {INSTRUMENT_NAMES[cls]: _limit(cls, values) for cls, values in sorted(durations.items())
            if len(values) >= MIN_NOTES}


def _limit(cls: int, durations: list[float]) -> float:
    if cls == DRUMS:
        return DRUMS_LIFETIME_S
    return min(MAX_LIFETIME_S, max(MIN_LIFETIME_S, round(float(np.quantile(durations, QUANTILE)), 1)))
