"""Streaming event codec: timed MIDI messages <-> tokens, one item at a time.

``EventEncoder.feed(time_s, msg)`` takes one timestamped mido message (as it arrives from a port or a file) and
returns the tokens it produces. ``EventDecoder.feed(token)`` takes one token and returns the timed messages it
produces. The file path (engine/tokens/midifile.py) drives the very same objects, so training data and live
sessions are tokenized by one piece of code.

Rules (documented in docs/architecture.md):
- Times are absolute seconds from the start of the stream, quantized to GRID_S. A message earlier than the
  encoder's current time (live jitter) is encoded at the current time.
- Note-on with velocity 0 is a note-off. A note-off without a sounding note is dropped. Overlapping notes of the
  same pitch on one channel are paired first-in, first-out.
- CC64 >= 64 is pedal down, < 64 pedal up. The pedal of an instrument class is down while any of its channels
  holds it; only changes of that produce tokens. A pedal is released for the class that pressed it, even if the
  channel's program changed meanwhile. CC120/CC123 end every note on the channel.
- Program changes set the channel's instrument class (channel 10 is always drums); they produce no token.
- ``finish()`` ends the notes still sounding at the end time.
- Times must be finite, >= 0 and at most MAX_TIME_S; tokens must be ints (or numpy integers) in the vocabulary.
  Anything else raises CodecError.
"""

from __future__ import annotations

import operator
from collections import defaultdict, deque
from typing import NamedTuple

import mido

from ..errors import CodecError
from . import vocab as V
from .instruments import DRUM_CHANNEL, DRUMS, INSTRUMENTS, instrument_class

ALL_NOTES_OFF_CCS = (120, 123)  # all sound off, all notes off
SUSTAIN_CC = 64
MAX_TIME_S = 24 * 3600.0  # a stream lasts at most a day: later times are refused, not encoded as 8.6M tokens


class Timed(NamedTuple):
    """A MIDI message at an absolute time in seconds."""

    time: float
    msg: mido.Message


def _grid_step(time_s: float) -> int:
    """Nearest grid step of a time in seconds; CodecError unless 0 <= time_s <= MAX_TIME_S."""
    if isinstance(time_s, bool) or not isinstance(time_s, (int, float)) or not 0 <= time_s <= MAX_TIME_S:
        raise CodecError(f"event time must be a number of seconds from 0 to {MAX_TIME_S:.0f}, got {time_s!r}")
    return V.grid_step(time_s)


