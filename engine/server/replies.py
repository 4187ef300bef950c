"""Replies to ZeroMQ clients, in bounded memory, without ever blocking the server's loop.

The ROUTER queues at most ZMQ_HWM replies per client (ROUTER_MANDATORY: a full queue says EAGAIN instead of
dropping quietly). A burst of replies (a script pipelining many requests) can fill it before the client's I/O
thread has taken the first ones, so a reply that does not fit waits in this client's outbox here and is sent as
the queue drains (`flush()`, from the server's loop). A client that stopped reading lets its outbox grow: past
OUTBOX_BYTES (or when all outboxes together pass TOTAL_BYTES) it is dropped, and the client counts as stalled for
STALLED_S: its requests are dropped unanswered and its unfinished ones cancelled, after which one request tests
it again. Memory for unread replies is thus at most ZMQ_HWM replies and OUTBOX_BYTES per client, and TOTAL_BYTES
in all.
"""

from __future__ import annotations

import logging
import time
from collections import deque

import zmq

log = logging.getLogger(__name__)

ZMQ_HWM = 32  # replies ZeroMQ queues for one client
OUTBOX_BYTES = 1 << 19  # bytes of replies waiting here for one client before it counts as not reading
TOTAL_BYTES = 64 << 20  # and for all clients together
STALLED_S = 1.0  # a client found not reading has its requests dropped for this long
FORGET_S = 60.0  # a stalled client not heard from for this long is forgotten


class ReplyQueue:
    """Sends replies on a ROUTER (set up by `configure`); `flush()` sends what waits as clients read."""

    def __init__(self, rep: zmq.Socket):
        self.rep = rep
        self._outbox: dict[bytes, deque[bytes]] = {}
        self._bytes: dict[bytes, int] = {}
        self._total = 0
        self._stalled: dict[bytes, float] = {}  # client -> time.monotonic() it was found not reading

    @staticmethod
    def configure(rep: zmq.Socket) -> None:
        rep.setsockopt(zmq.SNDHWM, ZMQ_HWM)
        rep.setsockopt(zmq.ROUTER_MANDATORY, 1)

    @property
    def waiting(self) -> bool:
        """True while some replies wait here (the loop should flush soon)."""
        return bool(self._outbox)

    def stalled(self, identity: bytes) -> bool:
        """True when this client's requests are to be dropped now (it was found not reading moments ago)."""
        at = self._stalled.get(identity)
        if at is None:
            return False
        if time.monotonic() - at < STALLED_S:
            return True
        del self._stalled[identity]  # try again: this request's reply shows whether it reads now
        return False

    def send(self, identity: bytes, reply: bytes) -> None:
        if identity in self._outbox or not self._try(identity, reply):
            self._hold(identity, reply)

    def flush(self) -> None:
        for identity in list(self._outbox):
            queue = self._outbox[identity]
            while queue and self._try(identity, queue[0]):
                self._account(identity, -len(queue.popleft()))
            if not queue:
                del self._outbox[identity], self._bytes[identity]

    def forget_old(self) -> None:
        now = time.monotonic()
        for identity in [i for i, at in self._stalled.items() if now - at > FORGET_S]:
            del self._stalled[identity]

    def _try(self, identity: bytes, reply: bytes) -> bool:
        try:
            self.rep.send_multipart([identity, b"", reply], flags=zmq.NOBLOCK)
        except zmq.Again:
            return False
        except zmq.ZMQError as exc:  # EHOSTUNREACH: the client is gone
            log.debug("reply dropped: %s", exc)
        return True

    def _hold(self, identity: bytes, reply: bytes) -> None:
        self._outbox.setdefault(identity, deque()).append(reply)
        self._account(identity, len(reply))
        if self._bytes[identity] > OUTBOX_BYTES or self._total > TOTAL_BYTES:
            log.warning("a client is not reading its replies: %d bytes wait for it; its requests are dropped",
                        self._bytes[identity])
            self._account(identity, -self._bytes[identity])
            del self._outbox[identity], self._bytes[identity]
            self._stalled[identity] = time.monotonic()

    def _account(self, identity: bytes, size: int) -> None:
        self._bytes[identity] = self._bytes.get(identity, 0) + size
        self._total += size
