"""The live bridge: the pipeline's pieces, assembled, opened, run and stopped together.

    MIDI in -> InputStage (bridge/input.py): the callback timestamps and queues; the input thread filters, follows
               the clock, maps CCs, silences, records and passes thru
            -> typed work events (bridge/work.py)
            -> Worker (bridge/worker.py): the engine connection and the current mode (bridge/modes.py), which
               sees only a ModeContext (bridge/context.py)
            -> OutputStage (bridge/output.py): note ids, quantization, the held-note set, the scheduler thread
            -> MIDI out

Threads (none at import time, none before start()): the MIDI backend's callback, the input thread, the engine
worker, the scheduler thread (bridge/scheduler.py) and the engine watcher (bridge/engine_link.py). Tests drive the
same logic without threads: pump() drains both queues, ticks the mode and runs the scheduler.
"""

from __future__ import annotations

import logging
import threading

from musebridge.engine.errors import EngineError
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, INSTRUMENTS

from .clock import Clock
from .config import BridgeConfig
from .context import ModeContext, SessionTime
from .engine_link import EngineLink
from .errors import BridgeError
from .feedback import EchoFilter
from .input import InputStage
from .journal import TakeJournal, recover_takes
from .midiclock import ClockFollower
from .modes import Mode
from .output import OutputConfig, OutputStage
from .ports import Backend
from .recorder import Recorder
from .work import STOP, EngineGone, SwitchMode
from .worker import Worker

log = logging.getLogger(__name__)


class Bridge:
    """One live session. backend: ports (rtmidi or in-memory); link: the engine session; clock: time source;
    supervisor: the engine process this bridge started (launcher.EngineProcess), restarted when it dies."""

    def __init__(self, config: BridgeConfig, backend: Backend, link: EngineLink, clock: Clock, supervisor=None):
        self.config, self.backend, self.link, self.clock = config, backend, link, clock
        self.time = SessionTime(clock.now())  # session time 0 until an engine session starts
        self.follower = ClockFollower(config.clock, start=self.time.origin)
        self.echo = EchoFilter()
        self.counts = {"in": 0, "out": 0, "malformed": 0, "dropped": 0}
        out_config = OutputConfig(config.scheduler, config.channel_map(), config.program_changes)
        self.output = OutputStage(clock, out_config, self.follower, self.counts)
        self.scheduler = self.output.scheduler
        ctx = ModeContext(config.modes, link, self.output, self.time, self.follower, clock)
        self.worker = Worker(config, link, self.output, ctx, self.time, supervisor)
        self.input = InputStage(config, clock, self.follower, self.echo, self.output, self.worker.work,
                                lambda: self.worker.mode.name == "thru", self.counts)
        self.recorder: Recorder | None = None
        self.in_port = self.out_port = None
        self._threads: list[threading.Thread] = []
        self._running = threading.Event()
        self._stopped = False

    # -- what the status line and the tests read -------------------------------------------------------------
    @property
    def mode(self) -> Mode:
        return self.worker.mode

    @property
    def engine_ok(self) -> bool:
        return self.worker.engine_ok

    @property
    def lost_reason(self) -> str:
        return self.worker.lost_reason

    @property
    def latencies(self):
        """Seconds from a player's note (harmonize) or a trigger (respond) to the first engine note sent."""
        return self.worker.ctx.latencies

    # -- setup -----------------------------------------------------------------------------------------------
    def open(self) -> None:
        """Open the ports and the engine session (PortError / EngineLost with a one-line message)."""
        cfg = self.config
        if cfg.record:  # the take's folder is checked (its journal made) before any port opens
            recover_takes(cfg.record)
            self.recorder = Recorder(self.time.origin, self._engine_channels(), TakeJournal(cfg.record))
        try:
            self._open_ports()
        except BridgeError:
            self._drop_take()  # nothing was played: no take to write, no journal to keep
            raise
        self.worker.connect(self.clock.now())

    def _open_ports(self) -> None:
        cfg = self.config
        self.out_port = self.output.port = self.backend.open_output(cfg.out_port, cfg.out_name)
        if cfg.suppress_feedback:
            self.scheduler.on_sent.append(self.echo.sent)
        if self.recorder is not None:
            self.scheduler.on_sent.append(self.recorder.sent)
            self.input.recorder = self.recorder
        self.in_port = self.backend.open_input(cfg.in_port, self.input.callback, cfg.in_name)

    def _drop_take(self) -> None:
        if self.recorder is not None and self.recorder.journal is not None:
            self.recorder.journal.close()
        self.recorder = self.input.recorder = None

    def _engine_channels(self) -> set[int]:
        """The out channels of the engine's instruments (the recording keeps the player off them)."""
        remap = self.config.channel_map()
        channels = [INSTRUMENTS[INSTRUMENT_NAMES.index(n)].channel
                    for n in self.link.params.get("instruments", ["piano"]) if n in INSTRUMENT_NAMES]
        return {remap.get(ch, ch) for ch in channels}

    # -- from other threads ----------------------------------------------------------------------------------
    def panic(self, why: str) -> None:
        """Silence the out port now (any thread): note-offs for held notes, then CC123/CC120 per channel."""
        self.input.silence(why)

    def engine_lost(self, reason: str) -> None:
        """From the engine watcher (any thread): silence now, the worker handles the rest."""
        self.output.panic()
        self.worker.work.put(EngineGone(reason))

    def engine_params(self, changed: dict) -> None:
        """From the engine watcher: a `set` on our session (`musebridge ctl set ...`). The link keeps the new
        values, so a session re-created after a lost engine has them too; a mode change switches mode."""
        self.link.params.update(changed)
        if "mode" in changed:
            self.worker.work.put(SwitchMode(changed["mode"]))

    # -- driving ---------------------------------------------------------------------------------------------
    def pump(self) -> None:
        """Without threads (tests): handle all queued input and work, tick the mode, send what is due."""
        inbox, work = self.input.inbox, self.worker.work
        while not inbox.empty():
            self.input.handle(*inbox.get())
        self.input.idle()
        while not work.empty():
            self.worker.process(work.get())
        now = self.clock.now()
        self.worker.tick(now)
        self.scheduler.run_due(now)

    def start(self) -> None:
        """Start the input thread, the engine worker and the scheduler thread."""
        self._running.set()
        self.scheduler.start()
        loops = (("input", self.input.run), ("engine-worker", lambda: self.worker.run(self._running)))
        for name, target in loops:
            thread = threading.Thread(target=target, name=f"musebridge-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop everything and silence the out port; write the recording. Safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._running.clear()
        self.input.stop()  # input that still arrives is dropped: the input thread ends at the sentinel
        self.worker.work.put(STOP)
        for thread in self._threads:
            thread.join(timeout=5.0)
        self._threads.clear()
        self.scheduler.stop(panic=True)
        self.link.close()
        if self.recorder is not None and self.config.record:
            try:
                self.recorder.write(self.config.record, self.clock.now())
            except EngineError as exc:  # the folder went away mid-take: the journal keeps it (bridge/journal.py)
                log.error("%s", exc)
            self.recorder = self.input.recorder = None
        self._close_ports()

    def _close_ports(self) -> None:
        """The ports go last: the notes are silenced and the take is saved even if a MIDI driver fails on close
        (JACK's port teardown races its process thread in rtmidi; docs/live.md, "Design decisions")."""
        self.output.port = None
        for name in ("in_port", "out_port"):
            port = getattr(self, name)
            if port is not None:
                port.close()
                setattr(self, name, None)