def _is_int(value, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


class EventEncoder:
    """Turns timestamped MIDI messages into event tokens (no conditioning prefix: see vocab.conditioning)."""

    def __init__(self) -> None:
        self._step = 0  # grid step of the last emitted token
        self._velocity_bin: int | None = None
        self._programs = [0] * 16
        self._held: dict[tuple[int, int], deque[int]] = defaultdict(deque)  # (channel, pitch) -> classes
        self._pedal: dict[int, int] = {}  # channel -> class it pressed the pedal for
        self.instruments: set[int] = set()  # classes that played at least one note
        self.notes = 0  # note-ons encoded
        self._handlers = {
            "note_on": self._note_on,
            "note_off": self._note_off,
            "control_change": self._control,
            "program_change": self._program,
        }

    @property
    def time(self) -> float:
        """Time of the last encoded event, in seconds (on the grid)."""
        return self._step * V.GRID_S

    def feed(self, time_s: float, msg: mido.Message) -> list[int]:
        """Encode one message at absolute time `time_s` (seconds). Messages other than notes, CC and program
        changes produce no tokens."""
        if not isinstance(msg, mido.Message):
            raise CodecError(f"expected a mido.Message, got {type(msg).__name__}")
        step = max(_grid_step(time_s), self._step)
        handler = self._handlers.get(msg.type)
        if handler is None:
            return []
        events = handler(msg)
        if not events:
            return []
        return self._advance(step) + events

    def finish(self, time_s: float | None = None) -> list[int]:
        """End all sounding notes, then release pedals, at `time_s` (default: the current time); return the
        tokens."""
        step = self._step if time_s is None else max(_grid_step(time_s), self._step)
        events = []
        for (_channel, pitch), classes in sorted(self._held.items()):
            events += [V.note_off_token(c, pitch) for c in classes]
        self._held.clear()
        for channel in sorted(self._pedal):
            events += self._pedal_change(channel, False)
        return (self._advance(step) + events) if events else []

    def _advance(self, step: int) -> list[int]:
        delta = step - self._step
        self._step = step
        return V.time_tokens(delta)

    def _note_on(self, msg: mido.Message) -> list[int]:
        if msg.velocity == 0:
            return self._note_off(msg)
        cls = instrument_class(self._programs[msg.channel], msg.channel)
        self._held[(msg.channel, msg.note)].append(cls)
        self.instruments.add(cls)
        self.notes += 1
        tokens = []
        vbin = V.velocity_bin(msg.velocity)
        if vbin != self._velocity_bin:
            self._velocity_bin = vbin
            tokens.append(V.velocity_token(vbin))
        tokens.append(V.note_on_token(cls, msg.note))
        return tokens

    def _note_off(self, msg: mido.Message) -> list[int]:
        held = self._held.get((msg.channel, msg.note))
        if not held:
            return []
        cls = held.popleft()
        if not held:
            del self._held[(msg.channel, msg.note)]
        return [V.note_off_token(cls, msg.note)]

    def _control(self, msg: mido.Message) -> list[int]:
        if msg.control == SUSTAIN_CC:
            return self._pedal_change(msg.channel, msg.value >= 64)
        if msg.control in ALL_NOTES_OFF_CCS:
            tokens = []
            for key in sorted(k for k in self._held if k[0] == msg.channel):
                tokens += [V.note_off_token(c, key[1]) for c in self._held.pop(key)]
            return tokens
        return []

    def _pedal_change(self, channel: int, down: bool) -> list[int]:
        """Pedal token for a channel's pedal going down/up, if it changes its class's pedal state."""
        if down == (channel in self._pedal):
            return []
        cls = instrument_class(self._programs[channel], channel) if down else self._pedal.pop(channel)
        held_elsewhere = cls in self._pedal.values()  # another channel of the class holds it down
        if down:
            self._pedal[channel] = cls
        return [] if held_elsewhere else [V.pedal_token(cls, down)]

    def _program(self, msg: mido.Message) -> list[int]:
        self._programs[msg.channel] = msg.program
        return []


class EventDecoder:
    """Turns tokens into timed MIDI messages.

    Each instrument class plays on its own channel (`channels`, default from the instrument table) and gets a
    General MIDI program change (`programs`) just before its first note. Conditioning tokens are recorded
    (`style`, `instrument_set`), PAD is ignored, EOS ends every sounding note. Tokens that make no sense in
    context (a note-off for a silent note, a repeated pedal state) produce nothing.
    """

    def __init__(
        self,
        channels: tuple[int, ...] | None = None,
        programs: tuple[int, ...] | None = None,
        program_changes: bool = True,
    ) -> None:
        self.channels = channels or tuple(i.channel for i in INSTRUMENTS)
        self.programs = programs or tuple(i.program for i in INSTRUMENTS)
        if len(self.channels) != len(INSTRUMENTS) or len(self.programs) != len(INSTRUMENTS):
            raise CodecError(f"channels and programs need one entry per instrument class ({len(INSTRUMENTS)})")
        if not all(_is_int(c, 15) for c in self.channels) or not all(_is_int(p, 127) for p in self.programs):
            raise CodecError("channels must be 0-15 and programs 0-127")
        self._program_changes = program_changes
        self._step = 0
        self._velocity = V.bin_velocity(V.VELOCITY_BINS * 5 // 8)  # mezzo-forte until a VEL token says otherwise
        self._held: dict[tuple[int, int], int] = {}  # (class, pitch) -> sounding count
        self._pedal = [False] * len(INSTRUMENTS)
        self._announced: set[int] = set()
        self.style: str | None = None
        self.instrument_set: list[int] = []
        self.ended = False

    @property
    def time(self) -> float:
        """Current decoding time in seconds."""
        return self._step * V.GRID_S

    @property
    def held(self) -> dict[tuple[int, int], int]:
        """Sounding notes: (instrument class, pitch) -> count."""
        return dict(self._held)

    @property
    def sounding(self) -> int:
        """How many notes are sounding."""
        return sum(self._held.values())

    def feed(self, token: int) -> list[Timed]:
        """Decode one token id (0..VOCAB_SIZE-1); raises CodecError for anything else."""
        try:
            if isinstance(token, bool):
                raise TypeError
            token = operator.index(token)  # ints and numpy integers; never floats, strings or bools
        except TypeError:
            raise CodecError(f"token must be an integer, got {token!r}") from None
        if not 0 <= token < V.VOCAB_SIZE:
            raise CodecError(f"token {token} outside the vocabulary 0..{V.VOCAB_SIZE - 1}")
        kind, arg = V.token_kind(token)
        return _DECODE[kind](self, arg)

    def finish(self) -> list[Timed]:
        """End every sounding note (and release pedals) at the current time."""
        out = []
        for (cls, pitch), count in sorted(self._held.items()):
            out += [self._msg("note_off", cls, note=pitch, velocity=0)] * count
        self._held.clear()
        for cls, down in enumerate(self._pedal):
            if down:
                out += self._pedal_msg(cls, False)
        return out

    def _msg(self, type_: str, cls: int, **kw) -> Timed:
        # Every value is in range by construction (checked tables, 0-127 pitches), so skip mido's checks:
        # they are most of the cost of decoding a token.
        return Timed(self.time, mido.Message(type_, skip_checks=True, channel=self.channels[cls], **kw))

    def _announce(self, cls: int) -> list[Timed]:
        """Program change for a class's channel before its first message (none for drums)."""
        if cls in self._announced:
            return []
        self._announced.add(cls)
        if not self._program_changes or cls == DRUMS or self.channels[cls] == DRUM_CHANNEL:
            return []
        return [self._msg("program_change", cls, program=self.programs[cls])]

    def _pedal_msg(self, cls: int, down: bool) -> list[Timed]:
        if self._pedal[cls] == down:
            return []
        self._pedal[cls] = down
        value = 127 if down else 0
        return self._announce(cls) + [self._msg("control_change", cls, control=SUSTAIN_CC, value=value)]

    def _nothing(self, arg: int) -> list[Timed]:
        return []

    def _bos(self, arg: int) -> list[Timed]:
        self.ended = False
        self.instrument_set = []
        return []

    def _eos(self, arg: int) -> list[Timed]:
        self.ended = True
        return self.finish()

    def _style(self, arg: int) -> list[Timed]:
        self.style = V.STYLES[arg]
        return []

    def _set(self, arg: int) -> list[Timed]:
        if arg not in self.instrument_set:
            self.instrument_set.append(arg)
        return []

    def _time(self, arg: int) -> list[Timed]:
        self._step += arg + 1
        return []

    def _vel(self, arg: int) -> list[Timed]:
        self._velocity = V.bin_velocity(arg)
        return []

    def _pedal_on(self, arg: int) -> list[Timed]:
        return self._pedal_msg(arg, True)

    def _pedal_off(self, arg: int) -> list[Timed]:
        return self._pedal_msg(arg, False)

    def _note_on(self, arg: int) -> list[Timed]:
        cls, pitch = divmod(arg, V.N_PITCHES)
        out = self._announce(cls)
        self._held[(cls, pitch)] = self._held.get((cls, pitch), 0) + 1
        out.append(self._msg("note_on", cls, note=pitch, velocity=self._velocity))
        return out

    def _note_off(self, arg: int) -> list[Timed]:
        cls, pitch = divmod(arg, V.N_PITCHES)
        count = self._held.get((cls, pitch), 0)
        if count == 0:
            return []
        if count == 1:
            del self._held[(cls, pitch)]
        else:
            self._held[(cls, pitch)] = count - 1
        return [self._msg("note_off", cls, note=pitch, velocity=0)]


# Segment name -> decoder method: a table instead of branching.
_DECODE = {
    "pad": EventDecoder._nothing,
    "bos": EventDecoder._bos,
    "eos": EventDecoder._eos,
    "style": EventDecoder._style,
    "set": EventDecoder._set,
    "time": EventDecoder._time,
    "velocity": EventDecoder._vel,
    "pedal_on": EventDecoder._pedal_on,
    "pedal_off": EventDecoder._pedal_off,
    "note_on": EventDecoder._note_on,
    "note_off": EventDecoder._note_off,
}
assert set(_DECODE) == {name for name, _, _ in V.SEGMENTS}


def encode_events(events: list[Timed] | tuple[Timed, ...], end_time: float | None = None) -> list[int]:
    """Encode a whole list of timed messages (sorted by time) and close open notes at `end_time`."""
    encoder = EventEncoder()
    tokens: list[int] = []
    for time_s, msg in events:
        tokens += encoder.feed(time_s, msg)
    return tokens + encoder.finish(end_time)


def decode_tokens(tokens, **decoder_kw) -> list[Timed]:
    """Decode a whole token sequence; notes still sounding at the end are ended at the last time."""
    decoder = EventDecoder(**decoder_kw)
    out: list[Timed] = []
    for token in tokens:
        out += decoder.feed(token)
    return out + decoder.finish()
