"""The output stage: the one place that knows what sounds.

It owns the out port's sender (bridge/scheduler.py: due times, note ids, the held-note set, the maximum note
length, silence epochs), the quantization shift of every engine note still waiting for its note-off, the harmony
voices sounding under each player key, and the player's keys that are down. Modes reach it only through their
context (bridge/context.py); the input stage sends thru and silences through it. Times are seconds on the bridge
clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import mido

from .clock import Clock
from .notes import is_note_off, is_note_on
from .ports import OutPort
from .scheduler import ENGINE, THRU, Scheduler, SchedulerConfig

log = logging.getLogger(__name__)

Key = tuple[int, int]  # (MIDI channel 0-15, note 0-127)
Events = Iterable[tuple[float, mido.Message]]


class Grid(Protocol):
    """Quantization: t (seconds) moved to the clock's grid, never before not_before (midiclock.ClockFollower)."""

    def quantize(self, t: float, not_before: float | None = None) -> float: ...


@dataclass(frozen=True)
class OutputConfig:
    """scheduler: sending and note lengths. channel_map: engine channel -> channel sent on (0-15; only remapped
    channels). program_changes: send the engine's program changes (else they are dropped)."""

    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    channel_map: Mapping[int, int] = field(default_factory=dict)
    program_changes: bool = True


class OutputStage:
    """What sounds on the out port, and everything sent there. counts: the bridge's traffic counters ("out" is
    counted here). The port is attached once open (port); until then nothing is sent."""

    def __init__(self, clock: Clock, config: OutputConfig, grid: Grid, counts: dict[str, int]):
        self.clock, self.config, self._grid, self._counts = clock, config, grid, counts
        self.port: OutPort | None = None
        self.scheduler = Scheduler(self._send, clock, config.scheduler)
        self.scheduler.on_sent.append(self._count)
        self._shifts: dict[Key, tuple[float, float]] = {}  # note-on awaiting its note-off: (shift s, due s)
        self._voices: dict[Key, list[tuple[mido.Message, mido.Message]]] = {}  # player key -> (sent, as made)
        self._keys: set[Key] = set()  # the player's keys down, as the current mode heard them
        self._epoch = 0  # the scheduler's silence epoch when the current worker step began

    def _send(self, msg: mido.Message) -> None:
        port = self.port
        if port is not None:
            port.send(msg)

    def _count(self, _t: float, _msg: mido.Message, _source: str) -> None:
        self._counts["out"] += 1

    # -- the engine's notes ----------------------------------------------------------------------------------
    def begin_step(self) -> None:
        """A worker step starts: what it plays is refused if a silencing comes before it is scheduled."""
        self._epoch = self.scheduler.epoch

    def play(self, events: Events, to_wall: Callable[[float], float], quantize: bool = True,
             voices_of: Key | None = None, flush: bool = False) -> list[tuple[float, mido.Message]]:
        """Schedule engine events (time, message): times mapped by to_wall, channels remapped, program changes
        dropped unless enabled, note-ons quantized to the clock grid unless told not to (their note-offs move
        with them, also when a later request brings the note-off; never into the past). A note-off is never due
        before its note-on (a later request may map times differently: a new tempo, a relocation). voices_of:
        the note-ons are harmony voices of that player key (end_voices). flush: send what is due at once.
        Returns the scheduled (due time, message) pairs; none when a silencing came during this worker step."""
        out, made, shifts, channels = [], [], self._shifts, self.config.channel_map
        now = self.clock.now()
        for t, msg in events:
            if msg.type == "program_change" and not self.config.program_changes:
                continue
            sent = msg.copy(channel=channels[msg.channel]) if getattr(msg, "channel", -1) in channels else msg
            due = to_wall(t)
            key = (getattr(sent, "channel", -1), getattr(sent, "note", -1))
            if is_note_on(sent):
                shift = self._grid.quantize(due, not_before=now) - due if quantize else 0.0
                due += shift
                shifts[key] = (shift, due)
                made.append(msg)
            elif is_note_off(sent):
                shift, on_due = shifts.pop(key, (0.0, due))
                due = max(due + shift, on_due)
            out.append((due, sent))
        if not self.scheduler.schedule_events(out, ENGINE, epoch=self._epoch):
            return []
        if voices_of is not None:
            started = [m for _, m in out if is_note_on(m)]  # one per note-on played, in order
            self._voices.setdefault(voices_of, []).extend(zip(started, made, strict=False))
        if flush:
            self.scheduler.run_due()
        return out

    def end_voices(self, key: Key | None, now: float) -> list[mido.Message]:
        """End the voices sounding for player key `key` (None: none) at `now`, sending what is due at once;
        returns their note-ons as the engine made them (engine channels), for the engine's note-offs."""
        voices = self._voices.pop(key, []) if key is not None else []
        for sent, _ in voices:
            self.scheduler.schedule(now, mido.Message("note_off", channel=sent.channel, note=sent.note), ENGINE)
        self.scheduler.run_due()
        return [made for _, made in voices]

    def forget_voices(self) -> None:
        """Forget which voice belongs to which key (after a silencing: none sounds)."""
        self._voices.clear()

    def voices(self) -> set[Key]:
        """(channel, note) of every voice held for a player key."""
        return {(sent.channel, sent.note) for pairs in self._voices.values() for sent, _ in pairs}

    def release(self) -> None:
        """End the engine's notes now and drop what it has planned (the player's thru notes sound on)."""
        self.scheduler.release(ENGINE)

    def cancel_after(self, t: float) -> None:
        """Drop the engine's planned notes due after t; notes already sounding keep their note-offs."""
        self.scheduler.cancel_after(t, ENGINE)

    def flush(self) -> None:
        """Send everything due now."""
        self.scheduler.run_due()

    # -- the player's notes ----------------------------------------------------------------------------------
    def thru(self, msg: mido.Message) -> None:
        """Pass a player message to the out port at once; a thru note is held until its note-off or a panic."""
        self.scheduler.send_now(msg, THRU)

    def player_key(self, msg: mido.Message) -> None:
        """Track the player's keys: a note-on holds (channel, note) down, its note-off lets it go."""
        key = (getattr(msg, "channel", 0), getattr(msg, "note", -1))
        if is_note_on(msg):
            self._keys.add(key)
        elif is_note_off(msg):
            self._keys.discard(key)

    def keys_down(self) -> int:
        """How many of the player's keys are down."""
        return len(self._keys)

    def forget_keys(self) -> None:
        """Count keys from now on only: a key already down no longer holds anything back."""
        self._keys.clear()

    # -- silencing -------------------------------------------------------------------------------------------
    def panic(self, why: str = "") -> None:
        """Silence the out port now (any thread): note-offs for held notes, then CC123/CC120 per channel used;
        plans made before it are refused."""
        if why:
            log.info("silencing all notes: %s", why)
        self.scheduler.panic()

    def sounding(self) -> int:
        """How many notes the bridge has started on the out port and not yet ended."""
        return self.scheduler.sounding()
