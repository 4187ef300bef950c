"""Score analysis for the performer (export/perform.py): the notated notes in quarter notes, the metre grid and
metrical weights, the melody (skyline), rests, phrases and harmony changes.

Pure, deterministic functions of the notated input: the performer's randomness lives in perform.py. Positions
are in quarter notes from the start of the file, through the file's tempo map (so a tempo change never moves a
bar line); EPS_Q is the distance below which two positions are the same.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.instruments import DRUM_CHANNEL
from musebridge.engine.tokens.midifile import Conductor, MetreChange, notes_from_events

EPS_Q = 1e-6  # quarter notes: positions closer than this are simultaneous
REST_Q = 0.125  # quarter notes: a silence in every voice at least this long is a rest (a 32nd note)


@dataclass(frozen=True)
class Clock:
    """The tempo map as knots of a piecewise-linear map between seconds and quarter notes."""

    seconds: np.ndarray
    quarters: np.ndarray

    def to_quarters(self, seconds) -> np.ndarray:
        return np.interp(seconds, self.seconds, self.quarters)

    def to_seconds(self, quarters) -> np.ndarray:
        return np.interp(quarters, self.quarters, self.seconds)


def make_clock(conductor: Conductor, end_s: float) -> Clock:
    """Knots at every tempo change, and one far beyond `end_s` (seconds) so nothing is clamped."""
    times = sorted({0.0, *(c.time for c in conductor.tempos if c.time < end_s)})
    times.append(max(end_s, times[-1]) + 3600.0)
    return Clock(np.array(times), np.array([conductor.quarters_at(t) for t in times]))


@dataclass(frozen=True)
class Score:
    """Notated notes sorted by (start, pitch): start and end in quarter notes, MIDI pitch, written velocity,
    MIDI channel (the voice, for a file with a track per part). onsets: the distinct start positions (quarters);
    group: each note's index in onsets. Unisons (same pitch, same start) are one key on a piano: kept once."""

    start: np.ndarray
    end: np.ndarray
    pitch: np.ndarray
    velocity: np.ndarray
    channel: np.ndarray
    onsets: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return len(self.start)


def read_score(events: Sequence[Timed], clock: Clock) -> Score:
    """The non-drum notes of timed messages (seconds) as a Score."""
    notes = [n for n in notes_from_events(events) if n.channel != DRUM_CHANNEL]
    start = clock.to_quarters(np.array([n.start for n in notes], float))
    end = np.maximum(clock.to_quarters(np.array([n.end for n in notes], float)), start + EPS_Q)
    pitch = np.array([n.pitch for n in notes], int)
    key = np.round(start / EPS_Q).astype(np.int64)
    order = np.lexsort((-end, pitch, key))  # by start, pitch, longest first
    keep = np.ones(len(order), bool)
    keep[1:] = (key[order][1:] != key[order][:-1]) | (pitch[order][1:] != pitch[order][:-1])
    order = order[keep]
    onsets_key, group = np.unique(key[order], return_inverse=True)
    first = np.searchsorted(key[order], onsets_key)
    return Score(
        start=start[order],
        end=end[order],
        pitch=pitch[order],
        velocity=np.array([n.velocity for n in notes], int)[order],
        channel=np.array([n.channel for n in notes], int)[order],
        onsets=start[order][first],
        group=group,
    )


@dataclass(frozen=True)
class MetreGrid:
    """Bars in quarter notes. start: each bar's start, plus one more entry (the end of the last bar). full: the
    length of a whole bar of the bar's metre; offset: where the bar starts within a whole bar (a pickup bar,
    shorter than the bar after it, is the end of a whole bar: its offset is the missing part); beat: the felt beat
    (the denominator's note, or a dotted one in compound metres such as 6/8); sub: its half, or its third in
    compound metres."""

    start: np.ndarray
    full: np.ndarray
    offset: np.ndarray
    beat: np.ndarray
    sub: np.ndarray

    def bar_of(self, q) -> np.ndarray:
        return np.clip(np.searchsorted(self.start, np.asarray(q) + EPS_Q, "right") - 1, 0, len(self.full) - 1)

    def bar_start(self, index: int) -> float:
        """The start of bar `index` (quarters); past the last bar, the end of the last bar."""
        return float(self.start[min(index, len(self.start) - 1)])


def metre_grid(conductor: Conductor, clock: Clock, first_q: float, end_q: float) -> MetreGrid:
    """The bars of the file's metre up to `end_q`; without any time signature, 4/4 from the first note."""
    if not conductor.metres:
        conductor = Conductor(conductor.tempos, (MetreChange(float(clock.to_seconds(first_q)), 4, 4),))
    bars = conductor.bars(float(clock.to_seconds(end_q)) + 1e-6) or [(0.0, 4, 4)]
    start = clock.to_quarters(np.array([b[0] for b in bars]))
    num = np.array([b[1] for b in bars], float)
    den = np.array([b[2] for b in bars], float)
    full = 4.0 * num / den
    compound = (den >= 8) & (num % 3 == 0) & (num > 3)
    beat = np.where(compound, 12.0 / den, 4.0 / den)
    sub = np.where(compound, 4.0 / den, 2.0 / den)
    start = np.append(start, max(start[-1] + full[-1], end_q + EPS_Q))
    offset = np.zeros(len(full))
    if len(full) > 1 and start[1] - start[0] < full[1] - EPS_Q:  # a pickup: the end of a bar of the next metre
        full[0], beat[0], sub[0] = full[1], beat[1], sub[1]
        offset[0] = full[1] - (start[1] - start[0])
    return MetreGrid(start, full, offset, beat, sub)


