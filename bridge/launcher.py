"""Find the engine server, or start one (`musebridge serve`) as a child process for `play` and `demo`."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
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
    above ordinary processes, so background load does not delay the live path); 0: leave it alone.
    local: the Unix socket of a server this process started (engine/local.py); requests then go there, not
    through ZeroMQ's TCP (a third of the round trip; events still come over TCP)."""

    host: str = "127.0.0.1"
    port: int = 5555
    pub_port: int = 5556
    model: str | None = None
    keys: str | None = None
    timeout: float = 2.0
    wait_s: float = 60.0
    realtime_priority: int = 1
    local: str | None = None

    def client_config(self) -> ClientConfig:
        endpoint = f"unix://{self.local}" if self.local else f"tcp://{self.host}:{self.port}"
        return ClientConfig(endpoint=endpoint,
                            events_endpoint=f"tcp://{self.host}:{self.pub_port}", timeout=self.timeout,
                            keys=self.keys)


class EngineProcess:
    """A `musebridge serve` child listening on TCP and on the Unix socket `local` (in a private folder of its
    own); stop() ends it (SIGTERM, then SIGKILL) and removes the folder."""

    def __init__(self, proc: subprocess.Popen, local: str | None = None):
        self.proc, self.local = proc, local

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.local:
            shutil.rmtree(os.path.dirname(self.local), ignore_errors=True)


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
    """None when a server already answers at target; else start one and wait until it answers. A started one
    also listens on a Unix socket (EngineProcess.local: use `replace(target, local=...)` to talk to it there).
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
    local = os.path.join(tempfile.mkdtemp(prefix="musebridge-"), "engine.sock")  # a folder only we can enter
    cmd += ["--local", local, "--parent", str(os.getpid())]  # it stops when this process is gone, even killed
    log.info("starting the engine: %s", " ".join(cmd))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if target.realtime_priority:
        _realtime(proc.pid, target.realtime_priority)
    started = EngineProcess(proc, local)
    deadline = time.monotonic() + target.wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = (proc.stderr.read() or "").strip().splitlines()
            started.stop()
            raise EngineLost(f"the engine server exited ({err[-1] if err else proc.returncode}); "
                             "try `musebridge serve` to see why")
        if reachable(target, timeout=0.5):
            return started
    started.stop()
    raise EngineLost(f"the engine server did not answer within {target.wait_s:g} s")
