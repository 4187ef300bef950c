"""The engine worker: runs the current play mode on typed work events (bridge/work.py) and keeps the engine
session alive (connect, reconnect after a loss, a new session restarts the session clock).

Every engine request happens on this worker's thread. It silences through the output stage when the engine is
lost; while the engine is away it ignores the work (thru keeps working on the input thread). Times are seconds
on the bridge clock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from .clock import try_realtime
from .config import BridgeConfig
from .context import ModeContext, SessionTime
from .engine_link import EngineLink
from .errors import BridgeError, EngineLost
from .modes import MODE_CLASSES, Mode
from .output import OutputStage
from .work import STOP, Control, EngineGone, PlayerNote, Silenced, SwitchMode, Transport, WorkEvent

log = logging.getLogger(__name__)

RECONNECT_S = 2.0


class Worker:
    """The mode and the engine connection. engine_ok / lost_reason: shown in the status line. supervisor: the
    engine process this bridge started (launcher.EngineProcess), revived when it has died."""

    def __init__(self, config: BridgeConfig, link: EngineLink, output: OutputStage, ctx: ModeContext,
                 time: SessionTime, supervisor=None):
        self.config, self.link, self.output, self.ctx, self.time = config, link, output, ctx, time
        self.work: queue.SimpleQueue = queue.SimpleQueue()  # WorkEvent items, or Stop
        self.mode: Mode = MODE_CLASSES[config.mode](ctx)
        self.engine_ok = False
        self.lost_reason = ""
        self.supervisor = supervisor
        self._next_reconnect = 0.0
        self._lost_at = 0.0  # when the engine was last lost (clock seconds)
        self._opened = 0  # the engine link's session count the session clock was set for

    # -- the engine session ----------------------------------------------------------------------------------
    def connect(self, now: float) -> None:
        """Open the engine session; a failure counts as a loss (retried every RECONNECT_S)."""
        try:
            self.link.open()
        except EngineLost as exc:
            self.lost(str(exc), now)
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
            self.time.origin = now - self.link.resumed_at  # a re-created session was fed the player's last seconds
            self.mode.enter(now)

    def lost(self, reason: str, now: float) -> None:
        """The engine is gone: silence, let the mode know, retry in RECONNECT_S."""
        if self.engine_ok or not self.lost_reason:
            log.warning("engine lost: %s; silencing and retrying every %g s", reason, RECONNECT_S)
            self._lost_at = now
        self.engine_ok, self.lost_reason = False, reason
        self._next_reconnect = now + RECONNECT_S
        self.link.drop()
        self.output.panic()
        self.mode.silenced(now)

    # -- work ------------------------------------------------------------------------------------------------
    def process(self, event: WorkEvent) -> None:
        """One work event. EngineLost silences everything; another BridgeError is logged."""
        self.output.begin_step()
        now = self.ctx.now()
        try:
            self._dispatch(event, now)
        except EngineLost as exc:
            self.lost(str(exc), now)
        except BridgeError as exc:
            log.warning("%s", exc)

    def _dispatch(self, event: WorkEvent, now: float) -> None:
        if self.engine_ok:
            self._sync_session(now)
        match event:
            case EngineGone(reason):
                self.lost(reason, now)
            case _ if not self.engine_ok:
                pass  # nothing to do without an engine; thru still works on the input thread
            case PlayerNote(t, msg):
                self.output.player_key(msg)
                self.mode.player(t, msg, now)
            case Transport(running, _):
                self.mode.transport(running, now)
            case Control(action, value, _):
                self._control(action, value, now)
            case SwitchMode(name):
                self.switch_mode(name, now, tell_engine=False)
            case Silenced():
                self.mode.silenced(now)

    def _control(self, action: str, value: int, now: float) -> None:
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
        self.mode = MODE_CLASSES[name](self.ctx)
        self.mode.enter(now)  # before the engine is told: a lost engine must find the new mode ready
        log.info("mode: %s", name)
        if tell_engine:
            self.link.set(mode=name)

    def tick(self, now: float) -> None:
        """Periodic step: reconnect after a loss, keep the session alive, let the mode plan."""
        self.output.begin_step()
        try:
            if not self.engine_ok:
                if now >= self._next_reconnect:
                    self._next_reconnect = now + RECONNECT_S
                    if self.supervisor is not None:
                        self.supervisor.revive()
                    self.connect(now)
                return
            self.link.keepalive()
            self._sync_session(now)
            self.mode.tick(now)
        except EngineLost as exc:
            self.lost(str(exc), now)
        except BridgeError as exc:
            log.warning("%s", exc)

    # -- the thread ------------------------------------------------------------------------------------------
    def run(self, running: threading.Event) -> None:
        """The worker thread: events and ticks until Stop or `running` clears. An unexpected error is logged
        and silences; the worker carries on (it never dies leaving notes sounding)."""
        if self.config.scheduler.realtime_priority:
            try_realtime(max(1, self.config.scheduler.realtime_priority - 2))
        tick = self.config.tick_s
        while running.is_set():
            try:
                if not self._work_once(tick):
                    return
            except Exception:  # noqa: BLE001 - a bug must not end the worker and leave notes sounding
                log.exception("engine worker: unexpected error; silencing and carrying on")
                self.output.panic()
                time.sleep(tick)  # an error that repeats does not spin

    def _work_once(self, tick: float) -> bool:
        """Wait for one event (at most until the mode's next tick) and handle it; False at Stop."""
        try:
            event = self.work.get(timeout=max(0.0, min(tick, self.mode.wake_in(self.ctx.now()))))
        except queue.Empty:
            event = None
        if event is STOP:
            return False
        if event is not None:
            self.process(event)
        self.tick(self.ctx.now())
        return True

