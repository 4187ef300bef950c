"""Chords for a melody: key finding, chord fitting and a diatonic harmonizer. Pure numpy.

Notes are float arrays of shape (n, 3): start and end in quarter notes, MIDI pitch. Spans of time are in quarter
notes too. Three ways to chords, used by the band parts (export/band.py, docs/corpus.md "Band parts"):
- fit_chord: the triad or seventh chord that best matches the pitch classes sounding in a span (a part realizing
  the score's chord symbols, or the other voices of a chorale);
- estimate_key: Krumhansl-Schmuckler key finding on the duration-weighted pitch-class histogram, the last note
  counting as a hint for the tonic (folk tunes end on it);
- harmonize: per slot (a bar or half a bar) one of the key's chords (I, ii, IV, V, V7, vi ...), covering the most
  melody duration, notes on strong beats weighing more, with a cadence at the end; chosen over the whole piece at
  once (Viterbi), so that strong progressions (V - I, ii - V) win where the melody allows them.
metre_of says how a time signature's beats are counted (bars, half bars and beats of the slots).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PITCH_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Chord qualities as intervals above the root, named as mma (and most lead sheets) spell them.
QUALITIES: dict[str, tuple[int, ...]] = {
    "": (0, 4, 7),
    "m": (0, 3, 7),
    "dim": (0, 3, 6),
    "7": (0, 4, 7, 10),
    "m7": (0, 3, 7, 10),
    "maj7": (0, 4, 7, 11),
    "m7b5": (0, 3, 6, 10),
}
# How rare each quality is in the music fitted: a small handicap, so that a plain triad wins a tie.
QUALITY_COST = {"": 0.0, "m": 0.0, "7": 0.03, "m7": 0.05, "dim": 0.06, "maj7": 0.08, "m7b5": 0.08}
# Krumhansl-Kessler key profiles (probe-tone ratings), tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor with the leading tone
# The harmonizer's chords: (semitones above the tonic, quality, how common). A chord with a tone outside the
# scale (bVII, II, IV in minor) is offered only when the melody sings that tone.
MAJOR_CHORDS = ((0, "", 1.0), (7, "", 0.8), (5, "", 0.8), (7, "7", 0.7), (9, "m", 0.5), (2, "m", 0.5),
                (4, "m", 0.2), (10, "", 0.3), (2, "", 0.3))
MINOR_CHORDS = ((0, "m", 1.0), (7, "", 0.8), (5, "m", 0.7), (7, "7", 0.7), (3, "", 0.6), (8, "", 0.5),
                (10, "", 0.6), (7, "m", 0.4), (5, "", 0.3))
EPS = 1e-6


@dataclass(frozen=True)
class Chord:
    """A chord: root pitch class 0-11 (0 is C) and a quality of QUALITIES."""

    root: int
    quality: str = ""

    @property
    def name(self) -> str:
        """The chord symbol as mma reads it: "C", "F#m", "G7", "Bdim", "Ebmaj7"."""
        return PITCH_NAMES[self.root] + self.quality

    @property
    def pcs(self) -> tuple[int, ...]:
        """Its pitch classes, root first."""
        return tuple((self.root + i) % 12 for i in QUALITIES[self.quality])


@dataclass(frozen=True)
class Key:
    """A key: tonic pitch class 0-11 and mode."""

    tonic: int
    minor: bool

    @property
    def name(self) -> str:
        return f"{PITCH_NAMES[self.tonic]} {'minor' if self.minor else 'major'}"


@dataclass(frozen=True)
class Slot:
    """A span of quarter notes that gets one chord. bar_start: it begins a bar (a chord change there is free;
    inside a bar it costs a little, so chords change at bar lines unless the melody asks otherwise)."""

    start: float
    end: float
    bar_start: bool = True


def pc_weights(notes: np.ndarray, start: float, end: float, beat_q: float = 0.0) -> np.ndarray:
    """12 weights: for each pitch class, the quarter notes it sounds within [start, end). With beat_q > 0, a
    note that starts at `start` counts twice and one that starts on another beat 1.5 times (strong beats)."""
    if len(notes) == 0:
        return np.zeros(12)
    s, e = notes[:, 0], notes[:, 1]
    weight = np.clip(np.minimum(e, end) - np.maximum(s, start), 0.0, None)
    if beat_q > 0:
        phase = (s - start) / beat_q
        on_beat = (np.abs(phase - np.round(phase)) < EPS) & (s >= start - EPS)
        weight = weight * np.where(np.abs(s - start) < EPS, 2.0, np.where(on_beat, 1.5, 1.0))
    return np.bincount(notes[:, 2].astype(int) % 12, weights=weight, minlength=12)[:12]


def estimate_key(notes: np.ndarray) -> Key:
    """Krumhansl-Schmuckler: the key whose profile correlates best with the duration-weighted pitch-class
    histogram; a key whose tonic is the last note's pitch class gets a bonus of 0.15 (of a correlation)."""
    if len(notes) == 0:
        return Key(0, False)
    hist = pc_weights(notes, float(notes[:, 0].min()), float(notes[:, 1].max()))
    last = int(notes[np.argmax(notes[:, 0] + 1e-3 * notes[:, 1]), 2]) % 12
    best, best_score = Key(0, False), -np.inf
    for minor, profile in ((False, MAJOR_PROFILE), (True, MINOR_PROFILE)):
        for tonic in range(12):
            rotated = np.roll(profile, tonic)
            score = np.corrcoef(hist, rotated)[0, 1] if hist.std() > 0 else 0.0
            score += 0.15 * (tonic == last)
            if score > best_score:
                best, best_score = Key(tonic, minor), score
    return best


