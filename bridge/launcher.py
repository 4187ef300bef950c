"""Find the engine server, or start one (`musebridge serve`) as a child process for `play` and `demo`."""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from musebridge.engine.server.client import Client, ClientConfig
from musebridge.engine.server.connection import process_alive
from musebridge.engine.server.local import DIRECT_HOST
from musebridge.engine.server.priority import LIVE_PRIORITY

from .errors import EngineLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineTarget:
    """Where the engine listens (loopback TCP ports) and which model a started server loads (None: bundled).
    wait_s: seconds to wait for a started server to answer (it loads the model first). realtime_priority: the
    SCHED_FIFO priority asked for a started server where the system allows it, above ordinary processes (so
    background load does not delay the live path); it loads its model at that priority and then serves at
    live_priority, above JACK's client threads (5 under a jackd at its default 10), which would otherwise
    preempt a note's model step; long requests' slices run at 1 (engine/server/priority.py); 0: leave both alone.
    direct: the direct endpoint of a server this process started (engine/server/local.py: unix://PATH, or
    direct://127.0.0.1:PORT where there are no Unix sockets); requests then go there, not through ZeroMQ's TCP
    (two thread wake-ups fewer per round trip; events still come over TCP)."""

    host: str = "127.0.0.1"
    port: int = 5555
    pub_port: int = 5556
    model: str | None = None
    keys: str | None = None
    timeout: float = 2.0
    wait_s: float = 60.0
    realtime_priority: int = 1
    live_priority: int = LIVE_PRIORITY
    direct: str | None = None

    def client_config(self) -> ClientConfig:
        return ClientConfig(endpoint=self.direct or f"tcp://{self.host}:{self.port}",
                            events_endpoint=f"tcp://{self.host}:{self.pub_port}", timeout=self.timeout,
                            keys=self.keys)


RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # waits before each further restart of a dying engine


class EngineProcess:
    """A `musebridge serve` child listening on TCP and on the direct endpoint `direct` (a Unix socket in
    `folder`, a private folder of its own); stop() ends it (SIGTERM, then SIGKILL) and removes the folder.
    revive() starts it again with the same command when it died (the bridge supervises the engine it started),
    waiting longer before each further restart of an engine that keeps dying (RESTART_BACKOFF_S)."""

    def __init__(self, cmd: list[str], priority: int = 0, direct: str | None = None, folder: str | None = None):
        self.cmd, self.priority, self.direct, self.folder = cmd, priority, direct, folder
        self.restarts = 0  # restarts since the engine last answered
        self._not_before = 0.0  # time.monotonic() before which no restart is tried
        self._spawn()

    def _spawn(self) -> None:
        """Start the server; its stderr goes to an unnamed temporary file (a pipe nobody reads would fill and
        stop it), read back by last_error()."""
        self.errors = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=self.errors, text=True)
        if self.priority:
            _realtime(self.proc.pid, self.priority)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def last_error(self) -> str:
        """The last line the server wrote to stderr ('' when none)."""
        self.errors.seek(0)
        lines = self.errors.read().strip().splitlines()
        return lines[-1] if lines else ""

    def revive(self) -> bool:
        """Start the engine again when its process has ended (not waiting for it to answer: the bridge's
        reconnects find it). True when a new process was started now."""
        if self.alive() or time.monotonic() < self._not_before:
            return False
        code = self.proc.returncode
        wait = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
        self.restarts += 1
        self._not_before = time.monotonic() + wait
        log.warning("the engine process ended (exit %s); starting it again (restart %d)", code, self.restarts)
        self.errors.close()
        self._spawn()
        return True

    def answered(self) -> None:
        """The engine answers again: the next death starts the backoff over."""
        self.restarts = 0

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.errors.close()
        if self.folder:
            shutil.rmtree(self.folder, ignore_errors=True)


def _realtime(pid: int, priority: int) -> None:
    """SCHED_FIFO for a just-started process; its threads (started later) inherit it. Quietly nothing where
    not allowed."""
    try:
        os.sched_setscheduler(pid, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.debug("engine server keeps normal priority: %s", exc)


# A started engine's private folder, in the temporary folder: musebridge-<pid of the program that made it>-<random>
_FOLDER = re.compile(r"musebridge-(\d+)-[A-Za-z0-9_]+")


def remove_stale_folders(parent: str | os.PathLike | None = None) -> list[str]:
    """Remove the private folders (and their socket) left in `parent` (default: the temporary folder) by
    programs that were killed before they could (kill -9): only this user's folders whose owner process, named
    in the folder's name, is gone; never a live one. Returns the folders removed."""
    removed = []
    for entry in Path(parent or tempfile.gettempdir()).glob("musebridge-*"):
        match = _FOLDER.fullmatch(entry.name)
        try:
            st = entry.lstat()
        except OSError:
            continue
        if not match or not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or process_alive(int(match[1])):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(str(entry))
        log.info("removed %s, left by process %s, which is gone", entry, match[1])
    return removed


def _direct_endpoint() -> tuple[str, str | None, list[str]]:
    """(endpoint, private folder or None, serve options) for a started server's direct transport: a Unix socket
    in a folder only we can enter, named after this process (see remove_stale_folders); loopback TCP on a free
    port where the system has no Unix sockets."""
    if hasattr(socket, "AF_UNIX"):
        remove_stale_folders()
        folder = tempfile.mkdtemp(prefix=f"musebridge-{os.getpid()}-")
        path = os.path.join(folder, "engine.sock")
        return f"unix://{path}", folder, ["--local", path]
    with socket.socket() as probe:
        probe.bind((DIRECT_HOST, 0))
        port = probe.getsockname()[1]
    return f"direct://{DIRECT_HOST}:{port}", None, ["--direct-port", str(port)]


def reachable(target: EngineTarget, timeout: float = 0.5) -> bool:
    with Client(target.client_config()) as client:
        return client.ping(timeout=timeout)


def ensure_engine(target: EngineTarget) -> EngineProcess | None:
    """None when a server already answers at target; else start one and wait until it answers. A started one
    also listens on a direct endpoint (EngineProcess.direct: `replace(target, direct=...)` talks to it there).
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
    direct, folder, listen = _direct_endpoint()
    if target.realtime_priority and target.live_priority:
        cmd += ["--live-priority", str(target.live_priority)]
    cmd += [*listen, "--parent", str(os.getpid())]  # it stops when this process is gone, even killed
    log.info("starting the engine: %s", " ".join(cmd))
    started = EngineProcess(cmd, target.realtime_priority, direct, folder)
    deadline = time.monotonic() + target.wait_s
    while time.monotonic() < deadline:
        if not started.alive():
            err = started.last_error()
            started.stop()
            raise EngineLost(f"the engine server exited ({err or started.proc.returncode}); "
                             "try `musebridge serve` to see why")
        if reachable(target, timeout=0.5):
            return started
    started.stop()
    raise EngineLost(f"the engine server did not answer within {target.wait_s:g} s")
