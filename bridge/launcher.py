"""Find the engine server, or start one (`musebridge serve`) as a child process for `play` and `demo`."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass

from musebridge.engine.client import Client, ClientConfig

from .errors import EngineLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineTarget:
    """Where the engine listens (loopback TCP ports) and which model a started server loads (None: bundled).
    wait_s: seconds to wait for a started server to answer (it loads the model first). realtime_priority: the
    SCHED_FIFO priority asked for a started server where the system allows it (below the bridge's threads,
    above ordinary processes, so background load does not delay the live path); 0: leave it alone."""

    host: str = "127.0.0.1"
    port: int = 5555
    pub_port: int = 5556
    model: str | None = None
    keys: str | None = None
    timeout: float = 2.0
    wait_s: float = 60.0
    realtime_priority: int = 1

    def client_config(self) -> ClientConfig:
        return ClientConfig(endpoint=f"tcp://{self.host}:{self.port}",
                            events_endpoint=f"tcp://{self.host}:{self.pub_port}", timeout=self.timeout,
                            keys=self.keys)


class EngineProcess:
    """A `musebridge serve` child; stop() ends it (SIGTERM, then SIGKILL)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _realtime(pid: int, priority: int) -> None:
    """SCHED_FIFO for a just-started process; its threads (started later) inherit it. Quietly nothing where
    not allowed."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.debug("engine server keeps normal priority: %s", exc)


def reachable(target: EngineTarget, timeout: float = 0.5) -> bool:
    with Client(target.client_config()) as client:
        return client.ping(timeout=timeout)


def ensure_engine(target: EngineTarget) -> EngineProcess | None:
    """None when a server already answers at target; else start one and wait until it answers.
    EngineLost (one line, with the server's own error) when it cannot be started."""
    if reachable(target):
        log.info("using the engine server at %s:%d", target.host, target.port)
        return None
    cmd = [sys.executable, "-m", "musebridge", "serve", "--host", target.host, "--port", str(target.port),
           "--pub-port", str(target.pub_port)]
    if target.model:
        cmd += ["--model", target.model]
    if target.keys:
        cmd += ["--keys", target.keys]
    log.info("starting the engine: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if target.realtime_priority:
        _realtime(proc.pid, target.realtime_priority)
    deadline = time.monotonic() + target.wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() or "").strip().splitlines()
            raise EngineLost(f"the engine server exited ({err[-1] if err else proc.returncode}); "
                             "try `musebridge serve` to see why")
        if reachable(target, timeout=0.5):
            return EngineProcess(proc)
    EngineProcess(proc).stop()
    raise EngineLost(f"the engine server did not answer within {target.wait_s:g} s")
