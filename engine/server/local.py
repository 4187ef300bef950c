"""The direct transport: the control protocol's request and reply frames on a plain stream socket read by the
server's own loop, a Unix domain socket (`unix://PATH`) or loopback TCP (`direct://127.0.0.1:PORT`).

ZeroMQ hands every message to an I/O thread on each side, so one request/reply wakes four threads; on this
project's 2-core VM that makes a round trip 0.2-0.3 ms (docs/benchmarks.md, "Server round trip"). A stream
socket read by the server's own loop wakes two. `musebridge serve --local PATH` and/or `--direct-port PORT`
listen there too, with the same frames, the same commands and the same replies (engine/server/protocol.py); events
stay on the events socket. `musebridge play` uses it for the engine it starts itself (the Unix socket; loopback TCP
where there are no Unix sockets), and `Client(ClientConfig(endpoint="unix:///path"))` or
`endpoint="direct://127.0.0.1:5557"` for scripts.

Wire format, in one place: each frame is a 4-byte little-endian length, then that many bytes: a request as
protocol.encode_request makes it (client -> server) or a reply as protocol.encode_reply makes it (server ->
client). Replies come in request order. A length above protocol.MAX_MESSAGE_BYTES cannot be skipped on a
stream: the server answers `too_large` and closes that connection.

Security: local only. The socket file is made with mode 0600 inside a directory that is not group- or
world-writable, so only its owner (and root) can connect. The direct TCP port listens on 127.0.0.1 only and has
no authentication: any local user can connect, as to the ZeroMQ endpoint on loopback without keys; the server
refuses it when CURVE keys are configured. A client that stops reading has its replies queued
up to OUTBOX_LIMIT bytes and is then disconnected; it never stalls the server.

Exhaustion: at most MAX_CONNECTIONS clients at once per listener; one more is accepted, told `overloaded` in one
reply frame and closed. When the process runs out of file descriptors (or the kernel of buffers) accept fails:
the error is logged and the listeners rest for ACCEPT_PAUSE_S, while the clients already connected are served.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import struct
import time
from collections.abc import Callable
from pathlib import Path

from ..errors import EngineError
from . import protocol as P

log = logging.getLogger(__name__)

HEADER = struct.Struct("<I")
DIRECT_HOST = "127.0.0.1"  # the direct TCP transport listens on loopback only
DEFAULT_DIRECT_PORT = 5557  # documented next to the ZeroMQ ports 5555/5556; off unless --direct-port
_AF_UNIX = getattr(socket, "AF_UNIX", None)  # absent on some Windows Pythons
OUTBOX_LIMIT = 1 << 24  # bytes of unread replies kept for one client before it is disconnected
REPLY_LIMIT = 1 << 26  # the largest reply a client accepts (a long generate is a few MB of JSON)
MAX_CONNECTIONS = 64  # clients at once per listener (a bridge needs one, a script one or two)
ACCEPT_PAUSE_S = 0.25  # how long the listeners rest after accept failed for lack of descriptors or memory
_READ = 65536


def frame(payload: bytes) -> bytes:
    """One frame: length header + payload."""
    return HEADER.pack(len(payload)) + payload


def direct_address(endpoint: str) -> str | tuple[str, int] | None:
    """Where a direct endpoint is: the path of `unix://PATH`, (host, port) of `direct://HOST:PORT`; None for a
    ZeroMQ endpoint (tcp://, ipc://). EngineError for a direct:// endpoint without a port."""
    if endpoint.startswith("unix://"):
        return endpoint[len("unix://"):]
    if not endpoint.startswith("direct://"):
        return None
    host, _, port = endpoint[len("direct://"):].rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"{endpoint}: a direct endpoint is direct://HOST:PORT, e.g. direct://127.0.0.1:5557")
    return host.strip("[]"), int(port)


class FrameReader:
    """Splits a byte stream into frames. feed() returns the complete ones; raises P.ProtocolError (too_large)
    when a header announces more than `limit` bytes (requests: P.MAX_MESSAGE_BYTES; replies may be larger)."""

    def __init__(self, limit: int = P.MAX_MESSAGE_BYTES) -> None:
        self._buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            (n,) = HEADER.unpack_from(self._buf)
            if n > self.limit:
                raise P.ProtocolError("too_large", f"a frame of {n} bytes; the limit is {self.limit}")
            if len(self._buf) < HEADER.size + n:
                break
            out.append(bytes(self._buf[HEADER.size : HEADER.size + n]))
            del self._buf[: HEADER.size + n]
        return out


