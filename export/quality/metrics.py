"""The quality figures: pure functions of notes (engine.midifile.Note: seconds, MIDI pitch and velocity).

Each figure says something a player hears, and each is computed the same way for the model's output, for the
real music on the same prompt (the ceiling) and for another piece's real music (chance):

- in-key share: the share of notes whose pitch class is among the reference's 7 most used (duration-weighted);
  a diatonic piece gives 1.0, a uniform choice of pitch classes 7/12;
- polyphony: notes sounding at once, averaged over the time anything sounds;
- silence: the share of a span in which nothing sounds;
- long notes: the share of notes that last more than LONG_S seconds;
- never released: the share of note-ons that no note-off ends (`never_released`, on timed messages);
- inter-onset intervals: a histogram over log-spaced bins, compared by overlap (1.0: the same distribution);
- density (onsets per second), register (mean pitch), dynamics (mean velocity): correlated across prompts to tell
  whether a continuation follows its prompt;
- consonance: of the pairs of a melody note and an accompaniment note sounding together, the share (weighted by
  the time they overlap) at a consonant interval (unison, thirds, fourth, fifth, sixths, octaves);
- onset alignment: the share of accompaniment onsets within ALIGN_S of a melody onset;
- dissonance: of the pairs of a part's own notes sounding together, the share (weighted by the time they
  overlap) at a dissonant interval (seconds, tritone, sevenths): clusters and clashes in what one player plays.
Drum notes (MIDI channel 10) have no pitch class: they are left out of every pitch figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from musebridge.engine.tokens.instruments import DRUM_CHANNEL
from musebridge.engine.tokens.midifile import Note

LONG_S = 4.0  # a note longer than this, in seconds, "rings on"
ALIGN_S = 0.05  # onsets this close, in seconds, count as together
CHORD_S = 0.03  # onsets this close are one event when measuring inter-onset intervals
GRID_S = 0.01  # time resolution of the polyphony and silence figures, seconds
CONSONANT = frozenset({0, 3, 4, 5, 7, 8, 9})  # interval classes, semitones mod 12
IOI_BINS = np.geomspace(0.02, 4.0, 17)  # seconds; shorter and longer intervals fall into the end bins


def pitched(notes: Iterable[Note]) -> list[Note]:
    """The notes that have a pitch class (not drums)."""
    return [n for n in notes if n.channel != DRUM_CHANNEL]


def pitch_class_profile(notes: Sequence[Note]) -> np.ndarray:
    """(12,) duration-weighted pitch-class histogram, summing to 1 (zeros when there are no pitched notes)."""
    profile = np.zeros(12)
    for n in pitched(notes):
        profile[n.pitch % 12] += max(n.end - n.start, GRID_S)
    total = profile.sum()
    return profile / total if total else profile


def in_key_share(notes: Sequence[Note], reference: Sequence[Note], size: int = 7) -> float:
    """Share of `notes` (counted) whose pitch class is among the `size` most used of `reference`."""
    notes = pitched(notes)
    profile = pitch_class_profile(reference)
    if not notes or not profile.any():
        return float("nan")
    key = set(np.argsort(-profile, kind="stable")[:size].tolist())
    return sum(n.pitch % 12 in key for n in notes) / len(notes)


def _sounding(notes: Sequence[Note], start: float, end: float) -> np.ndarray:
    """Notes sounding at each GRID_S step of [start, end)."""
    steps = max(1, int(round((end - start) / GRID_S)))
    delta = np.zeros(steps + 1)
    for n in notes:
        a = int(round((max(n.start, start) - start) / GRID_S))
        b = int(round((min(n.end, end) - start) / GRID_S))
        if b > a >= 0:
            delta[min(a, steps)] += 1
            delta[min(b, steps)] -= 1
    return np.cumsum(delta)[:steps]


def polyphony(notes: Sequence[Note], start: float, end: float) -> float:
    """Mean number of notes sounding at once over the part of [start, end) seconds in which any sounds."""
    sounding = _sounding(notes, start, end)
    busy = sounding[sounding > 0]
    return float(busy.mean()) if busy.size else 0.0


def silence_share(notes: Sequence[Note], start: float, end: float) -> float:
    """Share of [start, end) seconds in which no note sounds."""
    if end <= start:
        return float("nan")
    return float(np.mean(_sounding(notes, start, end) == 0))


def long_share(notes: Sequence[Note], limit: float = LONG_S) -> float:
    """Share of notes that last longer than `limit` seconds."""
    if not notes:
        return float("nan")
    return sum(n.end - n.start > limit for n in notes) / len(notes)


def never_released(events, start: float = 0.0, end: float = float("inf")) -> float:
    """Share of the note-ons at times in [start, end] seconds that no later note-off (or note-on at velocity 0,
    or all-notes-off) of the same channel and pitch ends. `events`: (time s, mido message) pairs in time order."""
    held: dict[tuple[int, int], list[bool]] = {}
    opened = 0
    for time_s, msg in events:
        key = (getattr(msg, "channel", 0), getattr(msg, "note", -1))
        if msg.type == "note_on" and msg.velocity > 0:
            counted = start <= time_s <= end
            opened += counted
            held.setdefault(key, []).append(counted)
        elif msg.type in ("note_on", "note_off") and held.get(key):
            held[key].pop(0)
        elif msg.type == "control_change" and msg.control in (120, 123):
            for k in [k for k in held if k[0] == msg.channel]:
                del held[k]
    hanging = sum(sum(flags) for flags in held.values())
    return hanging / opened if opened else float("nan")


def onsets(notes: Sequence[Note], merge: float = CHORD_S) -> np.ndarray:
    """Sorted onset times (seconds), onsets within `merge` of the previous one merged into it."""
    times = np.sort(np.array([n.start for n in notes]))
    if times.size == 0:
        return times
    keep = np.concatenate(([True], np.diff(times) > merge))
    return times[keep]


def ioi_histogram(notes: Sequence[Note]) -> np.ndarray:
    """Histogram of inter-onset intervals over IOI_BINS (log-spaced, seconds), summing to 1 (zeros: < 2 onsets)."""
    gaps = np.diff(onsets(notes))
    if gaps.size == 0:
        return np.zeros(len(IOI_BINS) - 1)
    counts, _ = np.histogram(np.clip(gaps, IOI_BINS[0], IOI_BINS[-1] * 0.999), IOI_BINS)
    return counts / counts.sum()


def overlap(p: np.ndarray, q: np.ndarray) -> float:
    """Histogram overlap: sum of the bin-wise minimum of two distributions (1: identical, 0: disjoint)."""
    if not p.any() or not q.any():
        return float("nan")
    return float(np.minimum(p, q).sum())


def density(notes: Sequence[Note], span: float) -> float:
    """Onsets (chords counted once) per second over a span of `span` seconds."""
    return len(onsets(notes)) / span if span > 0 else float("nan")


def register(notes: Sequence[Note]) -> float:
    """Mean MIDI pitch of the pitched notes (the pitch centre)."""
    notes = pitched(notes)
    return float(np.mean([n.pitch for n in notes])) if notes else float("nan")


def dynamics(notes: Sequence[Note]) -> float:
    """Mean MIDI velocity."""
    return float(np.mean([n.velocity for n in notes])) if notes else float("nan")


def correlation(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation over the pairs where both are numbers (nan with fewer than 3 or no variance)."""
    x, y = np.asarray(xs, float), np.asarray(ys, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def consonance(melody: Sequence[Note], accompaniment: Sequence[Note]) -> float:
    """Share of the time melody/accompaniment note pairs sound together at a consonant interval class."""
    mel, acc = pitched(melody), pitched(accompaniment)
    good = total = 0.0
    starts = np.array([m.start for m in mel])
    order = np.argsort(starts)
    mel = [mel[i] for i in order]
    starts = starts[order]
    longest = max((m.end - m.start for m in mel), default=0.0)
    for a in acc:
        lo = np.searchsorted(starts, a.start - longest, side="left")
        hi = np.searchsorted(starts, a.end, side="left")
        for m in mel[lo:hi]:
            shared = min(m.end, a.end) - max(m.start, a.start)
            if shared > 0:
                total += shared
                good += shared * (abs(m.pitch - a.pitch) % 12 in CONSONANT)
    return good / total if total else float("nan")


def interval_classes(notes: Sequence[Note]) -> np.ndarray:
    """(12,) share of the time pairs of the pitched notes sound together at each interval class (zeros when no
    two notes overlap: a single line)."""
    shares = np.zeros(12)
    active: list[Note] = []
    for n in sorted(pitched(notes), key=lambda n: n.start):
        active = [a for a in active if a.end > n.start]
        for a in active:
            shares[abs(a.pitch - n.pitch) % 12] += min(a.end, n.end) - n.start
        active.append(n)
    total = shares.sum()
    return shares / total if total > 0 else shares


def dissonance(notes: Sequence[Note]) -> float:
    """Share of the time pairs of the notes sound together at a dissonant interval class (not in CONSONANT); NaN
    when no two notes overlap."""
    shares = interval_classes(notes)
    if not shares.any():
        return float("nan")
    return float(sum(shares[i] for i in range(12) if i not in CONSONANT))


def onset_alignment(melody: Sequence[Note], accompaniment: Sequence[Note], tolerance: float = ALIGN_S) -> float:
    """Share of accompaniment onsets (chords counted once) within `tolerance` seconds of a melody onset."""
    mel, acc = onsets(melody), onsets(accompaniment)
    if mel.size == 0 or acc.size == 0:
        return float("nan")
    idx = np.clip(np.searchsorted(mel, acc), 1, mel.size - 1) if mel.size > 1 else np.zeros(acc.size, int)
    nearest = np.minimum(np.abs(acc - mel[idx]), np.abs(acc - mel[np.maximum(idx - 1, 0)]))
    return float(np.mean(nearest <= tolerance + 1e-9))


def pedal_presses_per_minute(events, span: float) -> float:
    """Sustain-pedal presses (control 64 crossing to >= 64) per minute over a span of `span` seconds."""
    down: dict[int, bool] = {}
    presses = 0
    for _, msg in events:
        if msg.type == "control_change" and msg.control == 64:
            now = msg.value >= 64
            presses += now and not down.get(msg.channel, False)
            down[msg.channel] = now
    return presses * 60.0 / span if span > 0 else float("nan")
