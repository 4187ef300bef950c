"""The input stage: the MIDI callback timestamps and queues, the input thread does the rest.

    callback(data)          on the MIDI driver's thread: (clock now, bytes) onto the inbox, nothing else
    handle(t, data)         on the input thread: parse, echo filter, MIDI clock and transport, CC map and panic,
                            channel filter, recording, thru; player notes go on to the engine worker as typed
                            work events (bridge/work.py), so thru never waits for the engine; at most
                            MAX_BACKLOG of them wait for it (a flood cannot grow memory or delay answers)

Times are seconds on the bridge clock.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable

import mido

from .clock import Clock, try_realtime
from .config import BridgeConfig
from .feedback import EchoFilter
from .midiclock import ClockFollower
from .notes import ALL_NOTES_OFF
from .output import OutputStage
from .recorder import Recorder
from .work import STOP, Control, PlayerNote, Silenced, Transport, WorkEvent

log = logging.getLogger(__name__)

REALTIME = ("clock", "start", "stop", "continue", "songpos")
# Player events waiting for the engine worker beyond which new notes are not passed on: under a MIDI flood
# (a stuck controller, a feedback loop) the worker, which asks the engine about each note, cannot keep up, and
# an unbounded backlog held memory and delayed the first answer after the flood by seconds. 128 events is a
# two-handed glissando; a player's chord is far below it.
MAX_BACKLOG = 128
IDLE_S = 0.05  # the input thread's wait for input before it passes on held-back events (seconds)


class InputStage:
    """The player's side of the bridge. work: the engine worker's queue. thru_mode: True while the current mode
    passes notes thru. counts: the bridge's traffic counters ("in", "malformed" and "dropped" are counted here).
    recorder: set once a take is recorded."""

    def __init__(self, config: BridgeConfig, clock: Clock, follower: ClockFollower, echo: EchoFilter,
                 output: OutputStage, work: queue.SimpleQueue, thru_mode: Callable[[], bool],
                 counts: dict[str, int]):
        self.config, self.clock, self.follower, self.echo = config, clock, follower, echo
        self.output, self.work, self._thru_mode, self.counts = output, work, thru_mode, counts
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # (time s, raw bytes) from the MIDI callback
        self.recorder: Recorder | None = None
        self._held: set[tuple[int, int]] = set()  # (channel, note) of note-ons passed on, not yet ended
        self._held_back: dict[str, WorkEvent] = {}  # the latest pedal, transport, control change per kind,
        # held back by a full backlog until an event passes

    def callback(self, data: list[int]) -> None:
        """The MIDI callback: timestamp and enqueue, nothing else."""
        self.inbox.put((self.clock.now(), data))

    def handle(self, t: float, data: list[int]) -> None:
        """One incoming message (bytes) received at t (seconds)."""
        raw = bytes(data)
        try:
            msg = mido.Message.from_bytes(raw)
        except (ValueError, TypeError, IndexError):
            self.counts["malformed"] += 1
            log.debug("ignoring malformed MIDI bytes %s", raw.hex(" "))
            return
        if self.config.suppress_feedback and self.echo.is_echo(t, raw) and not self._unheard_panic(msg):
            return
        if msg.type in REALTIME:
            self._transport(t, msg)
            return
        channel = getattr(msg, "channel", None)
        if msg.type == "control_change" and self._control(t, msg):
            return
        if self.config.channel is not None and channel is not None and channel != self.config.channel:
            return
        self.counts["in"] += 1
        if self.recorder is not None:
            self.recorder.player(t, msg)
        if self.config.thru or self._thru_mode():
            self.output.thru(msg)
        if msg.type in ("note_on", "note_off") or (msg.type == "control_change" and msg.control == 64):
            self._to_worker(PlayerNote(t, msg))

    def _to_worker(self, event: PlayerNote) -> None:
        """Pass a player's note or pedal to the engine worker, unless MAX_BACKLOG events already wait: then a
        note-on is dropped (counted in "dropped"), and so is a note-off of a key the worker does not hold; only
        the latest pedal change is kept (`_put`). A note-off of a note the worker has is always passed, so the
        engine's answers to it end."""
        msg = event.msg
        full = self.work.qsize() >= MAX_BACKLOG
        if msg.type == "control_change":
            self._put(event, "pedal")
            return
        if msg.type == "note_on" and msg.velocity > 0:
            if full:
                if not self.counts["dropped"]:
                    log.warning("the engine is behind the player (%d events waiting): dropping new notes until "
                                "it catches up", MAX_BACKLOG)
                self.counts["dropped"] += 1
                return
            self._held.add((msg.channel, msg.note))
        elif (msg.channel, msg.note) in self._held:
            self._held.discard((msg.channel, msg.note))
        elif full:
            return
        self._put(event)

    def _put(self, event: WorkEvent, kind: str | None = None) -> None:
        """Queue `event` for the worker. A `kind` of event (pedal, transport, a control) is only the latest of its
        kind while MAX_BACKLOG events wait: it is held back, replacing an earlier one, until an event passes."""
        if kind is not None and self.work.qsize() >= MAX_BACKLOG:
            self._held_back.pop(kind, None)
            self._held_back[kind] = event
            return
        self.idle()
        self.work.put(event)

    def idle(self) -> None:
        """Queue the held-back events once fewer than MAX_BACKLOG wait (the input thread calls this when no input
        has come for IDLE_S)."""
        if self._held_back and self.work.qsize() < MAX_BACKLOG:
            for held in self._held_back.values():
                self.work.put(held)
            self._held_back.clear()

    def _unheard_panic(self, msg: mido.Message) -> bool:
        """A CC123 like one just sent is still obeyed while notes sound: the player's own panic is never taken
        for an echo, and an echo that does get through (nothing sounds after a panic) cannot loop."""
        return msg.type == "control_change" and msg.control == ALL_NOTES_OFF and self.output.sounding() > 0

    def _transport(self, t: float, msg: mido.Message) -> None:
        kind = self.follower.handle(t, msg)
        if kind == "stop":
            self.silence("transport stop")
            self._put(Transport(False, t), "transport")
        elif kind in ("start", "continue") or (kind == "position" and self.follower.running):
            self._put(Transport(True, t), "transport")  # a song position while playing relocates: modes re-anchor

    def _control(self, t: float, msg: mido.Message) -> bool:
        """Handle CC123 and mapped CCs; True when consumed."""
        if msg.control == ALL_NOTES_OFF:
            self.silence("CC123 all notes off")
            return True
        action = self.config.cc.action(msg.channel, msg.control)
        if action is None:
            return False
        if action == "stop":  # like CC123, at once and engine or not; the worker restarts the mode (Silenced)
            if msg.value >= 64:
                self.silence("stop CC")
            return True
        self._put(Control(action, msg.value, t), f"control {action}")
        return True

    def silence(self, why: str) -> None:
        """Silence the out port now (any thread) and tell the worker (its mode pauses or starts over); under a
        flood of panics (2 x MAX_BACKLOG events waiting) the worker has been told already."""
        self.output.panic(why)
        if self.work.qsize() < 2 * MAX_BACKLOG:
            self.work.put(Silenced())

    def run(self) -> None:
        """The input thread: handle the inbox until Stop (what arrives after it is dropped)."""
        if self.config.scheduler.realtime_priority:
            try_realtime(max(1, self.config.scheduler.realtime_priority - 1))
        while True:
            try:
                item = self.inbox.get(timeout=IDLE_S)
            except queue.Empty:
                self.idle()
                continue
            if item is STOP:
                return
            self.handle(*item)

    def stop(self) -> None:
        self.inbox.put(STOP)
