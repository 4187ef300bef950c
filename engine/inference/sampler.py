"""Sampling the next token: temperature, top-k, top-p, min-p, a seeded generator, and hard constraints.

Constraints are logit masks, so they are guarantees, not suggestions: a masked token has probability 0.
- `Constraints.static_mask()` (computed once per session): only event tokens can be generated (no PAD, BOS,
  STYLE or SET; EOS only when allowed); note-ons only for the allowed instruments, never the player's, inside each
  instrument's pitch range and (except drums) inside the key/scale; pedals only for the allowed instruments.
- `dynamic_mask()` (per step, from the notes the engine holds): note-offs only for notes the engine itself is
  sounding (never the player's), no second note-on for a key it is sounding, no note-on at all while
  `max_polyphony` engine notes sound.

Filters apply in this order: mask, temperature, top-k, top-p, min-p (min-p is relative to the most probable
remaining token). temperature 0 means greedy. Same seed and same inputs give the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..tokens import vocab as V
from ..tokens.instruments import DRUMS, INSTRUMENTS

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SCALES: dict[str, tuple[int, ...]] = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),  # natural minor
    "harmonic_minor": (0, 2, 3, 5, 7, 8, 11),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
    "mixolydian": (0, 2, 4, 5, 7, 9, 10),
    "pentatonic": (0, 2, 4, 7, 9),
    "minor_pentatonic": (0, 3, 5, 7, 10),
    "blues": (0, 3, 5, 6, 7, 10),
    "chromatic": tuple(range(12)),
}
_FLATS = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}


def scale_pitch_classes(key: str, scale: str = "major") -> tuple[int, ...]:
    """Pitch classes (0 = C) of a key and scale, e.g. ("D", "minor"). Raises ValueError naming valid choices."""
    root = key.strip()[:1].upper() + key.strip()[1:]
    root = _FLATS.get(root, root)
    if root not in NOTE_NAMES:
        raise ValueError(f"unknown key {key!r}; choose from: {', '.join(NOTE_NAMES)} (or flats like Bb)")
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; choose from: {', '.join(SCALES)}")
    r = NOTE_NAMES.index(root)
    return tuple(sorted((r + i) % 12 for i in SCALES[scale]))


@dataclass(frozen=True)
class SamplingConfig:
    """temperature > 0 (0: greedy); top_k 0 = off; top_p 1 = off; min_p 0 = off; seed None = from the OS."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 or not 0 <= self.min_p <= 1:
            raise ValueError("sampling needs temperature >= 0, top_k >= 0, 0 < top_p <= 1, 0 <= min_p <= 1")


@dataclass(frozen=True)
class Constraints:
    """Hard limits on generated tokens.

    instruments: instrument classes the engine may play (None: any class except the player's).
    player_instrument: the player's class; the engine never plays it (its note-ons/offs/pedals are masked).
    pitch_ranges: (class, low, high) overrides of the instrument table's ranges (MIDI note numbers, inclusive).
    scale: allowed pitch classes (0 = C) for pitched instruments; None = all twelve. See scale_pitch_classes.
    max_polyphony: most engine notes sounding at once (None = no cap).
    allow_eos: let the model end the piece (off for live sessions).
    """

    instruments: tuple[int, ...] | None = None
    player_instrument: int | None = None
    pitch_ranges: tuple[tuple[int, int, int], ...] = field(default_factory=tuple)
    scale: tuple[int, ...] | None = None
    max_polyphony: int | None = None
    allow_eos: bool = False

    def allowed_instruments(self) -> tuple[int, ...]:
        pool = range(V.N_INSTRUMENTS) if self.instruments is None else self.instruments
        return tuple(sorted({i for i in pool if i != self.player_instrument}))

    def pitch_range(self, instrument: int) -> tuple[int, int]:
        for cls, low, high in self.pitch_ranges:
            if cls == instrument:
                return low, high
        return INSTRUMENTS[instrument].low, INSTRUMENTS[instrument].high

    def static_mask(self, now: bool = False) -> np.ndarray:
        """Boolean (vocab,) array: True where a token may be generated at all. now: only note-ons (notes that
        start at the current time: no time shift, velocity change, pedal or end of piece); note-offs of sounding
        engine notes are added per step by dynamic_mask either way."""
        allowed = np.zeros(V.VOCAB_SIZE, dtype=bool)
        o = V.OFFSETS
        allowed[o["time"] : o["time"] + V.MAX_SHIFT_STEPS] = not now
        allowed[o["velocity"] : o["velocity"] + V.VELOCITY_BINS] = not now
        allowed[V.EOS] = self.allow_eos and not now
        pitches = np.arange(V.N_PITCHES)
        in_scale = np.isin(pitches % 12, self.scale if self.scale is not None else range(12))
        for inst in self.allowed_instruments():
            low, high = self.pitch_range(inst)
            ok = (pitches >= low) & (pitches <= high) & (in_scale | (inst == DRUMS))
            start = V.note_on_token(inst, 0)
            allowed[start : start + V.N_PITCHES] = ok
            allowed[V.pedal_token(inst, True)] = allowed[V.pedal_token(inst, False)] = not now
        return allowed


