"""`musebridge serve`: the engine as its own process, a ZeroMQ ROUTER for commands and an XPUB for events.

One thread runs the loop: poll the ROUTER, parse (engine/server/protocol.py), dispatch to the service
(engine/server/service.py, which owns the sessions and the model), reply, then publish the request's events; a long
request (a `generate` of many tokens) runs in slices between the others' requests (engine/server/jobs.py); then,
while no request waits, let the service run the last sampled tokens through the model (their forward pass is kept
off the reply's path), and, after a request on the direct transport, poll a moment longer without sleeping
(ServerConfig.spin_s).
ROUTER replies wait in bounded memory for a client that reads late, and one that stopped reading is cut off
(engine/server/replies.py; its requests are then dropped for a while), and the XPUB drops for slow
subscribers (and builds no event for a topic nobody subscribed to), so one slow or vanished client never stalls
another. Sessions unused for `session_timeout` seconds are reclaimed.

Security: loopback by default. Binding any other address requires CURVE keys (`musebridge keys DIR`); then only
clients whose public key is in DIR/authorized/ may connect. `--ipc DIR` sockets are mode 0600 in a folder only
their owner can write (made 0700 when missing).
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import zmq

from ..errors import EngineError
from . import protocol as P
from .client import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PUB_PORT
from .connection import new_key, remove_connection, write_connection
from .jobs import Jobs
from .local import LocalListener, check_private_folder
from .priority import ThreadPriority
from .replies import ReplyQueue

log = logging.getLogger(__name__)

_TOPIC_NAMES = tuple(t.encode("ascii") for t in P.TOPICS)
# Bytes of one message a subscriber may send (a ZMTP 3.1 SUBSCRIBE command carries its name, 10 bytes, before the
# prefix); far above any prefix of TOPICS, far below what could cost memory. A larger one cuts the subscriber off.
SUBSCRIPTION_LIMIT = 256


SLICE_EVERY_S = 0.005  # a long request gets a slice at least this often, even under a stream of requests


class ServerError(EngineError):
    """The server cannot start (address in use, insecure bind, missing keys)."""


@dataclass(frozen=True)
class ServerConfig:
    """host: interface to bind (loopback by default); port/pub_port: TCP ports; ipc: folder for ipc:// endpoints
    instead of TCP; local: also answer requests on this Unix socket path, direct_port: and/or on this loopback TCP
    port (the direct transport, engine/server/local.py; not with keys: it has no authentication); keys: folder from
    `musebridge keys` (required for non-loopback hosts); session_timeout: seconds before an unused session is
    reclaimed; hwm: messages queued per peer before dropping; spin_s: after a request on the direct transport
    is answered (and the sampled tokens are precomputed), keep polling without sleeping for this many seconds
    before blocking, so the next request of a burst (a bridge's second voice, a scripted loop) is picked up
    without the wake-up cost of a sleeping process (0 turns it off; CPU cost: at most spin_s per request). Not
    after a ZeroMQ request: there a spinning thread keeps the server's own ZeroMQ I/O thread, which sends the
    reply, off a CPU (on 2 cores, docs/benchmarks.md "Server round trip"). parent: the process id of
    the program that started this server (`musebridge play`): when it is gone, even killed, the server stops
    within about a second instead of lingering."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    pub_port: int = DEFAULT_PUB_PORT
    ipc: str | None = None
    local: str | None = None
    direct_port: int | None = None
    keys: str | None = None
    session_timeout: float = 300.0
    hwm: int = 1000
    spin_s: float = 0.0003
    parent: int | None = None

    def endpoints(self) -> tuple[str, str]:
        if self.ipc:
            return f"ipc://{self.ipc}/musebridge-rep", f"ipc://{self.ipc}/musebridge-pub"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}", f"tcp://{host}:{self.pub_port}"


