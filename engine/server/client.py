"""Python client for the engine server: requests with timeouts (never blocks forever) and the event stream.

    with Client.connect() as c:              # tcp://127.0.0.1:5555 and :5556 by default
        with c.session(style="bach", instruments=["strings"]) as s:    # mido messages in and out
            s.feed(messages)
            answer = list(s.generate(seconds=4))
        print(c.call("status"))                                          # any request of docs/protocol.md
        sid = c.call("session.create", style="bach", instruments=["strings"])["session"]
        for event in c.events(timeout=1.0): ...

A DEALER socket carries requests, so a timed-out request never wedges the socket (as a REQ socket would); replies
are matched to requests by id and stale ones are discarded.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils.monitor import recv_monitor_message

from ..errors import EngineError
from . import protocol as P
from .connection import find_key
from .local import LocalConnection, direct_address
from .remote_session import RemoteSession

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555  # request/reply
DEFAULT_PUB_PORT = 5556  # events
CANCEL_LINGER_S = 0.2  # how long the cancel of a request given up on may take to leave (in the background)


class ClientError(EngineError):
    """The server could not be reached in time, or replied with an error. `code`: a protocol error code, or
    "timeout" (no reply in time: the server may be busy), "connection" (the transport failed: nothing listens,
    or the server went away), "keys", "bad_argument" (the client's own settings)."""

    def __init__(self, message: str, code: str = "timeout"):
        super().__init__(message)
        self.code = code


def in_context(cmd: str, code: str, message: str) -> str:
    """A server's error message naming its command exactly once, first: the server names it in some messages
    (argument checks: "set: argument 'temperature' ...", "generate needs 'until' ...", an unknown command) and not
    in others ("unknown style 'polka'")."""
    if code == "unknown_command" or message.startswith((f"{cmd}:", f"{cmd} ")):
        return message
    return f"{cmd}: {message}"


@dataclass(frozen=True)
class ClientConfig:
    """Where the server is and how long to wait. endpoint: tcp://, ipc:// (ZeroMQ), unix://PATH (the server's
    --local socket) or direct://127.0.0.1:PORT (its --direct-port): the same requests, a faster path
    (engine/server/local.py). timeout: seconds per request. keys: a folder made by `musebridge keys`
    (server.key and a client pair) for CURVE, or None. client: the name of that client pair (NAME.key_secret, as
    `musebridge keys DIR --client NAME` makes it; default client.key_secret). secret: the server's
    connection-file key (None: read from the connection file of `endpoint`, engine/server/connection.py).
    token: the client token sent with every request (None: a random one); sessions belong to the token that
    created them, so a process given another's token may use that one's sessions."""

    endpoint: str = f"tcp://{DEFAULT_HOST}:{DEFAULT_PORT}"
    events_endpoint: str = f"tcp://{DEFAULT_HOST}:{DEFAULT_PUB_PORT}"
    timeout: float = 2.0
    keys: str | None = None
    secret: str | None = None
    client: str = "client"
    token: str | None = None

    def __post_init__(self):
        if not self.client.isidentifier():
            raise ClientError(f"client key name {self.client!r} must be letters, digits and _ (the NAME of "
                              "`musebridge keys DIR --client NAME`)", "bad_argument")
        try:
            direct_address(self.endpoint)
        except EngineError as exc:
            raise ClientError(str(exc), "bad_argument") from None


class Client:
    """Requests (`call`, `post`), the event stream (`events`) and typed sessions (`session`) of one server."""

    def __init__(self, config: ClientConfig | None = None, context: zmq.Context | None = None):
        self.config = config or ClientConfig()
        self._ctx = context or zmq.Context.instance()
        self._ids = itertools.count(1)
        self._prefix = f"{os.getpid()}-{id(self) & 0xFFFF:x}-"
        self.token = self.config.token or secrets.token_hex(16)  # the sessions this client creates are its own
        self._sock: zmq.Socket | None = None
        self._local: LocalConnection | None = None
        self._address = direct_address(self.config.endpoint)  # None: ZeroMQ
        self._key: str | None = self.config.secret  # None: not looked up yet
        self._sub: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None  # connection events of _sub (see dropped())
        self._topics: set[str] = set()

    @classmethod
    def connect(cls, endpoint: str | None = None, timeout: float = 10.0, **config) -> Client:
        """A client of the server at `endpoint` (default tcp://127.0.0.1:5555), waiting up to `timeout` seconds for
        it to answer (a server just started takes a moment to load its model). config: other ClientConfig
        fields. Raises ClientError (one line) when nothing answers."""
        client = cls(ClientConfig(**({"endpoint": endpoint} if endpoint else {}), **config))
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.call("status", timeout=min(0.5, timeout))
                return client
            except ClientError as exc:
                waiting = exc.code in ("timeout", "connection")  # not up yet; anything else: say why at once
                if not waiting or time.monotonic() >= deadline:
                    client.close()
                    if not waiting:
                        raise
                    raise ClientError(f"no engine answers at {client.config.endpoint} after {timeout:g} s; start "
                                      "one with `musebridge serve` (or pass its endpoint)") from None

    def session(self, timeout: float | None = None, **params) -> RemoteSession:
        """A new engine session (session.create with protocol.PARAMS names: style, instruments, ...), used with
        mido messages: see engine/server/remote_session.py. timeout: seconds per request (default: the
        client's)."""
        return RemoteSession(self, timeout=timeout, **params)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._monitor is not None:
            self._sub.disable_monitor()
        for sock in (self._sock, self._monitor, self._sub):
            if sock is not None:
                sock.close(linger=0)
        if self._local is not None:
            self._local.close()
        self._sock = self._sub = self._monitor = self._local = None
        self._topics = set()

    def _secure(self, sock: zmq.Socket) -> None:
        if not self.config.keys:
            return
        import zmq.auth  # noqa: PLC0415 - only needed with keys

        folder = Path(self.config.keys)
        try:
            secret = folder / f"{self.config.client}.key_secret"
            sock.curve_publickey, sock.curve_secretkey = zmq.auth.load_certificate(secret)
            sock.curve_serverkey, _ = zmq.auth.load_certificate(folder / "server.key")
        except (OSError, ValueError) as exc:
            add = "" if self.config.client == "client" else f" --client {self.config.client}"
            raise ClientError(f"keys in {folder}: {exc}; create them with `musebridge keys {folder}{add}`",
                              "keys") from None

    def _open(self, kind: int, endpoint: str) -> zmq.Socket:
        sock = self._ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        self._secure(sock)
        sock.connect(endpoint)
        return sock

    def _socket(self) -> zmq.Socket:
        if self._sock is None:
            self._sock = self._open(zmq.DEALER, self.config.endpoint)
        return self._sock

    def _send(self, cmd: str, args: dict) -> str:
        rid = f"{self._prefix}{next(self._ids)}"
        if self._key is None:
            self._key = find_key(self.config.endpoint) or ""
        payload = P.encode_request(P.Request(rid, cmd, args, self._key, self.token))
        address = self._address
        if address is None:
            try:  # never block: a server that stopped reading fills the queue (1,000 requests) in 10 s of posts
                self._socket().send_multipart([b"", payload], flags=zmq.NOBLOCK)
            except zmq.Again:
                self.close()
                raise ClientError(f"the engine at {self.config.endpoint} takes no more requests (1,000 are "
                                  "waiting); is it stuck? restart `musebridge serve`") from None
            return rid
        try:
            if self._local is None:
                self._local = LocalConnection(address, self.config.timeout)
            self._local.send(payload)
        except OSError as exc:
            self.close()
            option = "--local PATH" if isinstance(address, str) else "--direct-port PORT"
            raise ClientError(f"cannot reach the engine at {self.config.endpoint} ({exc}); is `musebridge serve "
                              f"{option}` running?", "connection") from None
        return rid

    def _recv(self, timeout: float) -> bytes | None:
        """The next reply frame within `timeout` seconds, or None."""
        if self._local is None:
            sock = self._socket()
            ms = max(1, math.ceil(timeout * 1000)) if timeout > 0 else 0  # 0: only what has arrived
            return sock.recv_multipart()[-1] if sock.poll(ms) else None
        try:
            return self._local.recv(timeout)
        except (OSError, P.ProtocolError) as exc:
            self.close()
            raise ClientError(f"lost the engine at {self.config.endpoint}: {exc}", "connection") from None

    def post(self, cmd: str, **args) -> str:
        """Send a command without waiting for its reply; returns its request id. The server answers in order,
        so a call() right after it shares the round trip (call() discards replies to other ids). For messages
        whose reply nobody needs (the bridge's `anticipate`, every 10 ms). Replies that have already arrived (to
        earlier posts) are read and dropped first, without waiting, so a stream of posts leaves no backlog for
        the next call to read."""
        if self._sock is not None or self._local is not None:
            while self._recv(0) is not None:
                pass
        return self._send(cmd, args)

    def call(self, cmd: str, timeout: float | None = None, **args) -> dict:
        """Send one command and wait at most `timeout` seconds (default: config.timeout) for its reply.
        Returns the result object; raises ClientError on timeout or on an error reply."""
        rid = self._send(cmd, args)
        wait = self.config.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while True:
            left = deadline - time.monotonic()
            data = self._recv(left) if left > 0 else None
            if data is None:
                self._abandon(rid)
                raise ClientError(f"no reply to {cmd!r} from {self.config.endpoint} within {wait:g} s; "
                                  "is `musebridge serve` running?")
            try:
                reply = P.decode_reply(data)
            except P.ProtocolError as exc:
                raise ClientError(f"{cmd}: unreadable reply from {self.config.endpoint} ({exc})",
                                  exc.code) from None
            if reply.id != rid:
                continue  # a late reply to an earlier, timed-out request
            if not reply.ok:
                code = reply.error_code or "internal"
                if code == "unauthorized" and self._rekey():
                    return self.call(cmd, timeout, **args)  # the server restarted with a new key
                raise ClientError(in_context(cmd, code, reply.error_message or code), code)
            return reply.result or {}

    def _abandon(self, rid: str) -> None:
        """Stop waiting for request `rid`: ask the server to cancel it, then close (dropping whatever may still
        arrive for it). Over the direct transport closing is enough: the server cancels a closed connection's
        requests. Over ZeroMQ the cancel is sent and the socket closed with a short linger, so the cancel still
        leaves without the caller waiting for it."""
        if self._sock is not None:
            try:
                self._send("cancel", {"request": rid})
                self._sock.close(linger=int(CANCEL_LINGER_S * 1000))
                self._sock = None
            except ClientError:
                pass
        self.close()

    def _rekey(self) -> bool:
        """Read the connection file again; True when it holds a key other than the one refused."""
        if self.config.secret is not None:
            return False
        old, self._key = self._key, find_key(self.config.endpoint) or ""
        return self._key != old

    def ping(self, timeout: float = 0.5) -> bool:
        """True when a server answers `status` within `timeout` seconds."""
        try:
            self.call("status", timeout=timeout)
        except ClientError:
            return False
        return True

    def events(self, topics: tuple[str, ...] = ("",), timeout: float | None = None) -> Iterator[P.Event]:
        """Subscribe now (all topics by default) and return an iterator of published events. The iterator stops
        after `timeout` seconds without an event (None: waits forever). ZeroMQ subscriptions take a moment to
        reach the server: events published in the first few milliseconds may be missed."""
        if self._sub is None:
            self._sub = self._open(zmq.SUB, self.config.events_endpoint)
            self._monitor = self._sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        for topic in set(topics) - self._topics:  # calling again (same topics) resumes the same stream
            self._sub.setsockopt(zmq.SUBSCRIBE, topic.encode("ascii"))
            self._topics.add(topic)
        return self._receive(self._sub, timeout)

    def dropped(self) -> bool:
        """True when the events connection to the server has dropped since the last call: the server stopped,
        crashed or was killed (ZeroMQ reconnects by itself once one listens again). Without waiting; False
        before events() was called."""
        if self._monitor is None:
            return False
        drops = 0
        while self._monitor.poll(0):
            drops += recv_monitor_message(self._monitor)["event"] == zmq.EVENT_DISCONNECTED
        return drops > 0

    @staticmethod
    def _receive(sub: zmq.Socket, timeout: float | None) -> Iterator[P.Event]:
        while True:
            if not sub.poll(None if timeout is None else int(timeout * 1000)):
                return
            try:
                yield P.decode_event(sub.recv_multipart())
            except P.ProtocolError:
                continue
