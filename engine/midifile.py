"""Standard MIDI files <-> timed messages, and the file path of the codec.

Reading merges all tracks by time, honours the tempo map (and SMPTE time division), and yields absolute times in
seconds. Writing is atomic: a temporary file in the target folder is renamed over the target only when complete,
so no half-written .mid is ever left behind.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mido
from mido.midifiles.meta import KeySignatureError

from . import vocab as V
from .codec import MAX_TIME_S, EventEncoder, Timed, decode_tokens
from .errors import MidiFileError
from .instruments import INSTRUMENTS, instrument_class

DEFAULT_TEMPO = 500_000  # microseconds per beat (120 bpm), as in the MIDI file standard
WRITE_TICKS_PER_BEAT = 500  # with DEFAULT_TEMPO one tick is exactly 1 ms: decoded grid times are written exactly
SMPTE_FPS = {24: 24.0, 25: 25.0, 29: 30000 / 1001, 30: 30.0}  # 29 means 30 drop-frame, i.e. 29.97 fps
# What mido raises on a damaged file (a bad key signature raises KeySignatureError, an Exception subclass).
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, struct.error, KeySignatureError)


@dataclass(frozen=True)
class MidiEvents:
    """A MIDI file as timed messages. end_time: seconds at the last end-of-track."""

    events: tuple[Timed, ...]
    end_time: float


@dataclass(frozen=True)
class Note:
    """One note: start and end in seconds, pitch and velocity 0-127, MIDI channel 0-15, instrument class."""

    start: float
    end: float
    pitch: int
    velocity: int
    channel: int
    instrument: int


@dataclass(frozen=True)
class EncodedFile:
    """A file through the codec: conditioning prefix + event tokens, and what was found in it."""

    tokens: tuple[int, ...]
    prefix_len: int
    notes: int
    duration: float
    instruments: tuple[int, ...]


def _division(path: Path, raw: int) -> int:
    """The header's time division as an unsigned 16-bit number (mido reads it signed); MidiFileError if unusable.
    Bit 15 clear: ticks per beat. Set: SMPTE, high byte -frames per second, low byte ticks per frame."""
    division = raw & 0xFFFF
    if division & 0x8000:
        usable = 256 - (division >> 8) in SMPTE_FPS and division & 0xFF > 0
    else:
        usable = division > 0
    if not usable:
        raise MidiFileError(f"{path}: invalid time division {division:#06x} in the header; the file is damaged")
    return division


def _seconds_per_tick(division: int, tempo: int) -> float:
    """Seconds per tick for a division (see _division) and a tempo in microseconds per beat (ignored by SMPTE)."""
    if division & 0x8000:
        return 1.0 / (SMPTE_FPS[256 - (division >> 8)] * (division & 0xFF))
    return tempo / 1e6 / division


def read_midi(path: str | os.PathLike) -> MidiEvents:
    """Read a .mid file into timed messages; raises MidiFileError naming the file and the problem."""
    path = Path(path)
    try:
        mid = mido.MidiFile(path)
    except _READ_ERRORS as exc:
        raise MidiFileError(f"{path}: {_problem(path, exc)}") from None
    division = _division(path, mid.ticks_per_beat)
    seconds_per_tick, last_tick, now, events = _seconds_per_tick(division, DEFAULT_TEMPO), 0, 0.0, []
    for tick, msg in _timeline(mid.tracks):
        now += (tick - last_tick) * seconds_per_tick
        last_tick = tick
        if msg.type == "set_tempo":
            seconds_per_tick = _seconds_per_tick(division, msg.tempo)
        elif not msg.is_meta and msg.type != "sysex":
            msg.time = 0  # the message was made by this read: reuse it (a copy would double the cost)
            events.append(Timed(now, msg))
    if now > MAX_TIME_S:
        hours, limit = now / 3600, MAX_TIME_S / 3600
        raise MidiFileError(f"{path}: lasts {hours:.0f} hours, more than the codec's {limit:.0f}; it is damaged")
    return MidiEvents(tuple(events), now)


def _timeline(tracks) -> list[tuple[int, mido.Message]]:
    """(absolute tick, message) of all tracks in playback order, ties in track order: mido.merge_tracks's order
    without its two checked copies of every message (which cost 3/4 of the reading time)."""
    timeline = []
    for track in tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            timeline.append((tick, msg))
    timeline.sort(key=lambda item: item[0])  # stable
    return timeline


def _problem(path: Path, exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file; check the path"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not a MIDI file"
    if isinstance(exc, PermissionError):
        return "permission denied; check the file's permissions"
    if path.exists() and path.stat().st_size == 0:
        return "the file is empty; it is not a MIDI file"
    if not _starts_with(path, b"MThd"):
        return "not a MIDI file (it does not start with an MThd header); choose a .mid file"
    if isinstance(exc, EOFError):
        return "the file ends in the middle of a MIDI event (truncated); re-export it"
    return f"not a valid MIDI file ({exc}); re-export it from your DAW or notation program"


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return True  # unreadable: let the caller report the original problem


def notes_from_events(events, end_time: float | None = None) -> list[Note]:
    """Pair note-ons with note-offs (first in, first out per channel and pitch), as the encoder does.
    Notes still sounding at the end end at `end_time` (default: the last event's time). Sorted by start."""
    programs = [0] * 16
    held: dict[tuple[int, int], list[tuple[float, int, int]]] = {}
    notes = []
    last = 0.0
    for time_s, msg in events:
        last = max(last, time_s)
        if msg.type == "program_change":
            programs[msg.channel] = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            cls = instrument_class(programs[msg.channel], msg.channel)
            held.setdefault((msg.channel, msg.note), []).append((time_s, msg.velocity, cls))
        elif msg.type in ("note_on", "note_off") and held.get((msg.channel, msg.note)):
            start, vel, cls = held[(msg.channel, msg.note)].pop(0)
            notes.append(Note(start, time_s, msg.note, vel, msg.channel, cls))
        elif msg.type == "control_change" and msg.control in (120, 123):
            for key in [k for k in held if k[0] == msg.channel]:
                notes += [Note(s, time_s, key[1], v, key[0], c) for s, v, c in held.pop(key)]
    end = last if end_time is None else max(end_time, last)
    for (channel, pitch), opened in held.items():
        notes += [Note(s, end, pitch, v, channel, c) for s, v, c in opened]
    return sorted(notes, key=lambda n: (n.start, n.channel, n.pitch, n.end))


def encode_file(path: str | os.PathLike, style: str = "unknown") -> EncodedFile:
    """Tokenize a .mid file: conditioning prefix (style, instruments found) then the event tokens."""
    midi = read_midi(path)
    encoder = EventEncoder()
    events: list[int] = []
    for time_s, msg in midi.events:
        events += encoder.feed(time_s, msg)
    events += encoder.finish(midi.end_time)
    instruments = tuple(sorted(encoder.instruments))
    prefix = V.conditioning(style, instruments)
    return EncodedFile(tuple(prefix + events), len(prefix), encoder.notes, midi.end_time, instruments)


def write_midi(
    events,
    path: str | os.PathLike,
    ticks_per_beat: int = WRITE_TICKS_PER_BEAT,
    tempo: int = DEFAULT_TEMPO,
    track_names: dict[int, str] | None = None,
) -> None:
    """Write timed messages (sorted by time, seconds) as a type-1 file with one track per MIDI channel.
    track_names: channel -> track name (default: the instrument class that plays on that channel).
    Atomic: the target appears complete or not at all."""
    path = Path(path)
    names = {i.channel: i.name for i in INSTRUMENTS} | (track_names or {})
    header = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    by_channel: dict[int, list[Timed]] = {}
    for item in events:
        by_channel.setdefault(getattr(item.msg, "channel", 0), []).append(item)
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat, tracks=[header])
    for channel in sorted(by_channel):
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=names.get(channel, f"ch{channel + 1}"))])
        last_tick = 0
        for time_s, msg in by_channel[channel]:
            tick = max(last_tick, round(mido.second2tick(time_s, ticks_per_beat, tempo)))
            track.append(msg.copy(time=tick - last_tick))
            last_tick = tick
        mid.tracks.append(track)
    _save_atomic(mid, path)


def _save_atomic(mid: mido.MidiFile, path: Path) -> None:
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise MidiFileError(f"{path}: folder {folder} does not exist; create it or choose another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise MidiFileError(f"{path}: cannot write in {folder} ({exc.strerror}); choose another path") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            mid.save(file=fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        raise MidiFileError(f"{path}: cannot write ({exc.strerror}); choose another path") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def decode_to_file(tokens, path: str | os.PathLike, **decoder_kw) -> list[Timed]:
    """Decode tokens and write them to `path` atomically; returns the timed messages written."""
    events = decode_tokens(tokens, **decoder_kw)
    write_midi(events, path)
    return events
