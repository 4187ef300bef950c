"""Recording a live session, both parts, to a Standard MIDI file (written atomically by
engine/tokens/midifile.py)."""

from __future__ import annotations

import threading
from pathlib import Path

import mido
from musebridge.engine.errors import EngineError
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.instruments import INSTRUMENTS
from musebridge.engine.tokens.midifile import write_midi

from .journal import TakeJournal
from .notes import HeldNotes, is_note_off, is_note_on

PLAYER_FALLBACK_CHANNEL = 15  # MIDI channel 16: where the player goes when their channel is the engine's


class Recorder:
    """Collects the player's messages and everything the bridge sent, with times in seconds from `start`.
    engine_channels: channels the engine's instruments play on (the player is kept off them)."""

    def __init__(self, start: float, engine_channels: set[int], journal: TakeJournal | None = None):
        self.start = start
        self.engine_channels = set(engine_channels)
        self.journal = journal  # the take on disk while it is played (bridge/journal.py)
        self._events: list[Timed] = []
        self._lock = threading.Lock()

    def _add(self, item: Timed) -> None:
        with self._lock:
            self._events.append(item)
        if self.journal is not None:
            self.journal.add(item)

    def _player_channel(self, channel: int) -> int:
        return PLAYER_FALLBACK_CHANNEL if channel in self.engine_channels else channel

    def player(self, t: float, msg: mido.Message) -> None:
        """A player message received at t (seconds on the bridge clock)."""
        if not hasattr(msg, "channel"):
            return
        self._add(Timed(max(0.0, t - self.start), msg.copy(channel=self._player_channel(msg.channel))))

    def sent(self, t: float, msg: mido.Message, source: str) -> None:
        """A Scheduler.on_sent listener: the engine's part (thru copies are the player's, recorded already)."""
        if source != "thru" and hasattr(msg, "channel"):
            self._add(Timed(max(0.0, t - self.start), msg))

    def __len__(self) -> int:
        return len(self._events)

    def write(self, path: str | Path, now: float | None = None) -> int:
        """Write everything so far (atomically); returns the number of messages written. Notes still held (a key
        down when the take stops) end at `now` (seconds on the bridge clock; default: the last event). The
        journal is deleted once the file is written, kept (and named in the error) when it cannot be."""
        try:
            count = self._write(path, now)
        except EngineError as exc:
            if self.journal is None:
                raise
            self.journal.close(keep=True)
            raise EngineError(f"{exc}; the take is kept in {self.journal.path}, recovered at the next start "
                              "with --record in that folder") from None
        if self.journal is not None:
            self.journal.close()
        return count

    def _write(self, path: str | Path, now: float | None) -> int:
        with self._lock:
            events = sorted(self._events, key=lambda e: e.time)
        end = events[-1].time if events else 0.0
        events = _every_note_ended(events, end if now is None else max(end, now - self.start))
        names = {i.channel: i.name for i in INSTRUMENTS if i.channel in self.engine_channels}
        players = {e.msg.channel for e in events} - self.engine_channels
        write_midi(events, path, track_names={**names, **{ch: "player" for ch in players}})
        return len(events)


def _every_note_ended(events: list[Timed], end: float) -> list[Timed]:
    """Time-ordered events with a note-off for every note-on, paired as the scheduler pairs them (HeldNotes): a
    key struck again while it sounds is ended just before, and notes sounding at the end end at `end` (seconds,
    not before the last event)."""
    out: list[Timed] = []
    held = HeldNotes()
    for item in events:
        if is_note_on(item.msg):
            out += [Timed(item.time, msg) for msg in held.note_on(item.msg, None)]
        elif is_note_off(item.msg):
            held.note_off(item.msg, None)
        out.append(item)
    return out + [Timed(end, msg) for msg in held.release()]
