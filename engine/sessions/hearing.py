"""What the engine hears in a reference part (the player's notes, or a prompt): its key profile, register,
dynamics, density, texture, pulse and pedalling, from its last note-ons on the timeline (timeline.py `Onset`).
follow.py steers the engine's choices toward it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tokens import vocab as V
from ..tokens.instruments import DRUMS
from .timeline import Onset

KEY_HALF_LIFE_S = 8.0  # a note's weight in the key estimate halves every this many seconds
CHORD_STEPS = 3  # onsets this close (grid steps) are one event
MIN_PULSE_STEPS = 5  # inter-onset intervals shorter than this (grid steps) are ornaments, not the pulse
PEDAL_WINDOW_S = 8.0  # pedal presses per second are counted over at least this many seconds


@dataclass(frozen=True)
class Heard:
    """What the follower hears in the reference: key, pitch centre, low and high notes (MIDI: the 10th and 90th
    percentiles), velocity bin, onsets per second, notes sounding at once, its pulse: the median inter-onset
    interval and the last onset (grid steps; period 0 when unknown), and its pedal presses per second."""

    key: tuple[int, str] | None
    centre: float
    low: float
    high: float
    vel_bin: float
    rate: float
    polyphony: float
    period: int = 0
    last: int = 0
    pedal_rate: float = 0.0


def hear(notes: list[Onset], step: int, pedals: tuple[int, ...] = ()) -> tuple[Heard, np.ndarray] | None:
    """Describe reference notes at grid `step` (and the reference's pedal presses, grid steps), and their
    recency-weighted pitch-class profile (None when there are fewer than 2 pitched notes). The key is left for
    the Follower to decide (hysteresis)."""
    pitched = [o for o in notes if o.cls != DRUMS]
    if len(pitched) < 2:
        return None
    profile = np.zeros(12)
    for o in pitched:
        profile[o.pitch % 12] += (o.vel_bin + 1) * 0.5 ** ((step - o.step) * V.GRID_S / KEY_HALF_LIFE_S)
    pitches = np.array([o.pitch for o in pitched], float)
    onsets = merged_onsets(notes)
    span = max((onsets[-1] - onsets[0]) * V.GRID_S, V.GRID_S)
    gaps = [b - a for a, b in zip(onsets, onsets[1:], strict=False) if b - a >= MIN_PULSE_STEPS]
    pitches.sort()
    heard = Heard(key=None, centre=float(pitches.mean()), low=percentile(pitches, 10),
                  high=percentile(pitches, 90),
                  vel_bin=float(np.mean([o.vel_bin for o in notes[-8:]])),
                  rate=(len(onsets) - 1) / span if len(onsets) > 1 else 0.0,
                  polyphony=_polyphony(notes),
                  period=int(np.median(gaps)) if len(gaps) >= 2 else 0, last=onsets[-1],
                  pedal_rate=sum(p >= notes[0].step for p in pedals) / max((step - notes[0].step) * V.GRID_S,
                                                                          PEDAL_WINDOW_S))
    return heard, profile


def percentile(ordered: np.ndarray, q: float) -> float:
    """The q-th percentile (0-100) of sorted values, interpolated linearly as np.percentile does by default.
    Not np.percentile itself: its first call imports numpy.ma (12 ms), which the player's first answer would
    pay."""
    position = q / 100 * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return float(ordered[below] + (ordered[above] - ordered[below]) * (position - below))


def merged_onsets(notes: list[Onset]) -> list[int]:
    """Onset steps, a chord's spread (a played chord is not struck at one instant) counted once."""
    out: list[int] = []
    for step in sorted({o.step for o in notes}):
        if not out or step - out[-1] > CHORD_STEPS:
            out.append(step)
    return out


def _polyphony(notes: list[Onset]) -> float:
    """Mean over onset steps of the notes sounding once the step's notes have started."""
    at: dict[int, int] = {}
    for o in notes:
        at[o.step] = max(at.get(o.step, 0), o.sounding + 1)
    return float(np.mean(list(at.values())))
