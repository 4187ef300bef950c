"""The output scheduler: sends each event at its due time, tracks every sounding note, and silences on demand.

    sched = Scheduler(out_port.send, MonotonicClock(), SchedulerConfig())
    sched.start()                                    # a thread that sleeps, then spins to each due time
    sched.schedule_events([(due_s, msg), ...])       # engine notes; note ids are paired automatically
    sched.cancel_after(t)                            # engine rolled back: drop what is planned after t
    sched.panic()                                    # note-offs for held notes, then CC123/CC120

Times are seconds on the scheduler's Clock. All state is behind one lock: the input thread (thru), the engine
worker (schedule, cancel) and the engine watcher (panic) may call in at any time. Without start(), a test drives it
with run_due(now) and a FakeClock.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import mido

from .clock import RT_SPIN_S, Clock, try_realtime
from .notes import HeldNotes, is_note_off, is_note_on, note_off

log = logging.getLogger(__name__)

ENGINE, THRU, GUARD = "engine", "thru", "guard"


@dataclass(frozen=True)
class SchedulerConfig:
    """max_note_s: a note still sounding this many seconds after its note-on is ended (no stuck notes).
    late_drop_s: an engine note-on that could only be sent this many seconds after its due time is dropped
    (with its note-off) instead of sounding late. stats: timing errors kept for the percentiles.
    realtime_priority: SCHED_FIFO priority of the sending thread where allowed (0: never ask)."""

    max_note_s: float = 8.0
    late_drop_s: float = 0.05
    stats: int = 10_000
    realtime_priority: int = 5


@dataclass(order=True)
class _Item:
    due: float
    seq: int
    msg: mido.Message = field(compare=False)
    note_id: int | None = field(compare=False, default=None)
    source: str = field(compare=False, default=ENGINE)
    cancelled: bool = field(compare=False, default=False)


class Scheduler:
    """Due-time sender with note ids. send: called with each mido.Message to go out (under the lock).
    on_sent: optional listeners called as (time_s, msg, source) after each send (recording, feedback filter)."""

    def __init__(self, send: Callable[[mido.Message], None], clock: Clock, config: SchedulerConfig | None = None):
        self._send = send
        self.clock = clock
        self.config = config or SchedulerConfig()
        self.held = HeldNotes()
        self.on_sent: list[Callable[[float, mido.Message, str], None]] = []
        self.errors_s: deque[float] = deque(maxlen=self.config.stats)  # sent time - due time, seconds
        self.dropped_late = 0
        self.epoch = 0  # counts panics: plans made before one are refused (schedule_events(epoch=...))
        self._heap: list[_Item] = []
        self._seq = itertools.count()
        self._ids = itertools.count(1)
        self._open: dict[tuple[int, int], int] = {}  # scheduled note-on waiting for its note-off -> id
        self._source_of: dict[int, str] = {}  # note id -> source (pruned when the note ends)
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- planning --------------------------------------------------------------------------------------------
    def schedule(self, due: float, msg: mido.Message, source: str = ENGINE) -> int | None:
        """Queue one message for `due` (seconds). Note-ons get a fresh id, and the next note-off for the same
        (channel, note) gets the same id. Returns the note id (None for other messages)."""
        with self._lock:
            note_id = None
            key = (getattr(msg, "channel", 0), getattr(msg, "note", 0))
            if is_note_on(msg):
                note_id = self._open[key] = next(self._ids)
                self._source_of[note_id] = source
            elif is_note_off(msg):
                note_id = self._open.pop(key, None)
            item = _Item(due, next(self._seq), msg, note_id, source)
            heapq.heappush(self._heap, item)
            if self._heap[0] is item:
                self._wake.set()
            return note_id

    def schedule_events(self, events: Iterable[tuple[float, mido.Message]], source: str = ENGINE,
                        epoch: int | None = None) -> bool:
        """schedule() for (due_s, msg) pairs, in time order. With `epoch` (a value of self.epoch read before
        the events were asked for), nothing is scheduled when a panic came in between; returns False then."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return False
            for due, msg in sorted(events, key=lambda e: e[0]):
                self.schedule(due, msg, source)
            return True

    def cancel_after(self, when: float, source: str = ENGINE) -> int:
        """Drop `source`'s events due after `when` (seconds) that are not yet sent, except note-offs of notes
        already sounding (what has sounded is never taken back, and never left hanging). Returns how many."""
        with self._lock:
            n = 0
            for item in self._heap:
                if item.cancelled or item.source != source or item.due <= when:
                    continue
                if is_note_off(item.msg) and item.note_id is not None and self.held.is_sounding(item.note_id):
                    continue
                item.cancelled = True
                if is_note_on(item.msg):
                    self._source_of.pop(item.note_id, None)
                n += 1
            self._open = {k: v for k, v in self._open.items() if self._live_id(v)}
            return n

    def _live_id(self, note_id: int) -> bool:
        """A note id whose note-on is still pending or sounding."""
        if self.held.is_sounding(note_id):
            return True
        return any(i.note_id == note_id and not i.cancelled and is_note_on(i.msg) for i in self._heap)

    def release(self, source: str = ENGINE) -> None:
        """Stop `source` at once: cancel all its pending events and send note-offs for its sounding notes."""
        with self._lock:
            for item in self._heap:
                if item.source == source:
                    item.cancelled = True
            self._open = {k: v for k, v in self._open.items() if self._source_of.get(v) != source}
            mine = {nid for nid in self.held.sounding.values() if self._source_of.get(nid) == source}
            for msg in self.held.release(keep=lambda nid: nid not in mine):
                self._emit(msg, source)

    def panic(self) -> None:
        """Silence everything now: drop every pending event, note-off for each held note, then CC123 and CC120
        on every channel used."""
        with self._lock:
            self.epoch += 1
            self._heap.clear()
            self._open.clear()
            self._source_of.clear()
            for msg in self.held.panic():
                self._emit(msg, "panic")

    def sounding(self) -> int:
        """How many notes this scheduler has started and not yet ended."""
        with self._lock:
            return len(self.held)

    # -- sending ---------------------------------------------------------------------------------------------
    def send_now(self, msg: mido.Message, source: str = THRU) -> None:
        """Send at once (thru, control). Notes are tracked like scheduled ones, so a panic also ends them."""
        with self._lock:
            if is_note_on(msg):
                for before in self.held.note_on(msg, None):
                    self._emit(before, source)
            elif is_note_off(msg) and not self.held.note_off(msg, None):
                return
            self._emit(msg, source)

    def next_due(self) -> float | None:
        with self._lock:
            while self._heap and self._heap[0].cancelled:
                heapq.heappop(self._heap)
            return self._heap[0].due if self._heap else None

    def run_due(self, now: float | None = None) -> int:
        """Send every event due at or before `now` (default: the clock's now). Returns how many were sent."""
        sent = 0
        with self._lock:
            now = self.clock.now() if now is None else now
            while self._heap and self._heap[0].due <= now:
                item = heapq.heappop(self._heap)
                if not item.cancelled:
                    sent += self._fire(item, now)
        return sent

    def _fire(self, item: _Item, now: float) -> int:
        msg = item.msg
        if is_note_on(msg):
            if item.source != THRU and now - item.due > self.config.late_drop_s:
                self.dropped_late += 1
                self._source_of.pop(item.note_id, None)
                return 0
            for before in self.held.note_on(msg, item.note_id):
                self._emit(before, item.source)
            guard = _Item(now + self.config.max_note_s, next(self._seq), note_off(msg.channel, msg.note),
                          item.note_id, GUARD)
            heapq.heappush(self._heap, guard)
        elif is_note_off(msg):
            self._source_of.pop(item.note_id, None)
            if not self.held.note_off(msg, item.note_id):
                return 0
        sent_at = self._emit(msg, item.source)
        if item.source != GUARD:
            self.errors_s.append(sent_at - item.due)
        return 1

    def _emit(self, msg: mido.Message, source: str) -> float:
        try:
            self._send(msg)
        except (OSError, ValueError) as exc:  # a vanished port must not kill the scheduler
            log.warning("cannot send %s: %s", msg, exc)
        t = self.clock.now()
        for listener in self.on_sent:
            listener(t, msg, source)
        return t

    # -- thread ----------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Run the sending loop in a daemon thread until stop()."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="musebridge-scheduler", daemon=True)
        self._thread.start()

    def stop(self, panic: bool = True) -> None:
        """Stop the thread; with panic (the default) silence everything first."""
        if panic:
            self.panic()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def _loop(self) -> None:
        prio = self.config.realtime_priority
        if prio and try_realtime(prio) and isinstance(getattr(self.clock, "spin_s", None), float):
            self.clock.spin_s = min(self.clock.spin_s, RT_SPIN_S)
        while not self._stop.is_set():
            self._wake.clear()
            due = self.next_due()
            if due is None:
                self._wake.wait(0.1)
                continue
            if self.clock.sleep_until(due, self._wake):
                self.run_due()
