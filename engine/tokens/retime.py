"""A prompt's or melody's messages and tempo map, cropped to a span or played at another tempo, together.

    events, conductor = crop(events, conductor, start=30.0, seconds=20.0)   # seconds 30-50 of the file, from 0
    events, conductor = at_tempo(events, conductor, bpm=90.0)               # the same music, starting at 90 bpm

Times are seconds. Both keep what a DAW shows: a crop keeps the tempo and metre in force at its start (so bars
line up when it starts on a bar line) and the channel state set before it (programs, controllers, pitch bend);
at_tempo scales every tempo of the map by one factor, so the music keeps its bars and its tempo changes, in
proportion.
"""

from __future__ import annotations

from ..errors import EngineError
from .codec import Timed
from .midifile import DEFAULT_TEMPO, Conductor, MetreChange, TempoChange, release_held

STATE_TYPES = ("program_change", "control_change", "pitchwheel", "aftertouch")  # carried to a crop's start
MAX_TEMPO = 0xFFFFFF  # microseconds per quarter note: MIDI's set_tempo holds 24 bits


def _is_on(msg) -> bool:
    return msg.type == "note_on" and msg.velocity > 0


def _is_off(msg) -> bool:
    return msg.type == "note_off" or msg.type == "note_on" and msg.velocity == 0


def _state_key(msg) -> tuple:
    return (msg.type, msg.channel, getattr(msg, "control", None))


def crop(events: list[Timed], conductor: Conductor, start: float = 0.0,
         seconds: float | None = None) -> tuple[list[Timed], Conductor]:
    """The messages from `start` for `seconds` (None: to the end), moved so that `start` is time 0.

    Notes struck before `start` are left out whole; notes still sounding at the end are released there, and a
    sustain pedal still down is lifted (midifile.release_held); the last program, controller value and pitch
    bend of each channel before `start` are kept at time 0. The tempo and metre in force at `start` begin the
    cropped map, the later changes inside the span follow."""
    end = float("inf") if seconds is None else start + seconds
    state: dict[tuple, Timed] = {}
    kept: list[Timed] = []
    sounding: dict[tuple[int, int], int] = {}  # (channel, pitch) -> kept notes not yet ended
    for time, msg in events:
        if time < start:
            if msg.type in STATE_TYPES:
                state[_state_key(msg)] = Timed(0.0, msg)
            continue
        if _is_on(msg):
            if time >= end:
                continue
            sounding[(msg.channel, msg.note)] = sounding.get((msg.channel, msg.note), 0) + 1
        elif _is_off(msg):
            if not sounding.get((msg.channel, msg.note)) or time > end:
                continue  # the end of a note left out, or of one released at `end` below
            sounding[(msg.channel, msg.note)] -= 1
        elif time >= end:
            continue
        kept.append(Timed(time - start, msg))
    out = release_held([*state.values(), *kept], end - start) if seconds is not None else [*state.values(), *kept]
    return out, _crop_conductor(conductor, start, end)


def _crop_conductor(conductor: Conductor, start: float, end: float) -> Conductor:
    """The tempo map and metre of [start, end), moved so that `start` is time 0."""
    def span(changes, make):
        before = [c for c in changes if c.time <= start]
        inside = [make(c, c.time - start) for c in changes if start < c.time < end]
        return tuple([make(before[-1], 0.0)] if before else []) + tuple(inside)

    tempos = span(conductor.tempos, lambda c, t: TempoChange(t, c.tempo))
    metres = span(conductor.metres, lambda c, t: MetreChange(t, c.numerator, c.denominator))
    return Conductor(tempos, metres)


def start_bpm(conductor: Conductor) -> float:
    """Quarter notes per minute at time 0 (MIDI's default 120 when the map sets none there)."""
    first = conductor.tempos[0] if conductor.tempos and conductor.tempos[0].time <= 0 else None
    return 60e6 / (first.tempo if first else DEFAULT_TEMPO)


def at_tempo(events: list[Timed], conductor: Conductor, bpm: float) -> tuple[list[Timed], Conductor]:
    """The same music starting at `bpm` quarter notes per minute: every time divided, and every tempo of the
    map multiplied, by bpm / start_bpm(conductor). EngineError when a tempo would leave MIDI's range."""
    factor = bpm / start_bpm(conductor)
    tempos = list(conductor.tempos)
    if not tempos or tempos[0].time > 0:
        tempos.insert(0, TempoChange(0.0, DEFAULT_TEMPO))
    scaled = tuple(TempoChange(c.time / factor, round(c.tempo / factor)) for c in tempos)
    if any(not 1 <= c.tempo <= MAX_TEMPO for c in scaled):
        raise EngineError(f"--bpm {bpm:g} takes the file's tempo changes beyond MIDI's range; choose a tempo "
                          f"nearer its own {start_bpm(conductor):.4g}")
    metres = tuple(MetreChange(m.time / factor, m.numerator, m.denominator) for m in conductor.metres)
    return [Timed(t / factor, msg) for t, msg in events], Conductor(scaled, metres)