class _Conn:
    """One accepted client: its socket, partial input and unsent replies."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.reader = FrameReader()
        self.outbox = bytearray()

    def flush(self) -> bool:
        """Send what the socket takes now; False when the client is gone."""
        while self.outbox:
            try:
                sent = self.sock.send(self.outbox)
            except BlockingIOError:
                return True
            except OSError:
                return False
            del self.outbox[:sent]
        return True


class LocalListener:
    """The server side: a Unix socket at `path`, a loopback TCP `port` (direct://), or both, and their
    connections, all non-blocking. The server's loop polls `sockets()` and calls `readable(sock, handle)` /
    `writable(sock)`; handle(frame, conn) takes each request, and `send(conn, reply)` answers it, at once or
    later (a connection gone by then is skipped)."""

    def __init__(self, path: str | None = None, port: int | None = None):
        self.path = path
        self.on_drop: Callable[[_Conn], None] | None = None  # told of each connection that closes
        self.listeners: list[socket.socket] = []
        self.conns: dict[socket.socket, _Conn] = {}
        self._by_listener: dict[socket.socket, set[socket.socket]] = {}
        self._resting_until = 0.0  # time.monotonic() before which accepting waits (ACCEPT_PAUSE_S)
        try:
            if path is not None:
                self.listeners.append(_listen_unix(path))
            if port is not None:
                self.listeners.append(_listen_tcp(port))
        except EngineError:
            self.close()
            raise

    def sockets(self) -> list[socket.socket]:
        listening = self.listeners if time.monotonic() >= self._resting_until else []
        return [*listening, *self.conns]

    def waiting_to_send(self) -> list[socket.socket]:
        return [s for s, c in self.conns.items() if c.outbox]

    def readable(self, sock: socket.socket, handle) -> None:
        if sock in self.listeners:
            self._accept(sock)
            return
        conn = self.conns.get(sock)
        if conn is None:
            return
        try:
            data = sock.recv(_READ)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop(sock)
            return
        try:
            frames = conn.reader.feed(data)
        except P.ProtocolError as exc:  # the stream cannot be resynchronized: answer, then hang up
            conn.outbox += frame(P.encode_reply(P.error_reply(exc)))
            conn.flush()
            self._drop(sock)
            return
        for payload in frames:
            handle(payload, conn)
        self.writable(sock)

    def send(self, conn: _Conn, reply: bytes) -> None:
        """Queue a reply frame for `conn` and send what its socket takes now."""
        if self.conns.get(conn.sock) is conn:
            conn.outbox += frame(reply)
            self.writable(conn.sock)

    def writable(self, sock: socket.socket) -> None:
        conn = self.conns.get(sock)
        if conn is not None and (not conn.flush() or len(conn.outbox) > OUTBOX_LIMIT):
            self._drop(sock)

    def _accept(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except ConnectionError:  # the client gave up before it was accepted
            return
        except OSError as exc:  # out of descriptors or buffers: serve who is connected, accept again later
            log.warning("cannot accept a connection (%s); %d connected, accepting again in %.2f s",
                        exc.strerror or exc, len(self.conns), ACCEPT_PAUSE_S)
            self._resting_until = time.monotonic() + ACCEPT_PAUSE_S
            return
        sock.setblocking(False)
        mine = self._by_listener.setdefault(listener, set())
        if len(mine) >= MAX_CONNECTIONS:
            refusal = P.ProtocolError("overloaded", f"{MAX_CONNECTIONS} clients are connected already; close "
                                      "one or retry later")
            try:
                sock.send(frame(P.encode_reply(P.error_reply(refusal))))
            except OSError:
                pass
            sock.close()
            return
        if sock.family != _AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a reply leaves at once
        self.conns[sock] = _Conn(sock)
        mine.add(sock)

    def _drop(self, sock: socket.socket) -> None:
        conn = self.conns.pop(sock, None)
        if conn is not None and self.on_drop is not None:
            self.on_drop(conn)
        for mine in self._by_listener.values():
            mine.discard(sock)
        sock.close()

    def close(self) -> None:
        for sock in list(self.conns):
            self._drop(sock)
        for listener in self.listeners:
            listener.close()
        if self.listeners and self.path is not None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        self.listeners = []


def _listen_unix(path: str) -> socket.socket:
    if _AF_UNIX is None:
        raise EngineError("this system has no Unix sockets: use --direct-port PORT (loopback TCP), not --local")
    check_private_folder(Path(path).parent)
    _remove_stale(path)
    listener = socket.socket(_AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # the socket file is born 0600: no window where others could connect
    try:
        listener.bind(path)
    except OSError as exc:
        listener.close()
        raise EngineError(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old)
    listener.listen(16)
    listener.setblocking(False)
    return listener


def _listen_tcp(port: int) -> socket.socket:
    """Loopback only: this transport has no authentication (any local user can connect, as to the ZeroMQ
    endpoint on loopback without keys)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind((DIRECT_HOST, port))
    except OSError as exc:
        listener.close()
        raise EngineError(f"cannot listen on direct://{DIRECT_HOST}:{port}: {exc.strerror}; is another server "
                          "running? choose another --direct-port") from None
    listener.listen(16)
    listener.setblocking(False)
    return listener


def check_private_folder(folder: Path) -> None:
    """A socket's folder must exist and be writable by nobody but its owner (or be sticky, like /tmp): no one else
    can then replace the socket file (used for --local and for `serve --ipc DIR`)."""
    try:
        st = folder.stat()
    except OSError as exc:
        raise EngineError(f"cannot listen in {folder}: {exc.strerror}; create it (mode 700) first") from None
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise EngineError(f"{folder} is writable by others: put the engine socket in a private folder")


def _remove_stale(path: str) -> None:
    """Remove a socket file left by a server that died; refuse when a server still answers there."""
    if not os.path.exists(path):
        return
    if not stat.S_ISSOCK(os.stat(path).st_mode):
        raise EngineError(f"{path} exists and is not a socket; choose another --local path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise EngineError(f"cannot use {path}: {exc.strerror}") from None
    finally:
        probe.close()
    raise EngineError(f"another server is listening on {path}; stop it or choose another --local path")


class LocalConnection:
    """The client side: one connected socket to `address` (a Unix socket path, or (host, port) of a direct TCP
    endpoint); send(frame payload), recv(timeout) -> payload or None."""

    def __init__(self, address: str | tuple[str, int], timeout: float):
        self.timeout = timeout  # seconds for connecting and for sending one request
        if isinstance(address, tuple):
            try:
                self.sock = socket.create_connection(address, timeout)  # IPv4 or IPv6
            except OSError as exc:
                raise ConnectionError(f"{address[0]}:{address[1]}: {exc.strerror or exc}") from None
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        else:
            if _AF_UNIX is None:
                raise ConnectionError("this system has no Unix sockets: use a direct://127.0.0.1:PORT endpoint")
            self.sock = socket.socket(_AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(timeout)
            try:
                self.sock.connect(address)
            except OSError as exc:
                self.sock.close()
                raise ConnectionError(f"{address}: {exc.strerror or exc}") from None
        self._reader = FrameReader(limit=REPLY_LIMIT)
        self._ready: list[bytes] = []

    def send(self, payload: bytes) -> None:
        self.sock.settimeout(self.timeout)
        self.sock.sendall(frame(payload))

    def recv(self, timeout: float) -> bytes | None:
        """The next reply frame, or None after `timeout` seconds (0: only one that has arrived).
        ConnectionError when the server hung up."""
        deadline = time.monotonic() + timeout
        while not self._ready:
            self.sock.settimeout(max(0.0, deadline - time.monotonic()))  # 0: non-blocking, what has arrived
            try:
                data = self.sock.recv(_READ)
            except (TimeoutError, BlockingIOError):
                return None
            if not data:
                raise ConnectionError("the engine server closed the connection")
            self._ready += self._reader.feed(data)
        return self._ready.pop(0)

    def close(self) -> None:
        self.sock.close()
