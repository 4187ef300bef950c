"""The vocabulary: one data table of token segments, and the pure functions that read it.

Token stream (see docs/architecture.md): a conditioning prefix ``BOS STYLE_s SET_i ...`` followed by
absolute-time performance events: ``TIME_n`` (advance n grid steps of GRID_S seconds), ``VEL_b`` (velocity bin
for the following note-ons), ``ON_i_p`` / ``OFF_i_p`` (note of instrument class i, pitch p), ``PEDAL_ON_i`` /
``PEDAL_OFF_i`` (sustain pedal of instrument class i), and ``EOS``. ``PAD`` fills batches.

The segment table below is the single source of truth. Its hash is carried by every exported model; the engine
refuses a model whose hash differs from the codec's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .instruments import INSTRUMENT_NAMES, INSTRUMENTS

VOCAB_VERSION = "1"

GRID_S = 0.01  # seconds per time step
MAX_SHIFT_STEPS = 100  # one TIME token advances at most 1 s; longer gaps are several tokens
VELOCITY_BINS = 32  # bin b holds velocities 4b .. 4b+3 (velocity 0 means note-off and is never binned)
N_PITCHES = 128

# Conditioning styles. The order is part of the vocabulary: only append (and bump VOCAB_VERSION).
STYLES: tuple[str, ...] = (
    "unknown",
    "bach",
    "palestrina",
    "renaissance",
    "monteverdi",
    "classical",
    "folk",
    "baroque",
    "romantic",
    "modern",
    "jazz",
    "pop",
    "rock",
    "world",
    "user1",
    "user2",
)

N_INSTRUMENTS = len(INSTRUMENTS)

# (segment name, number of tokens, meaning of the token's argument). Order is the id order.
SEGMENTS: tuple[tuple[str, int, str], ...] = (
    ("pad", 1, "-"),
    ("bos", 1, "-"),
    ("eos", 1, "-"),
    ("style", len(STYLES), "style index"),
    ("set", N_INSTRUMENTS, "instrument class in the session's instrument set"),
    ("time", MAX_SHIFT_STEPS, "steps - 1 (advance 1..MAX_SHIFT_STEPS grid steps)"),
    ("velocity", VELOCITY_BINS, "velocity bin"),
    ("pedal_on", N_INSTRUMENTS, "instrument class"),
    ("pedal_off", N_INSTRUMENTS, "instrument class"),
    ("note_on", N_INSTRUMENTS * N_PITCHES, "instrument class * 128 + pitch"),
    ("note_off", N_INSTRUMENTS * N_PITCHES, "instrument class * 128 + pitch"),
)

OFFSETS: dict[str, int] = {}
_start = 0
for _name, _count, _ in SEGMENTS:
    OFFSETS[_name] = _start
    _start += _count
VOCAB_SIZE = _start
del _start, _name, _count

PAD = OFFSETS["pad"]
BOS = OFFSETS["bos"]
EOS = OFFSETS["eos"]

# id -> (segment name, argument), precomputed so decoding one token is two tuple lookups.
_KIND: tuple[str, ...] = tuple(name for name, count, _ in SEGMENTS for _ in range(count))
_ARG: tuple[int, ...] = tuple(i for _, count, _ in SEGMENTS for i in range(count))


@dataclass(frozen=True)
class VocabInfo:
    """What an exported model carries to prove it speaks this codec's language."""

    version: str
    size: int
    sha256: str


def _fingerprint() -> str:
    table = {
        "version": VOCAB_VERSION,
        "segments": [[name, count] for name, count, _ in SEGMENTS],
        "grid_s": GRID_S,
        "styles": list(STYLES),
        "instruments": [[i.name, i.program, i.channel] for i in INSTRUMENTS],
    }
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def vocab_info() -> VocabInfo:
    """Version, size and content hash of the vocabulary."""
    return VocabInfo(VOCAB_VERSION, VOCAB_SIZE, _fingerprint())


def token_kind(token: int) -> tuple[str, int]:
    """(segment name, argument) of a token id; raises IndexError for ids outside 0..VOCAB_SIZE-1."""
    if token < 0:
        raise IndexError(token)
    return _KIND[token], _ARG[token]


def style_token(style: str) -> int:
    """STYLE token for a style name; raises ValueError listing the valid names."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from: {', '.join(STYLES)}")
    return OFFSETS["style"] + STYLES.index(style)


def set_token(instrument: int) -> int:
    """SET token declaring instrument class `instrument` part of the piece's instrument set."""
    return OFFSETS["set"] + instrument


def grid_step(time_s: float) -> int:
    """The nearest grid step (GRID_S seconds each) of a time in seconds; no range check (the codec's encoder
    refuses bad times, a session clamps to its committed time)."""
    return int(round(time_s / GRID_S))


def time_token(steps: int) -> int:
    """TIME token advancing `steps` grid steps (1..MAX_SHIFT_STEPS)."""
    return OFFSETS["time"] + steps - 1


def time_tokens(steps: int) -> list[int]:
    """TIME tokens advancing `steps` (>= 0) grid steps: as few as possible, the full seconds first."""
    full, rest = divmod(steps, MAX_SHIFT_STEPS)
    return [time_token(MAX_SHIFT_STEPS)] * full + ([time_token(rest)] if rest else [])


def velocity_token(bin_: int) -> int:
    return OFFSETS["velocity"] + bin_


def note_on_token(instrument: int, pitch: int) -> int:
    return OFFSETS["note_on"] + instrument * N_PITCHES + pitch


def note_off_token(instrument: int, pitch: int) -> int:
    return OFFSETS["note_off"] + instrument * N_PITCHES + pitch


def pedal_token(instrument: int, down: bool) -> int:
    return OFFSETS["pedal_on" if down else "pedal_off"] + instrument


def velocity_bin(velocity: int) -> int:
    """Bin (0..VELOCITY_BINS-1) of a MIDI velocity 1-127."""
    return min(VELOCITY_BINS - 1, velocity * VELOCITY_BINS // 128)


def bin_velocity(bin_: int) -> int:
    """The MIDI velocity (1-127) that a bin decodes to: the middle of the bin."""
    return max(1, min(127, (bin_ * 128 + 64) // VELOCITY_BINS))


def conditioning(style: str, instruments: list[int] | tuple[int, ...]) -> list[int]:
    """The prefix ``BOS STYLE SET...`` for a style name and instrument classes (sorted, deduplicated)."""
    for i in instruments:
        if not 0 <= i < N_INSTRUMENTS:
            raise ValueError(f"instrument class {i} out of range 0..{N_INSTRUMENTS - 1}")
    return [BOS, style_token(style)] + [set_token(i) for i in sorted(set(instruments))]


def describe(token: int) -> str:
    """Human-readable name of a token, e.g. ``ON_piano_60`` or ``TIME_25``."""
    kind, arg = token_kind(token)
    if kind in ("pad", "bos", "eos"):
        return kind.upper()
    if kind == "style":
        return f"STYLE_{STYLES[arg]}"
    if kind == "time":
        return f"TIME_{arg + 1}"
    if kind == "velocity":
        return f"VEL_{arg}"
    if kind in ("set", "pedal_on", "pedal_off"):
        return f"{kind.upper()}_{INSTRUMENT_NAMES[arg]}"
    inst, pitch = divmod(arg, N_PITCHES)
    return f"{'ON' if kind == 'note_on' else 'OFF'}_{INSTRUMENT_NAMES[inst]}_{pitch}"
