"""Data augmentation: pure, seeded functions from a token sequence to a token sequence.

Every function takes a sequence of token ids that may start with a conditioning prefix (``BOS STYLE SET...``)
and returns a new list; the input is never modified. The prefix is kept in front (re-voicing rewrites its SET
tokens). Sequences may start or end in the middle of a piece (the dataset augments windows, not whole files):
a note-off whose note-on lies before the window is moved exactly like its note-on would be.

- transpose: every pitched note moves by the same number of semitones; drums never move. The allowed shifts
  keep every instrument inside its range from engine/tokens/instruments.py (notes already outside stay no further
  out).
- stretch_time: event times (grid steps of vocab.GRID_S seconds) are multiplied by a factor and re-quantized.
- shift_velocity: VEL bins move by a number of bins (4 MIDI velocity units per bin), clamped to the table.
- humanize: each note and pedal event moves by a small random number of grid steps; token order is kept, so
  times stay monotone (a live player is never exactly on the grid; the corpus always is).
- revoice: instrument classes are renamed through a mapping (e.g. voice -> strings), SET tokens follow.

``augment(tokens, config, rng)`` draws one of each from an AugmentConfig with a numpy Generator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import DRUMS, INSTRUMENT_NAMES, INSTRUMENTS

_O = V.OFFSETS
_NOTE_LO = _O["note_on"]
_NOTE_HI = _O["note_off"] + V.N_INSTRUMENTS * V.N_PITCHES  # note-ons then note-offs: one contiguous block
_NOTE_SEG = V.N_INSTRUMENTS * V.N_PITCHES
_TIME_LO, _TIME_HI = _O["time"], _O["time"] + V.MAX_SHIFT_STEPS
_VEL_LO, _VEL_HI = _O["velocity"], _O["velocity"] + V.VELOCITY_BINS
_PEDAL_LO, _PEDAL_HI = _O["pedal_on"], _O["pedal_off"] + V.N_INSTRUMENTS
_SET_LO, _SET_HI = _O["set"], _O["set"] + V.N_INSTRUMENTS
_PREFIX_LO, _PREFIX_HI = V.BOS, _SET_HI  # BOS, EOS, STYLE_*, SET_* are contiguous; EOS never starts a prefix
_UNKNOWN_STYLE = V.style_token("unknown")

# Instruments that can stand in for one another (sustained melodic lines; plucked or struck keys).
REVOICE_GROUPS: tuple[tuple[str, ...], ...] = (
    ("voice", "strings", "organ", "reed", "pipe", "brass"),
    ("piano", "chromatic", "guitar"),
)


@dataclass(frozen=True)
class AugmentConfig:
    """How far `augment` may go. transpose: +-semitones; tempo: (min, max) time factor; velocity: +-bins;
    humanize: +-grid steps (10 ms each) per event, applied with probability humanize_prob; revoice_prob: chance
    to move the piece onto other instruments of its REVOICE_GROUPS group. prob: chance that a window is augmented
    at all; the others train on the corpus as it is (in its written keys and tempos, which is what evaluation
    and most players' phrases look like), so the model learns both the augmented spread and the clean priors.
    style_drop: chance, drawn apart from `prob`, that a piece's STYLE token is replaced by STYLE_unknown, so
    the model also learns the music without its style (what style guidance contrasts with: docs/training.md)."""

    transpose: int = 5
    tempo: tuple[float, float] = (0.9, 1.1)
    velocity: int = 3
    humanize: int = 1
    humanize_prob: float = 0.5
    revoice_prob: float = 0.25
    prob: float = 1.0
    style_drop: float = 0.0


def prefix_length(tokens) -> int:
    """Number of leading conditioning tokens (BOS, STYLE_*, SET_*) of a sequence."""
    n = 0
    for t in tokens:
        t = int(t)
        if t == V.EOS or not _PREFIX_LO <= t < _PREFIX_HI:
            break
        n += 1
    return n


def drop_style(tokens) -> list[int]:
    """The tokens with their prefix's STYLE token (if any) replaced by STYLE_unknown."""
    out = list(int(t) for t in tokens)
    for i in range(prefix_length(out)):
        if V.token_kind(out[i])[0] == "style":
            out[i] = _UNKNOWN_STYLE
    return out


def _split(tokens) -> tuple[list[int], np.ndarray]:
    arr = np.asarray(tokens, dtype=np.int64)
    n = prefix_length(arr)
    return [int(t) for t in arr[:n]], arr[n:].copy()


def _note_parts(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mask of note tokens, and for them: segment base (note_on or note_off offset), instrument, pitch."""
    is_note = (arr >= _NOTE_LO) & (arr < _NOTE_HI)
    rel = np.where(is_note, arr - _NOTE_LO, 0)
    base = _NOTE_LO + (rel // _NOTE_SEG) * _NOTE_SEG
    inst, pitch = np.divmod(rel % _NOTE_SEG, V.N_PITCHES)
    return is_note, base, inst, pitch


def transpose_range(tokens) -> tuple[int, int]:
    """(lowest, highest) shift in semitones that keeps every pitched note of `tokens` inside its instrument's
    range. Always contains 0 (notes already out of range may stay where they are)."""
    _, arr = _split(tokens)
    is_note, _, inst, pitch = _note_parts(arr)
    lo, hi = -127, 127
    for i in np.unique(inst[is_note]):
        if i == DRUMS:
            continue
        pitches = pitch[is_note & (inst == i)]
        lo = max(lo, min(0, INSTRUMENTS[i].low - int(pitches.min())))
        hi = min(hi, max(0, INSTRUMENTS[i].high - int(pitches.max())))
    return lo, hi


def transpose(tokens, semitones: int) -> list[int]:
    """Move every non-drum note by `semitones`. Raises ValueError if a pitch would leave 0..127; use
    transpose_range to pick a shift that keeps instruments in range."""
    prefix, arr = _split(tokens)
    is_note, base, inst, pitch = _note_parts(arr)
    move = is_note & (inst != DRUMS)
    new_pitch = pitch + semitones
    if np.any(move & ((new_pitch < 0) | (new_pitch >= V.N_PITCHES))):
        raise ValueError(f"transposing by {semitones} semitones moves a note outside MIDI pitches 0..127")
    arr[move] = (base + inst * V.N_PITCHES + new_pitch)[move]
    return prefix + arr.tolist()


def shift_velocity(tokens, bins: int) -> list[int]:
    """Move every VEL token by `bins` velocity bins, clamped to 0..VELOCITY_BINS-1."""
    prefix, arr = _split(tokens)
    is_vel = (arr >= _VEL_LO) & (arr < _VEL_HI)
    arr[is_vel] = np.clip(arr[is_vel] + bins, _VEL_LO, _VEL_HI - 1)
    return prefix + arr.tolist()


def _timeline(arr: np.ndarray) -> tuple[list[int], list[int]]:
    """Events (non-TIME tokens) and the absolute grid step each one happens at."""
    events, steps, now = [], [], 0
    for t in arr.tolist():
        if _TIME_LO <= t < _TIME_HI:
            now += t - _TIME_LO + 1
        else:
            events.append(t)
            steps.append(now)
    return events, steps


def _retime(events: list[int], steps: list[int], end: int) -> list[int]:
    """Tokens for events at absolute (non-decreasing) steps, then a final advance to `end`."""
    out, now = [], 0
    for token, step in zip(events, steps, strict=True):
        out += V.time_tokens(step - now)
        out.append(token)
        now = step
    return out + V.time_tokens(end - now)


def stretch_time(tokens, factor: float) -> list[int]:
    """Multiply every event time (and trailing silence) by `factor` (> 0), re-quantized to the grid."""
    if not factor > 0:
        raise ValueError(f"tempo factor must be > 0, got {factor}")
    prefix, arr = _split(tokens)
    events, steps = _timeline(arr)
    end = int(round(_timeline(np.append(arr, V.EOS))[1][-1] * factor))
    new = [int(round(s * factor)) for s in steps]
    return prefix + _retime(events, new, end)


def humanize(tokens, rng: np.random.Generator, max_steps: int = 1) -> list[int]:
    """Move each note and pedal event by a random -max_steps..+max_steps grid steps, keeping token order (so a
    note that moves earlier than the previous event lands with it). VEL tokens travel with the next note."""
    prefix, arr = _split(tokens)
    events, steps = _timeline(arr)
    end = _timeline(np.append(arr, V.EOS))[1][-1]
    jitter = rng.integers(-max_steps, max_steps + 1, size=len(events))
    ev = np.asarray(events, dtype=np.int64)
    moves = ((ev >= _NOTE_LO) & (ev < _NOTE_HI)) | ((ev >= _PEDAL_LO) & (ev < _PEDAL_HI))
    new = np.asarray(steps, dtype=np.int64) + np.where(moves, jitter, 0)
    for i in range(len(events) - 2, -1, -1):  # VEL (and other fixed tokens) follow the next event
        if not moves[i] and moves[i + 1] and steps[i] == steps[i + 1]:
            new[i] = new[i + 1]
    new = np.maximum.accumulate(np.maximum(new, 0)) if len(new) else new
    end = max(end, int(new[-1]) if len(new) else 0)
    return prefix + _retime(events, new.tolist(), end)


def instruments_in(tokens) -> list[int]:
    """Instrument classes that play a note, or are declared in the prefix, in `tokens` (sorted)."""
    prefix, arr = _split(tokens)
    is_note, _, inst, _ = _note_parts(arr)
    declared = {t - _SET_LO for t in prefix if _SET_LO <= t < _SET_HI}
    return sorted(declared | set(np.unique(inst[is_note]).tolist()))


def revoice(tokens, mapping: dict[int, int]) -> list[int]:
    """Rename instrument classes (notes, pedals and SET tokens) through `mapping` {old class: new class}; classes
    not in the mapping stay. Pitches are not checked against the new ranges (see revoice_mapping)."""
    table = np.arange(V.N_INSTRUMENTS)
    for old, new in mapping.items():
        table[old] = new
    prefix, arr = _split(tokens)
    is_note, base, inst, pitch = _note_parts(arr)
    arr[is_note] = (base + table[inst] * V.N_PITCHES + pitch)[is_note]
    for lo in (_O["pedal_on"], _O["pedal_off"]):
        is_ped = (arr >= lo) & (arr < lo + V.N_INSTRUMENTS)
        arr[is_ped] = lo + table[arr[is_ped] - lo]
    head = [t for t in prefix if not _SET_LO <= t < _SET_HI]
    sets = sorted({_SET_LO + int(table[t - _SET_LO]) for t in prefix if _SET_LO <= t < _SET_HI})
    return head + sets + arr.tolist()


def _pitch_span(tokens, instrument: int) -> tuple[int, int] | None:
    _, arr = _split(tokens)
    is_note, _, inst, pitch = _note_parts(arr)
    pitches = pitch[is_note & (inst == instrument)]
    return (int(pitches.min()), int(pitches.max())) if len(pitches) else None


def revoice_mapping(tokens, rng: np.random.Generator) -> dict[int, int]:
    """A random one-to-one mapping of the piece's instruments onto others of their REVOICE_GROUPS group whose
    range holds every note the instrument plays. Instruments outside the groups (bass, synth, drums) stay."""
    used = instruments_in(tokens)
    taken = {i for i in used if not any(INSTRUMENT_NAMES[i] in g for g in REVOICE_GROUPS)}
    mapping = {}
    for i in rng.permutation(used).tolist():
        group = next((g for g in REVOICE_GROUPS if INSTRUMENT_NAMES[i] in g), None)
        if group is None:
            continue
        span = _pitch_span(tokens, i)
        options = [
            j for j in (INSTRUMENT_NAMES.index(n) for n in group)
            if j not in taken and (span is None or INSTRUMENTS[j].low <= span[0] <= span[1] <= INSTRUMENTS[j].high)
        ]
        if not options:
            return {}  # no one-to-one move exists: leave the piece as it is
        target = int(rng.choice(options))
        taken.add(target)
        mapping[i] = target
    return mapping


def augment(tokens, config: AugmentConfig, rng: np.random.Generator) -> list[int]:
    """Apply one random draw of every augmentation allowed by `config` (revoice, transpose, tempo, velocity,
    humanize), in that order, or none of them with probability 1 - config.prob; before them, the style drop.
    Deterministic for a given rng state."""
    out = list(int(t) for t in tokens)
    if config.style_drop > 0 and rng.random() < config.style_drop:
        out = drop_style(out)
    if config.prob < 1.0 and rng.random() >= config.prob:
        return out
    if config.revoice_prob > 0 and rng.random() < config.revoice_prob:
        out = revoice(out, revoice_mapping(out, rng))
    if config.transpose:
        lo, hi = transpose_range(out)
        lo, hi = max(lo, -config.transpose), min(hi, config.transpose)
        out = transpose(out, int(rng.integers(lo, hi + 1)))
    if config.tempo != (1.0, 1.0):
        out = stretch_time(out, float(rng.uniform(*config.tempo)))
    if config.velocity:
        out = shift_velocity(out, int(rng.integers(-config.velocity, config.velocity + 1)))
    if config.humanize and rng.random() < config.humanize_prob:
        out = humanize(out, rng, config.humanize)
    return out