def fit_chord(weights: np.ndarray, bass_pc: int | None = None) -> Chord | None:
    """The chord (any root, any quality) that best explains 12 pitch-class weights: the weight of its tones
    minus 0.7 x the weight of other tones (as shares of the total), 0.08 per tone of the chord that does not
    sound (the fifth: 0.04), 0.12 when the lowest sounding pitch class is its root. None when nothing sounds."""
    total = float(weights.sum())
    if total <= EPS:
        return None
    share = weights / total
    best, best_score = None, -np.inf
    for quality, intervals in QUALITIES.items():
        for root in range(12):
            pcs = [(root + i) % 12 for i in intervals]
            inside = share[pcs].sum()
            missing = sum((0.04 if i == 7 else 0.08) for i, pc in zip(intervals, pcs, strict=True)
                          if share[pc] < 0.02)
            score = inside - 0.7 * (1.0 - inside) - missing - QUALITY_COST[quality]
            score += 0.12 * (bass_pc == root)
            if score > best_score + EPS:
                best, best_score = Chord(root, quality), score
    return best


def chords_from_voices(notes: np.ndarray, slots: list[Slot], beat_q: float = 0.0) -> list[Chord | None]:
    """fit_chord for each slot over every voice sounding in it; the bass is the lowest pitch sounding at the
    slot's start. A slot where nothing sounds keeps the chord before it (the first: the chord after it)."""
    chords: list[Chord | None] = []
    for slot in slots:
        weights = pc_weights(notes, slot.start, slot.end, beat_q)
        at_start = (notes[:, 0] <= slot.start + EPS) & (notes[:, 1] > slot.start + EPS)
        sounding = notes[at_start] if len(notes) else notes
        bass = int(sounding[:, 2].min()) % 12 if len(sounding) else None
        chords.append(fit_chord(weights, bass))
    return fill_gaps(chords)


def fill_gaps(chords: list[Chord | None]) -> list[Chord | None]:
    """Each None takes the chord before it; leading Nones take the first chord."""
    out, last = [], None
    for chord in chords:
        last = chord if chord is not None else last
        out.append(last)
    first = next((c for c in out if c is not None), None)
    return [c if c is not None else first for c in out]


def key_chords(key: Key, weights: np.ndarray) -> list[tuple[Chord, float]]:
    """The harmonizer's chords for a key, with how common each is; a chord with a tone outside the key's scale
    only when the melody sings that tone (3% of its weight or more)."""
    table, scale = (MINOR_CHORDS, MINOR_SCALE) if key.minor else (MAJOR_CHORDS, MAJOR_SCALE)
    total = max(float(weights.sum()), EPS)
    allowed = {(key.tonic + d) % 12 for d in scale} | {pc for pc in range(12) if weights[pc] / total >= 0.03}
    out = []
    for degree, quality, prior in table:
        chord = Chord((key.tonic + degree) % 12, quality)
        if set(chord.pcs) <= allowed:
            out.append((chord, prior))
    return out


def _fit_matrix(notes: np.ndarray, slots: list[Slot], chords: list[Chord], beat_q: float) -> np.ndarray:
    """(slots, chords): share of the slot's weighted melody in the chord minus the share outside it; 0 where
    the slot holds no melody."""
    member = np.zeros((len(chords), 12))
    for j, chord in enumerate(chords):
        member[j, list(chord.pcs)] = 1.0
    weights = np.array([pc_weights(notes, s.start, s.end, beat_q) for s in slots]).reshape(len(slots), 12)
    totals = weights.sum(axis=1, keepdims=True)
    inside = weights @ member.T / np.maximum(totals, EPS)
    return np.where(totals > EPS, 2.0 * inside - 1.0, 0.0)


def _transition(a: Chord, b: Chord, bar_start: bool) -> float:
    """Score of moving from chord a to chord b at a slot boundary."""
    if a == b:
        return 0.0
    score = 0.0 if bar_start else -0.25
    if (b.root - a.root) % 12 == 5:  # root down a fifth: V - I, ii - V, I - IV
        score += 0.1
    return score