def metric_weight(grid: MetreGrid, q: np.ndarray) -> np.ndarray:
    """Metrical weight of positions (quarters): 1 downbeat, 0.5 the middle of a bar of 4, 6, 8 ... beats
    (beat 3 of 4/4, the second dotted quarter of 6/8 ... of 12/8), 0.25 other beats, 0.1 half or third beats,
    0 below (Lerdahl & Jackendoff's metrical hierarchy, flattened to four levels)."""
    i = grid.bar_of(q)
    full, beat = grid.full[i], grid.beat[i]
    pos = np.mod(q - grid.start[i] + grid.offset[i], full)
    tol = 1e-4

    def on(unit):
        return np.abs(pos / unit - np.round(pos / unit)) * unit < tol

    beats = np.round(full / beat)
    k = np.round(pos / beat)
    weight = np.where(on(grid.sub[i]), 0.1, 0.0)
    weight = np.where(on(beat), 0.25, weight)
    weight = np.where(on(beat) & (beats % 2 == 0) & (beats >= 4) & (k == beats / 2), 0.5, weight)
    return np.where((pos < tol) | (full - pos < tol), 1.0, weight)


def melody_mask(score: Score) -> np.ndarray:
    """The skyline: at each onset, its highest note, unless a higher note started earlier is still sounding
    (then the onset is inner voices moving under a held melody note)."""
    melody = np.zeros(len(score), bool)
    held: list[tuple[int, float]] = []  # (-pitch, end) of the notes sounding, highest first
    bounds = np.searchsorted(score.group, np.arange(len(score.onsets) + 1))
    for g, q in enumerate(score.onsets):
        while held and held[0][1] <= q + EPS_Q:
            heapq.heappop(held)  # lazily: only the highest has to be current
        lo, hi = bounds[g], bounds[g + 1]
        top = lo + int(np.argmax(score.pitch[lo:hi]))
        if not held or score.pitch[top] >= -held[0][0]:
            melody[top] = True
        for j in range(lo, hi):
            heapq.heappush(held, (-int(score.pitch[j]), float(score.end[j])))
    return melody


def sounding(score: Score) -> np.ndarray:
    """How many notes sound at each onset position (those starting there included)."""
    at = score.onsets + EPS_Q
    return np.searchsorted(score.start, at, "right") - np.searchsorted(np.sort(score.end), at, "right")


def rests(score: Score, min_q: float = REST_Q) -> list[tuple[float, float]]:
    """(start, end) in quarters of every silence in all voices at least `min_q` long."""
    if not len(score):
        return []
    sounding_until = np.maximum.accumulate(score.end)
    gap = score.start[1:] - sounding_until[:-1]
    return [(float(sounding_until[i]), float(score.start[i + 1])) for i in np.flatnonzero(gap >= min_q)]


def breath_points(score: Score, grid: MetreGrid, melody: np.ndarray, long_note: float) -> np.ndarray:
    """Positions (quarters) where a phrase may end: the onset after a rest, and the onset after a long melody
    note (at least `long_note` times the piece's median melody inter-onset interval, and at least a beat)."""
    points = [end for _, end in rests(score)]
    mel_start = score.start[melody]
    ioi = np.diff(mel_start)
    median = float(np.median(ioi[ioi > EPS_Q])) if np.any(ioi > EPS_Q) else 1.0
    dur = score.end - score.start
    long = melody & (dur >= np.maximum(long_note * median, grid.beat[grid.bar_of(score.start)]) - EPS_Q)
    after = np.searchsorted(score.onsets, score.end[long] - EPS_Q)
    points += [float(score.onsets[i]) for i in after if i < len(score.onsets)]
    return np.unique(np.array(points, float))


def phrase_bounds(score: Score, grid: MetreGrid, breaths: np.ndarray, phrase_quarters: float) -> np.ndarray:
    """Phrase boundaries (quarters) from the first onset to the last note's end. A phrase lasts 1 to 4 bars:
    it ends at the breath point nearest to its nominal length (`phrase_quarters` rounded to 2, 3 or 4 whole
    bars), else on that bar line; a pickup bar belongs to the phrase it leads into."""
    first, stop = float(score.onsets[0]), float(score.end.max())
    bounds, s = [first], first
    while True:
        i = int(grid.bar_of(s))
        base = i + 1 if grid.offset[i] > EPS_Q else i
        n_bars = int(np.clip(round(phrase_quarters / grid.full[i]), 2, 4))
        nominal = max(grid.bar_start(base + n_bars), s + grid.full[i])
        lo, hi = s + grid.full[i] - EPS_Q, max(grid.bar_start(base + 4), nominal) + EPS_Q
        near = breaths[(breaths >= lo) & (breaths <= hi)]
        e = float(near[np.argmin(np.abs(near - nominal))]) if len(near) else nominal
        if e >= stop - grid.full[int(grid.bar_of(min(e, stop)))] + EPS_Q:
            bounds.append(stop)
            return np.array(bounds)
        bounds.append(e)
        s = e


