"""Standard MIDI files <-> timed messages, and the file path of the codec.

Reading merges all tracks by time, honours the tempo map (and SMPTE time division), and yields absolute times in
seconds. Writing is atomic: a temporary file in the target folder is renamed over the target only when complete,
so no half-written .mid is ever left behind; and every note written ends (a note still sounding after the last
message is released at that message's time).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import mido
from mido.midifiles.meta import KeySignatureError

from ..errors import MidiFileError
from ..files import atomic_write
from . import vocab as V
from .codec import MAX_TIME_S, SUSTAIN_CC, EventEncoder, Timed, decode_tokens
from .instruments import INSTRUMENT_NAMES, instrument_class

DEFAULT_TEMPO = 500_000  # microseconds per beat (120 bpm), as in the MIDI file standard
WRITE_TICKS_PER_BEAT = 500  # with DEFAULT_TEMPO one tick is exactly 1 ms: decoded grid times are written exactly
FINE_TICKS_PER_BEAT = 960  # under any other tempo map: a tick of at most ~1 ms down to 62.5 bpm, finer above
SMPTE_FPS = {24: 24.0, 25: 25.0, 29: 30000 / 1001, 30: 30.0}  # 29 means 30 drop-frame, i.e. 29.97 fps
# What mido raises on a damaged file (a bad key signature raises KeySignatureError, an Exception subclass).
_READ_ERRORS = (OSError, EOFError, ValueError, KeyError, IndexError, TypeError, struct.error, KeySignatureError)


@dataclass(frozen=True)
class TempoChange:
    """From `time` (seconds) on, a quarter note lasts `tempo` microseconds (MIDI's set_tempo)."""

    time: float
    tempo: int


@dataclass(frozen=True)
class MetreChange:
    """From `time` (seconds) on, bars of numerator/denominator (MIDI's time_signature); a change starts a bar."""

    time: float
    numerator: int
    denominator: int


@dataclass(frozen=True)
class Conductor:
    """A file's tempo map and metre, in seconds: what a DAW needs to show bars, and what a performer needs to
    shape phrases. Empty tuples mean MIDI's defaults (120 quarter notes per minute, 4/4 from time 0)."""

    tempos: tuple[TempoChange, ...] = ()
    metres: tuple[MetreChange, ...] = ()

    def quarters_at(self, time_s: float) -> float:
        """Quarter notes elapsed at `time_s` seconds, through the tempo map."""
        quarters, last, tempo = 0.0, 0.0, DEFAULT_TEMPO
        for change in self.tempos:
            if change.time > time_s:
                break
            quarters += (change.time - last) * 1e6 / tempo
            last, tempo = change.time, change.tempo
        return quarters + (time_s - last) * 1e6 / tempo

    def seconds_at(self, quarters: float) -> float:
        """The inverse of quarters_at: seconds at a position in quarter notes."""
        done, last, tempo = 0.0, 0.0, DEFAULT_TEMPO
        for change in self.tempos:
            span = (change.time - last) * 1e6 / tempo
            if done + span > quarters:
                break
            done, last, tempo = done + span, change.time, change.tempo
        return last + (quarters - done) * tempo / 1e6

    def bars(self, end_s: float) -> list[tuple[float, int, int]]:
        """(start in seconds, numerator, denominator) of every bar that starts before `end_s` seconds."""
        metres = self.metres or (MetreChange(0.0, 4, 4),)
        if metres[0].time > 0:
            metres = (MetreChange(0.0, 4, 4), *metres)
        out: list[tuple[float, int, int]] = []
        for i, m in enumerate(metres):
            stop = min(end_s, metres[i + 1].time) if i + 1 < len(metres) else end_s
            q, bar_q = self.quarters_at(m.time), 4.0 * m.numerator / m.denominator
            start = m.time
            while start < stop - 1e-9:
                out.append((start, m.numerator, m.denominator))
                q += bar_q
                start = self.seconds_at(q)
        return out

    def bar_starts(self, end_s: float) -> list[float]:
        """Seconds at which each bar before `end_s` starts."""
        return [b[0] for b in self.bars(end_s)]


@dataclass(frozen=True)
class MidiEvents:
    """A MIDI file as timed messages. end_time: seconds at the last end-of-track. conductor: its tempo map and
    metre; track_names: MIDI channel -> the name of the first track that plays on it."""

    events: tuple[Timed, ...]
    end_time: float
    conductor: Conductor = Conductor()
    track_names: dict[int, str] = field(default_factory=dict)


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
    tempos: list[TempoChange] = []
    metres: list[MetreChange] = []
    for tick, msg in _timeline(mid.tracks):
        now += (tick - last_tick) * seconds_per_tick
        last_tick = tick
        if msg.type == "set_tempo":
            seconds_per_tick = _seconds_per_tick(division, msg.tempo)
            _replace_at(tempos, TempoChange(now, msg.tempo))
        elif msg.type == "time_signature":
            _replace_at(metres, MetreChange(now, msg.numerator, msg.denominator))
        elif not msg.is_meta and msg.type != "sysex":
            msg.time = 0  # the message was made by this read: reuse it (a copy would double the cost)
            events.append(Timed(now, msg))
    if now > MAX_TIME_S:
        hours, limit = now / 3600, MAX_TIME_S / 3600
        raise MidiFileError(f"{path}: lasts {hours:.0f} hours, more than the codec's {limit:.0f}; it is damaged")
    return MidiEvents(tuple(events), now, Conductor(tuple(tempos), tuple(metres)), _track_names(mid.tracks))


def _replace_at(changes: list, change) -> None:
    """Append a tempo or metre change; one at the same time as the last replaces it (the later one rules)."""
    if changes and abs(changes[-1].time - change.time) < 1e-9:
        changes[-1] = change
    else:
        changes.append(change)


def _track_names(tracks) -> dict[int, str]:
    """MIDI channel -> the name of the first named track that plays on it."""
    names: dict[int, str] = {}
    for track in tracks:
        name = next((m.name for m in track if m.type == "track_name" and m.name.strip()), None)
        channel = next((m.channel for m in track if not m.is_meta and hasattr(m, "channel")), None)
        if name is not None and channel is not None:
            names.setdefault(channel, name.strip())
    return names


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


def ticks_per_beat_for(conductor: Conductor) -> int:
    """Ticks per beat to write a file with: WRITE_TICKS_PER_BEAT (1 ms ticks) when the tempo map is 120 bpm
    throughout, else FINE_TICKS_PER_BEAT."""
    return WRITE_TICKS_PER_BEAT if all(t.tempo == DEFAULT_TEMPO for t in conductor.tempos) else FINE_TICKS_PER_BEAT


def release_held(events, end: float) -> list[Timed]:
    """`events` (timed messages), then at `end` seconds a note-off for every note still sounding after them and
    a pedal lift (CC64 0) on every channel whose sustain pedal is still down: note-ons and note-offs pair per
    channel and pitch, so a pitch struck twice and released once gets one more note-off; CC120/CC123 end every
    note of their channel (as the codec reads them)."""
    held: dict[tuple[int, int], int] = {}
    pedal_down: set[int] = set()
    for _, msg in events:
        if msg.type == "note_on" and msg.velocity > 0:
            held[(msg.channel, msg.note)] = held.get((msg.channel, msg.note), 0) + 1
        elif msg.type in ("note_on", "note_off") and held.get((msg.channel, msg.note)):
            held[(msg.channel, msg.note)] -= 1
        elif msg.type == "control_change" and msg.control in (120, 123):
            held = {key: count for key, count in held.items() if key[0] != msg.channel}
        elif msg.type == "control_change" and msg.control == SUSTAIN_CC:
            (pedal_down.add if msg.value >= 64 else pedal_down.discard)(msg.channel)
    offs = [Timed(end, mido.Message("note_off", channel=channel, note=note, velocity=0))
            for (channel, note), count in sorted(held.items()) for _ in range(count)]
    lifts = [Timed(end, mido.Message("control_change", channel=channel, control=SUSTAIN_CC, value=0))
             for channel in sorted(pedal_down)]
    return [*events, *offs, *lifts]


def _class_names(events: list[Timed]) -> dict[int, str]:
    """MIDI channel -> the name of the instrument class its notes start with: the class of the program in force
    at the channel's first note (its last program when it has no note; General MIDI's 0 when none)."""
    programs: dict[int, int] = {}
    first: dict[int, int] = {}
    for _, msg in events:
        if msg.type == "program_change":
            programs[msg.channel] = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            first.setdefault(msg.channel, programs.get(msg.channel, 0))
    channels = {e.msg.channel for e in events if hasattr(e.msg, "channel")}
    return {ch: INSTRUMENT_NAMES[instrument_class(first.get(ch, programs.get(ch, 0)), ch)] for ch in channels}


def write_midi(
    events,
    path: str | os.PathLike,
    ticks_per_beat: int = WRITE_TICKS_PER_BEAT,
    tempo: int = DEFAULT_TEMPO,
    track_names: dict[int, str] | None = None,
    conductor: Conductor | None = None,
) -> None:
    """Write timed messages (sorted by time, seconds) as a type-1 file: a conductor track, then one track per MIDI
    channel. Every note ends: a note still sounding after the last message gets a note-off at its time, and a
    sustain pedal still down is lifted (release_held), so no file this project writes leaves a note hanging.
    track_names: channel -> track name (default: the instrument class the channel's notes start with).
    conductor: the tempo map and metre to write (default: `tempo` throughout, no time signature); the events'
    times in seconds are kept whatever the tempo map. Atomic: the target appears complete or not at all."""
    path = Path(path)
    events = list(events)
    events = release_held(events, max((e.time for e in events), default=0.0))
    names = _class_names(events) | (track_names or {})
    conductor = conductor or Conductor((TempoChange(0.0, tempo),))
    if not conductor.tempos or conductor.tempos[0].time > 0:
        conductor = Conductor((TempoChange(0.0, DEFAULT_TEMPO), *conductor.tempos), conductor.metres)

    def tick_of(time_s: float) -> int:
        return round(conductor.quarters_at(time_s) * ticks_per_beat)

    header = _conductor_track(conductor, tick_of)
    by_channel: dict[int, list[Timed]] = {}
    for item in events:
        by_channel.setdefault(getattr(item.msg, "channel", 0), []).append(item)
    mid = mido.MidiFile(type=1, ticks_per_beat=ticks_per_beat, tracks=[header])
    for channel in sorted(by_channel):
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=names.get(channel, f"ch{channel + 1}"))])
        last_tick = 0
        for time_s, msg in by_channel[channel]:
            tick = max(last_tick, tick_of(time_s))
            track.append(msg.copy(time=tick - last_tick))
            last_tick = tick
        mid.tracks.append(track)
    _save_atomic(mid, path)


def _conductor_track(conductor: Conductor, tick_of) -> mido.MidiTrack:
    """The first track of a type-1 file: tempo changes and time signatures, in time order."""
    metas = [(tick_of(c.time), mido.MetaMessage("set_tempo", tempo=c.tempo)) for c in conductor.tempos]
    metas += [(tick_of(m.time), mido.MetaMessage("time_signature", numerator=m.numerator,
                                                 denominator=m.denominator)) for m in conductor.metres]
    track, last = mido.MidiTrack(), 0
    for tick, meta in sorted(metas, key=lambda item: item[0]):
        track.append(meta.copy(time=tick - last))
        last = tick
    return track


def _save_atomic(mid: mido.MidiFile, path: Path) -> None:
    def make(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            mid.save(file=fh)

    atomic_write(path, make, MidiFileError)


def decode_to_file(tokens, path: str | os.PathLike, **decoder_kw) -> list[Timed]:
    """Decode tokens and write them to `path` atomically; returns the timed messages written."""
    events = decode_tokens(tokens, **decoder_kw)
    write_midi(events, path)
    return events