def harmonize(notes: np.ndarray, slots: list[Slot], key: Key | None = None, beat_q: float = 0.0) -> list[Chord]:
    """One chord per slot for a melody (notes in quarter notes), in `key` (default: estimate_key). Score of a
    choice: fit to the slot's melody (pc_weights, strong beats counting more) + 0.3 x how common the chord is
    + progressions (_transition) + 0.2 for the tonic chord first, 0.6 for it last and 0.2 for V or V7 before
    it (last: the last slot holding melody). The best sequence over all slots (Viterbi)."""
    if not slots:
        return []
    key = key or estimate_key(notes)
    span = pc_weights(notes, slots[0].start, slots[-1].end)
    candidates = key_chords(key, span)
    chords = [c for c, _ in candidates]
    local = _fit_matrix(notes, slots, chords, beat_q) + 0.3 * np.array([p for _, p in candidates])
    tonic = np.array([c.root == key.tonic and c.quality in ("", "m") for c in chords])
    dominant = np.array([c.root == (key.tonic + 7) % 12 and c.quality in ("", "7") for c in chords])
    sung = [i for i, s in enumerate(slots) if ((notes[:, 0] < s.end) & (notes[:, 1] > s.start)).any()]
    last = sung[-1] if sung else len(slots) - 1
    local[0] += 0.2 * tonic
    local[last] += 0.6 * tonic
    if last > 0:
        local[last - 1] += 0.2 * dominant
    n = len(chords)
    trans = {flag: np.array([[_transition(a, b, flag) for b in chords] for a in chords]) for flag in (False, True)}
    score, back = local[0].copy(), np.zeros((len(slots), n), dtype=int)
    for i in range(1, len(slots)):
        total = score[:, None] + trans[slots[i].bar_start]
        back[i] = total.argmax(axis=0)
        score = total.max(axis=0) + local[i]
    path = [int(score.argmax())]
    for i in range(len(slots) - 1, 0, -1):
        path.append(int(back[i, path[-1]]))
    return [chords[j] for j in reversed(path)]


@dataclass(frozen=True)
class Metre:
    """A time signature as a band counts it: family ("duple": 2/4, 4/4, 2/2 ...; "triple": 3/4 ...; "compound":
    6/8, 12/8 ...), beats per bar and one beat in quarter notes (beat_q)."""

    numerator: int
    denominator: int
    family: str
    beats: int
    beat_q: float

    @property
    def bar_q(self) -> float:
        return 4.0 * self.numerator / self.denominator


def metre_of(numerator: int, denominator: int) -> Metre | None:
    """How a band counts a time signature: 2/4, 4/4, 2/2, 4/2 in quarter (x/8: eighth) beats; 3/4, 3/8, 3/2 in
    three beats (3/1 in half notes); 6/8, 12/8, 6/4 in dotted beats. None for others (5/4, 9/8 ...)."""
    bar_q = 4.0 * numerator / denominator
    if numerator in (2, 4):
        family, beat_q = "duple", (4.0 / denominator if denominator >= 8 else 1.0)
    elif numerator == 3:
        family, beat_q = "triple", (4.0 / denominator if denominator >= 2 else 2.0)
    elif numerator in (6, 12):
        family, beat_q = "compound", 12.0 / denominator
    else:
        return None
    return Metre(numerator, denominator, family, round(bar_q / beat_q), beat_q)


def bar_slots(bars: list[tuple[float, float]], halves: bool) -> list[Slot]:
    """Slots for bars given as (start, end) in quarter notes: one per bar, or two (halves) per bar."""
    slots = []
    for start, end in bars:
        if halves:
            mid = (start + end) / 2
            slots += [Slot(start, mid, True), Slot(mid, end, False)]
        else:
            slots.append(Slot(start, end, True))
    return slots


def beat_slots(bars: list[tuple[float, float]], beat_q: float) -> list[Slot]:
    """One slot per beat of beat_q quarter notes in each bar, bars given as (start, end) in quarter notes."""
    slots = []
    for start, end in bars:
        count = max(1, int(np.ceil((end - start) / beat_q - EPS)))
        slots += [Slot(start + i * beat_q, min(start + (i + 1) * beat_q, end), i == 0) for i in range(count)]
    return slots


def melody_in_chords(notes: np.ndarray, spans: list[tuple[float, float, Chord | None]]) -> float:
    """Share of the melody's duration (quarter notes) whose pitch class belongs to the chord sounding with it:
    a measure of how well chords fit a melody (passing notes keep it below 1)."""
    inside = total = 0.0
    for start, end, chord in spans:
        weights = pc_weights(notes, start, end)
        total += weights.sum()
        if chord is not None:
            inside += weights[list(chord.pcs)].sum()
    return inside / total if total > 0 else 0.0