def additive(allowed: np.ndarray) -> np.ndarray:
    """A boolean mask as an additive float32 mask: 0 where allowed, -inf elsewhere."""
    return np.where(allowed, np.float32(0), np.float32(-np.inf))


class MaskedOut(ValueError):
    """The constraints leave no token to sample at this step."""


_NOTE_ONS = slice(V.OFFSETS["note_on"], V.OFFSETS["note_on"] + V.N_INSTRUMENTS * V.N_PITCHES)


def dynamic_mask(static: np.ndarray, held: Iterable[tuple[int, int]], sounding: int,
                 max_polyphony: int | None, struck: Iterable[tuple[int, int]] = ()) -> np.ndarray:
    """Additive float32 mask for one step: `static` (additive, from static_mask) plus note-offs for the `held`
    (class, pitch) engine notes only, no note-on for a `struck` (class, pitch) that the engine is sounding
    already (one channel cannot sound one key twice: a MIDI note-off would end both), and no note-on at all when
    `sounding` >= max_polyphony. Returns `static` itself when nothing changes (do not modify the result)."""
    cap = max_polyphony is not None and sounding >= max_polyphony
    held, struck = list(held), list(struck)
    if not held and not struck and not cap:
        return static
    mask = static.copy()
    if held:
        base = V.OFFSETS["note_off"]
        mask[[base + inst * V.N_PITCHES + pitch for inst, pitch in held]] = 0.0
    if struck:
        base = V.OFFSETS["note_on"]
        mask[[base + inst * V.N_PITCHES + pitch for inst, pitch in struck]] = -np.inf
    if cap:
        mask[_NOTE_ONS] = -np.inf
    return mask


class Sampler:
    """Draws tokens from logits with a SamplingConfig and its own seeded generator (numpy PCG64)."""

    def __init__(self, config: SamplingConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def probabilities(self, logits: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The filtered distribution: (candidate token ids, their probabilities summing to 1), float64."""
        c = self.config
        z = logits if mask is None else logits + mask
        ids = np.flatnonzero(z > -np.inf)
        if ids.size == 0:
            raise MaskedOut("every token is masked: the constraints leave nothing to generate")
        z = z[ids].astype(np.float64)
        if c.temperature == 0:
            return ids[[int(np.argmax(z))]], np.ones(1)
        z /= c.temperature
        if 0 < c.top_k < z.size:
            keep = np.argpartition(-z, c.top_k - 1)[: c.top_k]
            ids, z = ids[keep], z[keep]
        p = np.exp(z - z.max())
        p /= p.sum()
        if c.top_p < 1.0:
            # Tokens below (1 - top_p) / n hold less than 1 - top_p together: the nucleus lies above them.
            head = p >= (1.0 - c.top_p) / p.size
            ids, p = ids[head], p[head]
            order = np.argsort(-p, kind="stable")  # most probable first (ties: lower id first)
            ids, p = ids[order], p[order]
            cut = int(np.searchsorted(np.cumsum(p), c.top_p)) + 1  # smallest prefix reaching top_p
            ids, p = ids[:cut], p[:cut]
        if c.min_p > 0.0:
            keep = p >= c.min_p * p.max()
            ids, p = ids[keep], p[keep]
        return ids, p / p.sum()

    def sample(self, logits: np.ndarray, mask: np.ndarray | None = None) -> int:
        """One token id drawn from the filtered distribution."""
        ids, p = self.probabilities(logits, mask)
        if ids.size == 1:
            return int(ids[0])
        i = int(np.searchsorted(np.cumsum(p), self.rng.random(), side="right"))
        return int(ids[min(i, ids.size - 1)])


def log_prob(logits: np.ndarray, mask: np.ndarray | None, token: int) -> float:
    """Log-probability of `token` under the masked model distribution at temperature 1 (best-of-N scoring)."""
    z = (logits if mask is None else logits + mask).astype(np.float64)
    zmax = z.max()
    return float(z[token] - zmax - np.log(np.sum(np.exp(z - zmax))))
