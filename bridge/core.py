"""The live bridge: ports in, engine worker, scheduler out, clock follower, modes, panic and recording.

Threads (none at import time, none before start()):
  - the MIDI backend's callback: timestamps raw bytes and puts them on the input queue, nothing else;
  - input thread: parse, feedback suppression, clock, channel filter, CC map, panic, thru, recording; player
    notes go on to the worker queue (thru never waits for the engine);
  - engine worker: the current mode (engine requests happen only here), ticks every tick_s;
  - scheduler thread (bridge/scheduler.py) and the engine watcher (bridge/engine_link.py).
Tests drive the same logic without threads: pump() drains both queues, ticks the mode and runs the scheduler.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

import mido
from musebridge.engine.errors import EngineError
from musebridge.engine.instruments import INSTRUMENT_NAMES, INSTRUMENTS

from .clock import Clock, try_realtime
from .config import BridgeConfig
from .engine_link import EngineLink, to_wire
from .errors import BridgeError, EngineLost
from .feedback import EchoFilter
from .journal import TakeJournal, recover_takes
from .midiclock import ClockFollower
from .modes import MODE_CLASSES, Mode
from .notes import ALL_NOTES_OFF, is_note_off, is_note_on
from .ports import Backend
from .recorder import Recorder
from .scheduler import ENGINE, THRU, Scheduler

log = logging.getLogger(__name__)

REALTIME = ("clock", "start", "stop", "continue", "songpos")
RECONNECT_S = 2.0
_STOP = object()


class Bridge:
    """One live session. backend: ports (rtmidi or in-memory); link: the engine session; clock: time source."""

    def __init__(self, config: BridgeConfig, backend: Backend, link: EngineLink, clock: Clock, supervisor=None):
        self.config, self.backend, self.link, self.clock = config, backend, link, clock
        self.origin = clock.now()  # session time 0
        self.follower = ClockFollower(config.clock, start=self.origin)
        self.echo = EchoFilter()
        self.inbox: queue.SimpleQueue = queue.SimpleQueue()  # (time s, raw bytes) from the MIDI callback
        self.work: queue.SimpleQueue = queue.SimpleQueue()  # items for the engine worker
        self.in_port = self.out_port = None
        self.scheduler: Scheduler | None = None
        self.recorder: Recorder | None = None
        self.mode: Mode = MODE_CLASSES[config.mode](self)
        self.engine_ok = False
        self.lost_reason = ""
        self.counts = {"in": 0, "out": 0, "malformed": 0}
        self.latencies: deque[float] = deque(maxlen=1000)  # player/trigger -> first engine note sent, seconds
        self._next_reconnect = 0.0
        self._lost_at = 0.0  # when the engine was last lost (clock seconds)
        self.supervisor = supervisor  # the engine process this bridge started (launcher.EngineProcess): revived
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()
        self._stopped = False
        self._channel_map = config.channel_map()
        self._notes: dict[tuple[int, int], tuple[float, float]] = {}  # play(): note-ons awaiting note-offs
        self._opened = 0  # the engine link's session count this bridge has set its time origin for
        self._step_epoch = 0  # the scheduler's silence epoch when the current worker step began

    # -- setup -----------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the ports and the engine session (PortError / EngineLost with a one-line message)."""
        cfg = self.config
        if cfg.record:  # the take's folder is checked (its journal made) before any port opens
            recover_takes(cfg.record)
            self.recorder = Recorder(self.origin, self._engine_channels(), TakeJournal(cfg.record))
        try:
            self._open_ports()
        except BridgeError:
            self._drop_take()  # nothing was played: no take to write, no journal to keep
            raise
        self._connect(self.clock.now())

    def _open_ports(self) -> None:
        cfg = self.config
        self.out_port = self.backend.open_output(cfg.out_port, cfg.out_name)
        self.scheduler = Scheduler(self._send, self.clock, cfg.scheduler)
        self.scheduler.on_sent.append(self._count_out)
        if cfg.suppress_feedback:
            self.scheduler.on_sent.append(self.echo.sent)
        if self.recorder is not None:
            self.scheduler.on_sent.append(self.recorder.sent)
        self.in_port = self.backend.open_input(cfg.in_port, self._callback, cfg.in_name)

    def _drop_take(self) -> None:
        if self.recorder is not None and self.recorder.journal is not None:
            self.recorder.journal.close()
        self.recorder = None

    def _engine_channels(self) -> set[int]:
        names = self.link.params.get("instruments", ["piano"])
        return {self._channel_map.get(INSTRUMENTS[INSTRUMENT_NAMES.index(n)].channel,
                                      INSTRUMENTS[INSTRUMENT_NAMES.index(n)].channel)
                for n in names if n in INSTRUMENT_NAMES}

    def _send(self, msg: mido.Message) -> None:
        port = self.out_port
        if port is not None:
            port.send(msg)

    def _count_out(self, _t: float, _msg: mido.Message, _source: str) -> None:
        self.counts["out"] += 1

    def _callback(self, data: list[int]) -> None:
        """The MIDI callback: timestamp and enqueue, nothing else."""
        self.inbox.put((self.clock.now(), data))

    def _connect(self, now: float) -> None:
        try:
            self.link.open()
        except EngineLost as exc:
            self._lost(str(exc), now)
            return
        if self.lost_reason:
            log.warning("engine back after %.1f s", now - self._lost_at)
        if self.supervisor is not None:
            self.supervisor.answered()
        self.engine_ok, self.lost_reason = True, ""
        self._sync_session(now)

    def _sync_session(self, now: float) -> None:
        """A new engine session (first connect, reconnect, or re-created after a reclaim) starts its timeline at
        0: session time restarts now, and the mode starts over."""
        if self.link.opened != self._opened:
            self._opened = self.link.opened
            self.origin = now - self.link.resumed_at  # a re-created session was fed the player's last seconds
            self.mode.enter(now)

    # -- time ------------------------------------------------------------------------------------------------
    def session_time(self, wall: float) -> float:
        """Engine session seconds for a bridge clock time."""
        return max(0.0, wall - self.origin)

    def wall_time(self, session: float) -> float:
        return self.origin + session

    def engine_time(self) -> float:
        """End of the engine's planned timeline (session seconds)."""
        return float(self.link.feed([]).get("time", 0.0))

    # -- engine helpers for the modes ----------------------------------------------------------------------
    def wire(self, items: list[tuple[float, mido.Message]],
             engine_ends: list[tuple[float, mido.Message]] = ()) -> list[dict]:
        """Player messages at bridge clock times -> protocol events (session times). engine_ends: note-offs
        (engine channels) for engine notes the bridge ended itself, marked `"engine": true`."""
        events = [to_wire(self.session_time(t), m) for t, m in items]
        return events + [{**to_wire(self.session_time(t), m), "engine": True} for t, m in engine_ends]

    def feed(self, items: list[tuple[float, mido.Message]],
             engine_ends: list[tuple[float, mido.Message]] = ()) -> dict:
        """wire() the messages and feed them to the engine; returns the reply (rolled_back, time)."""
        return self.link.feed(self.wire(items, engine_ends))

    def play(self, events, to_wall: Callable[[float], float], quantize: bool = True) -> list:
        """Schedule engine events (time, message): times mapped by to_wall, channels remapped, program changes
        dropped unless enabled, note-ons quantized to the clock grid unless told not to (their note-offs move
        with them, also when a later request brings the note-off; never into the past). A note-off is never due
        before its note-on (a later request may map times differently: a new tempo, a relocation). Returns the
        scheduled (due time, message) pairs."""
        out, notes = [], self._notes  # (channel, note) -> (seconds its note-on was moved, its due time)
        now = self.clock.now()
        for t, msg in events:
            if msg.type == "program_change" and not self.config.program_changes:
                continue
            if hasattr(msg, "channel") and msg.channel in self._channel_map:
                msg = msg.copy(channel=self._channel_map[msg.channel])
            due = to_wall(t)
            key = (getattr(msg, "channel", -1), getattr(msg, "note", -1))
            if is_note_on(msg):
                shift = self.follower.quantize(due, not_before=now) - due if quantize else 0.0
                due += shift
                notes[key] = (shift, due)
            elif is_note_off(msg):
                shift, on_due = notes.pop(key, (0.0, due))
                due = max(due + shift, on_due)
            out.append((due, msg))
        # silenced while the engine was asked (a transport stop, CC123...): that answer is not played
        return out if self.scheduler.schedule_events(out, ENGINE, epoch=self._step_epoch) else []

    # -- input -----------------------------------------------------------------------------------------------
    def handle_input(self, t: float, data: list[int]) -> None:
        """One incoming message (bytes) received at t (seconds). Runs on the input thread."""
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
        if self.config.thru or self.mode.name == "thru":
            self.scheduler.send_now(msg, THRU)
        if msg.type in ("note_on", "note_off") or (msg.type == "control_change" and msg.control == 64):
            self.work.put(("player", t, msg))

    def _unheard_panic(self, msg: mido.Message) -> bool:
        """A CC123 like one just sent is still obeyed while notes sound: the player's own panic is never taken
        for an echo, and an echo that does get through (nothing sounds after a panic) cannot loop."""
        return msg.type == "control_change" and msg.control == ALL_NOTES_OFF and self.scheduler.sounding() > 0

    def _transport(self, t: float, msg: mido.Message) -> None:
        kind = self.follower.handle(t, msg)
        if kind == "stop":
            self.panic("transport stop")
            self.work.put(("transport", False, t))
        elif kind in ("start", "continue") or (kind == "position" and self.follower.running):
            self.work.put(("transport", True, t))  # a song position while playing relocates: modes re-anchor

    def _control(self, t: float, msg: mido.Message) -> bool:
        """Handle CC123 and mapped CCs; True when consumed."""
        if msg.control == ALL_NOTES_OFF:
            self.panic("CC123 all notes off")
            return True
        action = self.config.cc.action(msg.channel, msg.control)
        if action is None:
            return False
        if action == "stop":  # like CC123, at once and engine or not; the worker restarts the mode ("silenced")
            if msg.value >= 64:
                self.panic("stop CC")
            return True
        self.work.put(("action", action, msg.value, t))
        return True

    # -- engine worker ----------------------------------------------------------------------------------------
    def process(self, item) -> None:
        """One worker item. Runs on the engine worker thread; EngineLost silences everything."""
        self._step_epoch = self.scheduler.epoch if self.scheduler is not None else 0
        now = self.clock.now()
        try:
            self._process(item, now)
        except EngineLost as exc:
            self._lost(str(exc), now)
        except BridgeError as exc:
            log.warning("%s", exc)

    def _process(self, item, now: float) -> None:
        kind = item[0]
        if self.engine_ok:
            self._sync_session(now)
        if kind == "lost":
            self._lost(item[1], now)
        elif not self.engine_ok:
            return  # nothing to do without an engine; thru still works on the input thread
        elif kind == "player":
            self.mode.player(item[1], item[2], now)
        elif kind == "transport":
            self.mode.transport(item[1], now)
        elif kind == "action":
            self._action(item[1], item[2], now)
        elif kind == "mode":
            self.switch_mode(item[1], now, tell_engine=False)
        elif kind == "silenced":
            self.mode.silenced(now)

    def _action(self, action: str, value: int, now: float) -> None:
        if action in MODE_CLASSES:
            if value >= 64:
                self.switch_mode(action, now)
        elif action == "trigger":
            if value >= 64:
                self.mode.trigger(now)
        elif action == "temperature":
            self.link.set(temperature=round(0.1 + 1.9 * value / 127, 3))

    def switch_mode(self, name: str, now: float, tell_engine: bool = True) -> None:
        """Leave the current mode (its notes end) and enter `name`."""
        if name == self.mode.name or name not in MODE_CLASSES:
            return
        self.mode.leave(now)
        self.mode = MODE_CLASSES[name](self)
        self.mode.enter(now)  # before the engine is told: a lost engine must find the new mode ready
        log.info("mode: %s", name)
        if tell_engine:
            self.link.set(mode=name)

    def tick(self, now: float) -> None:
        """Periodic worker step: reconnect after a loss, keep the session alive, let the mode plan."""
        self._step_epoch = self.scheduler.epoch if self.scheduler is not None else 0
        try:
            if not self.engine_ok:
                if now >= self._next_reconnect:
                    self._next_reconnect = now + RECONNECT_S
                    if self.supervisor is not None:
                        self.supervisor.revive()
                    self._connect(now)
                return
            self.link.keepalive()
            self._sync_session(now)
            self.mode.tick(now)
        except EngineLost as exc:
            self._lost(str(exc), now)
        except BridgeError as exc:
            log.warning("%s", exc)

    # -- silencing -------------------------------------------------------------------------------------------
    def panic(self, why: str) -> None:
        """Silence the out port now (any thread): note-offs for held notes, then CC123/CC120 per channel."""
        if self.scheduler is not None:
            log.info("silencing all notes: %s", why)
            self.scheduler.panic()
        self.work.put(("silenced",))

    def _lost(self, reason: str, now: float) -> None:
        if self.engine_ok or not self.lost_reason:
            log.warning("engine lost: %s; silencing and retrying every %g s", reason, RECONNECT_S)
            self._lost_at = now
        self.engine_ok, self.lost_reason = False, reason
        self._next_reconnect = now + RECONNECT_S
        self.link.drop()
        if self.scheduler is not None:
            self.scheduler.panic()
        self.mode.silenced(now)

    def engine_lost(self, reason: str) -> None:
        """From the engine watcher (any thread): silence now, the worker handles the rest."""
        if self.scheduler is not None:
            self.scheduler.panic()
        self.work.put(("lost", reason))

    def engine_params(self, changed: dict) -> None:
        """From the engine watcher: a `set` on our session; a mode change switches mode."""
        if "mode" in changed:
            self.work.put(("mode", changed["mode"]))

    # -- driving ---------------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Without threads (tests): handle all queued input and work, tick the mode, send what is due."""
        while not self.inbox.empty():
            self.handle_input(*self.inbox.get())
        while not self.work.empty():
            self.process(self.work.get())
        now = self.clock.now()
        self.tick(now)
        self.scheduler.run_due(now)

    def start(self) -> None:
        """Start the input thread, the engine worker and the scheduler thread."""
        self._running.set()
        self.scheduler.start()
        for name, target in (("input", self._input_loop), ("engine-worker", self._work_loop)):
            thread = threading.Thread(target=target, name=f"musebridge-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _input_loop(self) -> None:
        if self.config.scheduler.realtime_priority:
            try_realtime(max(1, self.config.scheduler.realtime_priority - 1))
        while True:
            item = self.inbox.get()
            if item is _STOP:
                return
            self.handle_input(*item)

    def _work_loop(self) -> None:
        if self.config.scheduler.realtime_priority:
            try_realtime(max(1, self.config.scheduler.realtime_priority - 2))
        tick = self.config.tick_s
        while self._running.is_set():
            try:
                if not self._work_once(tick):
                    return
            except Exception:  # noqa: BLE001 - a bug must not end the worker and leave notes sounding
                log.exception("engine worker: unexpected error; silencing and carrying on")
                self.scheduler.panic()
                time.sleep(tick)  # an error that repeats does not spin

    def _work_once(self, tick: float) -> bool:
        """Wait for one work item (at most until the mode's next tick) and handle it; False at the sentinel."""
        try:
            item = self.work.get(timeout=max(0.0, min(tick, self.mode.wake_in(self.clock.now()))))
        except queue.Empty:
            item = None
        if item is _STOP:
            return False
        if item is not None:
            self.process(item)
        self.tick(self.clock.now())
        return True

    def stop(self) -> None:
        """Stop everything and silence the out port; write the recording. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._running.clear()
        self.inbox.put(_STOP)  # input that still arrives is dropped: the input thread ends at the sentinel
        self.work.put(_STOP)
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()
        if self.scheduler is not None:
            self.scheduler.stop(panic=True)
        self.link.close()
        if self.recorder is not None and self.config.record:
            try:
                self.recorder.write(self.config.record, self.clock.now())
            except EngineError as exc:  # the folder went away mid-take: the journal keeps it (bridge/journal.py)
                log.error("%s", exc)
            self.recorder = None
        # The ports go last: the notes are silenced and the take is saved even if a MIDI driver fails on close
        # (JACK's port teardown races its process thread in rtmidi; docs/live.md, "Design decisions").
        for name in ("in_port", "out_port"):
            port = getattr(self, name)
            if port is not None:
                port.close()
                setattr(self, name, None)
