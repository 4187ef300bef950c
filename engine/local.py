"""The local fast path: the control protocol's request and reply frames over a Unix domain socket.

ZeroMQ hands every message to an I/O thread on each side, so one request/reply wakes four threads; on this
project's 2-core VM that makes a round trip 0.4-0.9 ms (docs/benchmarks.md, "Server round trip"). A Unix socket
read by the server's own loop wakes two. `musebridge serve --local PATH` listens there too, with the same frames,
the same commands and the same replies (engine/protocol.py); events stay on the events socket. `musebridge play`
uses it for the engine it starts itself, and `Client(ClientConfig(endpoint="unix:///path"))` for scripts.

Wire format, in one place: each frame is a 4-byte little-endian length, then that many bytes: a request as
protocol.encode_request makes it (client -> server) or a reply as protocol.encode_reply makes it (server ->
client). Replies come in request order. A length above protocol.MAX_MESSAGE_BYTES cannot be skipped on a
stream: the server answers `too_large` and closes that connection.

Security: local only. The socket file is made with mode 0600 inside a directory that is not group- or
world-writable, so only its owner (and root) can connect. A client that stops reading has its replies queued
up to OUTBOX_LIMIT bytes and is then disconnected; it never stalls the server.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct
import time
from pathlib import Path

from . import protocol as P
from .errors import EngineError

HEADER = struct.Struct("<I")
OUTBOX_LIMIT = 1 << 24  # bytes of unread replies kept for one client before it is disconnected
REPLY_LIMIT = 1 << 26  # the largest reply a client accepts (a long generate is a few MB of JSON)
_READ = 65536


def frame(payload: bytes) -> bytes:
    """One frame: length header + payload."""
    return HEADER.pack(len(payload)) + payload


def socket_path(endpoint: str) -> str | None:
    """The path of a `unix://PATH` endpoint (None for any other endpoint)."""
    return endpoint[len("unix://"):] if endpoint.startswith("unix://") else None


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
    """The server side: a listening Unix socket and its connections, all non-blocking. The server's loop polls
    `sockets()` and calls `readable(sock, handle)` / `writable(sock)`; handle(frame) -> reply frame or None."""

    def __init__(self, path: str):
        self.path = path
        _check_folder(Path(path).parent)
        _remove_stale(path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # the socket file is born 0600: no window where others could connect
        try:
            self.listener.bind(path)
        except OSError as exc:
            self.listener.close()
            raise EngineError(f"cannot listen on {path}: {exc.strerror}") from None
        finally:
            os.umask(old)
        self.listener.listen(16)
        self.listener.setblocking(False)
        self.conns: dict[socket.socket, _Conn] = {}

    def sockets(self) -> list[socket.socket]:
        return [self.listener, *self.conns]

    def waiting_to_send(self) -> list[socket.socket]:
        return [s for s, c in self.conns.items() if c.outbox]

    def readable(self, sock: socket.socket, handle) -> None:
        if sock is self.listener:
            self._accept()
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
            reply = handle(payload)
            if reply is not None:
                conn.outbox += frame(reply)
        self.writable(sock)

    def writable(self, sock: socket.socket) -> None:
        conn = self.conns.get(sock)
        if conn is not None and (not conn.flush() or len(conn.outbox) > OUTBOX_LIMIT):
            self._drop(sock)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.setblocking(False)
        self.conns[sock] = _Conn(sock)

    def _drop(self, sock: socket.socket) -> None:
        self.conns.pop(sock, None)
        sock.close()

    def close(self) -> None:
        for sock in list(self.conns):
            self._drop(sock)
        self.listener.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _check_folder(folder: Path) -> None:
    """The socket's folder must exist and be writable by nobody but its owner (or be sticky, like /tmp)."""
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
    """The client side: one connected socket; send(frame payload), recv(timeout) -> payload or None."""

    def __init__(self, path: str, timeout: float):
        self.timeout = timeout  # seconds for connecting and for sending one request
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except OSError as exc:
            self.sock.close()
            raise ConnectionError(f"{path}: {exc.strerror or exc}") from None
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