def _windows(score: Score, grid: MetreGrid, clock: Clock, min_s: float) -> np.ndarray:
    """Boundaries (quarters) of the windows whose pitch content is compared: each beat, or each half bar (a
    whole bar in odd metres) where a beat lasts less than `min_s` score seconds, or each bar; plus the rests'
    edges, so that no window spans the start or the end of a rest."""
    first, stop = float(score.onsets[0]), float(score.end.max())
    points = [first, stop]
    for i in range(int(grid.bar_of(first)), int(grid.bar_of(stop)) + 1):
        a, b, full = grid.start[i], grid.start[i + 1], grid.full[i]
        unit = grid.beat[i]
        if clock.to_seconds(a + unit) - clock.to_seconds(a) < min_s:
            unit = full / 2 if round(full / unit) % 2 == 0 else full
        if clock.to_seconds(a + unit) - clock.to_seconds(a) < min_s:
            unit = full
        k0 = np.ceil((grid.offset[i] - EPS_Q) / unit)
        pos = a + np.arange(k0, np.ceil(full / unit) + 1) * unit - grid.offset[i]
        points += list(pos[pos < b - EPS_Q])
    for rest in rests(score):
        points += list(rest)
    points = np.unique(np.round(np.array(points) / EPS_Q) * EPS_Q)
    return points[(points >= first - EPS_Q) & (points <= stop + EPS_Q)]


def _profile(score: Score, idx: np.ndarray, a: float, b: float) -> np.ndarray:
    """Pitch-class profile of notes `idx` between a and b (quarters): how long each pitch class sounds."""
    overlap = np.minimum(score.end[idx], b) - np.maximum(score.start[idx], a)
    return np.bincount(score.pitch[idx] % 12, np.maximum(overlap, 0.0), 12)


def _templates() -> np.ndarray:
    """Chord templates (Pardo & Birmingham 2002): +1 on a chord's pitch classes, -1 elsewhere, for the major,
    minor and diminished triads on each of the 12 roots."""
    rows = []
    for intervals in ((0, 4, 7), (0, 3, 7), (0, 3, 6)):
        for root in range(12):
            row = -np.ones(12)
            row[[(root + i) % 12 for i in intervals]] = 1.0
            rows.append(row)
    return np.array(rows)


TEMPLATES = _templates()


def _changed(score: Score, harmony: np.ndarray, idx: np.ndarray, window: np.ndarray, a: float,
             margin: float) -> bool:
    """Whether a window (pitch-class profile `window` of notes `idx`, starting at `a`) brings a new harmony:
    the chord that fits the harmony so far (its profile `harmony`) explains the window worse than the best chord
    by more than `margin` of the window's sound, or the bass moves, at this window, to a pitch class outside it."""
    chord = TEMPLATES[int(np.argmax(TEMPLATES @ harmony))]
    fit = TEMPLATES @ window
    if fit.max() - chord @ window > margin * window.sum():
        return True
    low = idx[np.argmin(score.pitch[idx])]
    return bool(score.start[low] >= a - EPS_Q and chord[score.pitch[low] % 12] < 0)


def harmony_segments(score: Score, grid: MetreGrid, clock: Clock, min_s: float, margin: float
                     ) -> list[tuple[float, float, bool]]:
    """Spans of one harmony: (start, end, ends at a harmony change) in quarters. A span starts at the first onset
    of its harmony and ends at the next harmony's first onset (True), or where a rest or the piece begins (False).
    Harmonies are compared window by window (see _windows) by their pitch-class content, through chord
    templates, so that an arpeggio or a passing note within one chord is not a change."""
    windows = _windows(score, grid, clock, min_s)
    longest = float((score.end - score.start).max())
    segments: list[tuple[float, float, bool]] = []
    start: float | None = None
    harmony = np.zeros(12)
    for a, b in zip(windows[:-1], windows[1:], strict=True):
        lo = np.searchsorted(score.start, a - longest - EPS_Q)
        hi = np.searchsorted(score.start, b - EPS_Q)
        idx = lo + np.flatnonzero(score.end[lo:hi] > a + EPS_Q)
        new = idx[score.start[idx] >= a - EPS_Q]
        if not len(idx):  # a rest: no pedal across it
            if start is not None:
                segments.append((start, float(a), False))
            start = None
        elif start is None:
            start, harmony = float(a), _profile(score, idx, a, b)
        elif len(new) and _changed(score, harmony, idx, _profile(score, idx, a, b), a, margin):
            change = float(score.start[new].min())
            segments.append((start, change, True))
            start, harmony = change, _profile(score, idx, change, b)
        else:
            harmony = harmony + _profile(score, idx, a, b)
    if start is not None:
        segments.append((start, float(score.end.max()), False))
    return segments