@contextlib.contextmanager
def private_ipc(folder: str | None) -> Iterator[None]:
    """Around the binds of `serve --ipc DIR`: DIR is made (mode 0700) when missing and must be writable by its
    owner alone (engine/server/local.py), and the socket files are born 0600 (libzmq makes them under the umask):
    only this user can connect, as to --local. Nothing for TCP endpoints."""
    if folder is None:
        yield
        return
    with contextlib.suppress(FileExistsError):
        Path(folder).mkdir(mode=0o700, parents=True)
    check_private_folder(Path(folder))
    old = os.umask(0o177)
    try:
        yield
    finally:
        os.umask(old)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """The transport loop. `service` answers commands: begin(cmd, args) -> steps (engine/server/jobs.py);
    idle(busy) does work between requests for sessions not in `busy`; reap(timeout) closes unused sessions."""

    def __init__(self, config: ServerConfig, service, context: zmq.Context | None = None):
        if not config.ipc and not is_loopback(config.host) and not config.keys:
            raise ServerError(
                f"refusing to listen on {config.host} without CURVE keys; run `musebridge keys DIR` and pass "
                "--keys DIR (or bind 127.0.0.1)")
        if config.keys and config.direct_port is not None:
            raise ServerError("--direct-port has no authentication and would bypass the CURVE keys: use the "
                              "ZeroMQ endpoint with --keys, or drop --keys on a machine you alone use")
        self.config = config
        self.service = service
        self._ctx = context or zmq.Context()
        self._auth = None
        self._seq = 0
        self._stop = False
        self._last_housekeeping = time.monotonic()
        self._slice_at = 0.0  # perf_counter() of the last slice of a long request
        self._spin_until = 0.0  # perf_counter() until which to poll without sleeping (ServerConfig.spin_s)
        self._events: list[tuple[str, str | None, dict]] = []  # from the requests being answered
        self.jobs = Jobs(service.begin, self._events.extend)
        self.rep = self._ctx.socket(zmq.ROUTER)
        self.pub = self._ctx.socket(zmq.XPUB)  # a PUB that also tells us which topics anyone subscribed to
        self._topics: Counter[bytes] = Counter()  # subscriptions per topic prefix (b"" = everything)
        for sock in (self.rep, self.pub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, config.hwm)
            sock.setsockopt(zmq.RCVHWM, config.hwm)
        self.rep.setsockopt(zmq.MAXMSGSIZE, P.MAX_MESSAGE_BYTES * 4)  # larger frames: the peer is cut off
        ReplyQueue.configure(self.rep)
        self.replies = ReplyQueue(self.rep)
        self.pub.setsockopt(zmq.XPUB_MANUAL, 1)  # subscriptions pass _read_subscriptions before they count
        self.pub.setsockopt(zmq.MAXMSGSIZE, SUBSCRIPTION_LIMIT)
        if config.keys:
            self._secure(Path(config.keys))
        rep_ep, pub_ep = config.endpoints()
        try:
            with private_ipc(config.ipc):
                self.rep.bind(rep_ep)
                self.pub.bind(pub_ep)
        except (EngineError, OSError) as exc:
            self.close()
            why = isinstance(exc, OSError) and f"cannot make --ipc {config.ipc}: {exc.strerror}; choose another"
            raise ServerError(why or str(exc)) from None
        except zmq.ZMQError as exc:
            self.close()
            raise ServerError(f"cannot listen on {rep_ep} / {pub_ep}: {exc}; is another server running? "
                              "choose other ports with --port/--pub-port") from None
        self.endpoints = (rep_ep, pub_ep)
        self.local: LocalListener | None = None
        self._poller_key: tuple | None = None
        self._poller: zmq.Poller | None = None
        self._open_local(config, rep_ep, pub_ep)

    def _open_local(self, config: ServerConfig, rep_ep: str, pub_ep: str) -> None:
        """The direct transport, and the connection file local clients read the server's key from."""
        # Local clients prove they are this user's with the key of a connection file only this user can read
        # (engine/server/connection.py); CURVE keys authenticate clients instead when the server has them.
        self.key = None if config.keys else new_key()
        self.connection_file = None
        if config.local or config.direct_port is not None:
            try:
                self.local = LocalListener(config.local, config.direct_port)
                self.local.on_drop = self.jobs.cancel  # a client that hung up wants no more work done
            except EngineError as exc:
                self.close()
                raise ServerError(str(exc)) from None
        if self.key is not None:
            try:
                self.connection_file = write_connection({
                    "commands": rep_ep, "events": pub_ep, "port": None if config.ipc else config.port,
                    "pub_port": None if config.ipc else config.pub_port, "ipc": config.ipc, "local": config.local,
                    "direct_port": config.direct_port, "key": self.key})
            except (EngineError, OSError) as exc:
                self.close()
                raise ServerError(f"cannot write the connection file: {exc}") from None

    def _secure(self, folder: Path) -> None:
        import zmq.auth  # noqa: PLC0415
        from zmq.auth.thread import ThreadAuthenticator  # noqa: PLC0415

        secret, authorized = folder / "server.key_secret", folder / "authorized"
        if not secret.is_file() or not authorized.is_dir():
            raise ServerError(f"no server keys in {folder}; create them with `musebridge keys {folder}`")
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve(domain="*", location=str(authorized))
        public, private = zmq.auth.load_certificate(secret)
        for sock in (self.rep, self.pub):
            sock.curve_secretkey, sock.curve_publickey, sock.curve_server = private, public, True

    def _read_subscriptions(self) -> None:
        """Apply the subscriptions that arrived (b"\\x01" + prefix) and unsubscriptions (b"\\x00" + prefix;
        also sent for each subscription of a subscriber that went away). The XPUB is manual, so a subscription is
        kept (by libzmq, per subscriber, and counted here) only when it is a prefix of a topic the server
        publishes: memory for subscriptions is bounded by subscribers x prefixes of TOPICS, whatever is sent."""
        while True:
            try:
                msg = self.pub.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            kind, prefix = msg[:1], msg[1:]
            if kind not in (b"\x00", b"\x01") or not any(t.startswith(prefix) for t in _TOPIC_NAMES):
                continue
            if kind == b"\x01":
                self.pub.setsockopt(zmq.SUBSCRIBE, prefix)
                self._topics[prefix] += 1
            elif self._topics[prefix] > 0:
                self.pub.setsockopt(zmq.UNSUBSCRIBE, prefix)
                self._topics[prefix] -= 1
                if not self._topics[prefix]:
                    del self._topics[prefix]

    def publish(self, topic: str, data: dict, session: str | None = None) -> None:
        """Send one event, unless no subscriber wants its topic (the JSON is then not even built). Sequence
        numbers count every event, sent or not. Subscriptions are read by the loop (_serve_ready)."""
        self._seq += 1
        name = topic.encode("ascii")
        if not any(name.startswith(prefix) for prefix in self._topics):
            return
        event = P.Event(topic, self._seq, time.time(), session, data)
        try:
            self.pub.send_multipart(P.encode_event(event), flags=zmq.NOBLOCK)
        except TypeError as exc:  # data JSON cannot carry: a bug, but not one to stop the server for
            log.error("event %s dropped: %s", topic, exc)
        except zmq.Again:
            log.debug("event %s dropped: subscribers are not reading", topic)

    def receive(self, frames: list[bytes], send, peer) -> None:
        """One request's frames (after the routing id) from `peer`: answered through send(reply frame) now,
        or later when it is long or waits its turn (engine/server/jobs.py). Unparsable requests are answered at
        once."""
        if frames and frames[0] == b"":
            frames = frames[1:]  # DEALER/REQ delimiter
        try:
            req = P.parse_request(frames, self.key)
        except P.ProtocolError as exc:
            send(P.encode_reply(P.error_reply(exc)))
            return
        self.jobs.submit(req, send, peer)

    def _publish_pending(self) -> None:
        events = self._events[:]  # the list itself stays: the request queue (self.jobs) adds to it
        self._events.clear()
        for topic, session, data in events:
            self.publish(topic, data, session)

    def serve_forever(self, poll_ms: int = 100) -> None:
        """Run until stop() (or SIGINT/SIGTERM via install_signal_handlers)."""
        rep_ep, pub_ep = self.endpoints
        self._priority = ThreadPriority()  # of this thread, the one that serves
        log.info("serving on %s, events on %s", rep_ep, pub_ep)
        self.publish("server", {"state": "started", "endpoint": rep_ep})
        while not self._stop:
            if self._serve_ready(poll_ms):
                self._between_requests()
            self._housekeeping()
        self.publish("server", {"state": "stopping", "action": "silence all notes"})
        time.sleep(0.05)  # let the last event leave

    def _housekeeping(self) -> None:
        """At most once a second: stop when the parent process is gone; reclaim unused sessions."""
        if time.monotonic() - self._last_housekeeping < 1.0:
            return
        self._last_housekeeping = time.monotonic()
        if self.config.parent is not None and os.getppid() != self.config.parent:
            log.warning("process %d, which started this server, is gone: stopping", self.config.parent)
            self._stop = True
        self.replies.forget_old()
        for sid in self.service.reap(self.config.session_timeout):
            self.publish("session", {"state": "reclaimed", "timeout_s": self.config.session_timeout}, sid)

    def _serve_ready(self, timeout_ms: int) -> bool:
        """Wait up to timeout_ms for requests on the ROUTER and the local socket; answer those that came.
        True when anything was served."""
        local = {} if self.local is None else {sock.fileno(): sock for sock in self.local.sockets()}
        sending = () if self.local is None else tuple(s.fileno() for s in self.local.waiting_to_send())
        if self._poller_key != (tuple(local), sending):  # rebuilt only when connections or outboxes change
            self._poller_key = (tuple(local), sending)
            self._poller = zmq.Poller()
            self._poller.register(self.rep, zmq.POLLIN)
            self._poller.register(self.pub, zmq.POLLIN)
            for fd in local:
                self._poller.register(fd, zmq.POLLIN | (zmq.POLLOUT if fd in sending else 0))
        if self.replies.waiting:  # replies wait for clients to read: come back soon to send them
            self.replies.flush()
            timeout_ms = min(timeout_ms, 2)
        ready = self._poller.poll(timeout_ms)  # (zmq socket or fd, flags); pyzmq reports plain sockets by fd
        for key, flags in ready:
            if key is self.pub:
                self._read_subscriptions()
            elif key is self.rep:
                self._serve_one()
            elif flags & zmq.POLLIN:
                self.local.readable(local[key], lambda payload, conn: self.receive(
                    [payload], lambda reply: self.local.send(conn, reply), conn))
                self._spin_until = time.perf_counter() + self.config.spin_s
            else:
                self.local.writable(local[key])
        if self._events:
            self._publish_pending()
        return bool(ready)

    def _between_requests(self) -> None:
        """Serve what arrives meanwhile; else precompute the sampled tokens; else poll without sleeping until
        spin_s seconds have passed since the last request on the direct transport (the next one of a burst is
        picked up at once); then run the unfinished long requests a slice at a time (engine/server/jobs.py; a slice
        at least every SLICE_EVERY_S even while requests keep coming), and return when none is left."""
        while not self._stop:
            if self._serve_ready(0) or self._idle_work():
                continue
            if (now := time.perf_counter()) < self._spin_until and now - self._slice_at < SLICE_EVERY_S:
                continue
            if self._long_slice():
                self._slice_at = time.perf_counter()
                self._publish_pending()
                self._housekeeping()  # a long request must not hold off a parent check for its whole length
            elif now >= self._spin_until:
                return

    def _long_slice(self) -> bool:
        """One slice of an unfinished long request, below the live priority (engine/server/priority.py): a long
        `generate` does not keep JACK's clients off a CPU. False when there is none."""
        if not self.jobs.running:
            return False
        with self._priority.background():
            return self.jobs.step()

    def _idle_work(self) -> bool:
        try:
            return self.service.idle(self.jobs.sessions())
        except Exception:  # noqa: BLE001 - like a failing command: the request that needs these logits reports it
            log.exception("precomputing the next logits failed")
            return False

    def _serve_one(self) -> None:
        try:
            frames = self.rep.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return
        identity = frames[0]
        if self.replies.stalled(identity):
            self.jobs.cancel(("zmq", identity))  # nobody will read what they would make
            return
        self.receive(frames[1:], lambda reply: self.replies.send(identity, reply), ("zmq", identity))

    def stop(self, *_signal_args) -> None:
        self._stop = True

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGINT, self.stop)
        signal.signal(signal.SIGTERM, self.stop)

    def close(self) -> None:
        remove_connection(getattr(self, "connection_file", None))
        self.connection_file = None
        if getattr(self, "local", None) is not None:
            self.local.close()
            self.local = None
        for sock in (self.rep, self.pub):
            sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
