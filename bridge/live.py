"""A running bridge as one object: engine session, watcher, ports and threads, started and stopped together.

    midi = MemoryMidi()                                          # or RtmidiBackend(...) for real ports
    with LiveSession(BridgeConfig(mode="respond", record="demo.mid"), MemoryBackend(midi), target) as live:
        keyboard = midi.sender("MuseBridge In")                  # play into the bridge
        midi.listen("MuseBridge Out", callback)                  # hear what it plays
        ...
    # leaving the block silences every note and writes the recording

`musebridge play` uses it with rtmidi ports; `musebridge demo` with in-process ports. The engine server must be
reachable at `target` (see launcher.ensure_engine to start one).
"""

from __future__ import annotations

from .clock import Clock, MonotonicClock
from .config import BridgeConfig
from .core import Bridge
from .engine_link import EngineLink, EngineWatcher
from .launcher import EngineProcess, EngineTarget
from .ports import Backend


class LiveSession:
    """Opens the ports and an engine session on enter (PortError / EngineLost), stops everything on exit."""

    def __init__(self, config: BridgeConfig, backend: Backend, target: EngineTarget, clock: Clock | None = None,
                 engine: EngineProcess | None = None):
        self.clock = clock or MonotonicClock()
        self.link = EngineLink(target.client_config(), {**config.engine, "mode": config.mode}, self.clock.now)
        self.bridge = Bridge(config, backend, self.link, self.clock, supervisor=engine)  # restarted when it dies
        self.watcher = EngineWatcher(target.client_config(), lambda: self.link.session, self.bridge.engine_lost,
                                     self.bridge.engine_params)
        self._started = False

    def start(self) -> Bridge:
        try:
            self.bridge.open()
            self.watcher.start()
            self.bridge.start()
        except BaseException:
            self.stop()
            raise
        self._started = True
        return self.bridge

    def stop(self) -> None:
        """Silence every note, stop the threads, close the ports, write the recording. Safe to call twice."""
        self.watcher.stop()
        self.bridge.stop()

    def __enter__(self) -> LiveSession:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
