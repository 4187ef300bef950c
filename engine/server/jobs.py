"""Requests in progress on the server: each is answered at once unless it is long, and a long one runs in slices
between the others' requests, so a script generating a whole piece never stalls a live session.

A service command is a generator of steps (engine/server/service.py, `Service.begin`): each next() does a bounded
slice of work and yields the events to publish at once; its return value is (result, events) for the reply (see
engine/sessions/steps.py). A `generate` that is not `now` (service.STEP_TOKENS model steps a step, best-of
candidates included), a `feed` of more than service.FEED_STEP_EVENTS events and a `set` that changes the
conditioning prefix (service.REREAD_TOKENS a step) take more than one step; everything else takes one.

Order: the first slice of a request runs as soon as it arrives. A request from a peer (a ZeroMQ identity, a
direct connection) or for a session that has an unfinished request waits until that one is answered, so each
peer's replies keep its requests' order and a session never sees two requests at once. Unfinished requests take
turns, one slice each, whenever no new request is waiting (the server's loop calls step()). At most MAX_WAITING
requests wait; more are refused (`overloaded`), so a client piling requests behind a long one cannot grow the
server's memory without bound.

Cancelling: `cancel` is answered at once, never queued behind the requests it ends. It ends the sender's own
requests (one by id, or all), running or waiting; each is answered `cancelled`. The server cancels a direct
connection's requests when it closes, and the client cancels a request it stopped waiting for
(engine/server/client.py). What a cancelled `generate` already generated stays in its session, as after a shorter
request.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass, field
from itertools import chain

from ..errors import EngineBug, EngineError
from . import protocol as P

log = logging.getLogger(__name__)

MAX_WAITING = 1024  # requests queued behind unfinished ones; more are refused with `overloaded`
Event = tuple[str, str | None, dict]  # (topic, session id or None, data)
Steps = Generator[list[Event], None, tuple[dict, list[Event]]]


@dataclass(eq=False)
class Job:
    """One request: `send` takes its encoded reply; `peer` who sent it; `session` the session it names."""

    req: P.Request
    send: Callable[[bytes], None]
    peer: Hashable
    session: str | None = None
    steps: Steps | None = field(default=None, repr=False)


class Jobs:
    """Requests started or waiting. begin(cmd, args, client) -> Steps; publish(events) sends events at once."""

    def __init__(self, begin: Callable[[str, dict, str], Steps], publish: Callable[[list[Event]], None]):
        self._begin = begin
        self._publish = publish
        self._running: deque[Job] = deque()  # started, unfinished: one slice each in turn
        self._waiting: deque[Job] = deque()  # behind an unfinished request of the same peer or session

    @property
    def running(self) -> bool:
        return bool(self._running)

    def sessions(self) -> set[str]:
        """Sessions with a started, unfinished request: their idle work is that request's to do."""
        return {job.session for job in self._running if job.session is not None}

    def submit(self, req: P.Request, send: Callable[[bytes], None], peer: Hashable) -> None:
        """A parsed request: its first slice now, or it waits behind its peer's or session's unfinished one."""
        if req.cmd == "cancel":
            count = self.cancel(peer, req.args.get("request"))
            send(P.encode_reply(P.Reply(req.id, True, result={"cancelled": count})))
            return
        session = req.args.get("session")
        job = Job(req, send, peer, session if isinstance(session, str) else None)
        if not self._blocked(job):
            self._start(job)
        elif len(self._waiting) < MAX_WAITING:
            self._waiting.append(job)
        else:
            send(P.encode_reply(P.error_reply(P.ProtocolError(
                "overloaded", f"{MAX_WAITING} requests already wait behind unfinished ones; wait for your replies "
                "before sending more", req.id))))

    def cancel(self, peer: Hashable, request_id: str | None = None) -> int:
        """End `peer`'s unfinished requests (only the one with `request_id` when given), each answered
        `cancelled`; returns how many."""
        ended = [job for job in chain(self._running, self._waiting)
                 if job.peer == peer and (request_id is None or job.req.id == request_id)]
        for job in ended:
            (self._running if job in self._running else self._waiting).remove(job)
            if job.steps is not None:
                job.steps.close()
            job.send(P.encode_reply(P.error_reply(P.ProtocolError(
                "cancelled", f"{job.req.cmd} cancelled before it finished", job.req.id))))
        if ended:
            self._release()
        return len(ended)

    def step(self) -> bool:
        """One slice of the unfinished request whose turn it is; False when there is none."""
        if not self._running:
            return False
        job = self._running.popleft()
        if self._advance(job):
            self._release()
        else:
            self._running.append(job)
        return True

    def _blocked(self, job: Job) -> bool:
        return any(other.peer == job.peer or (job.session is not None and other.session == job.session)
                   for other in chain(self._running, self._waiting))

    def _start(self, job: Job) -> bool:
        """Its first slice; True when it is left unfinished (then it runs in turn)."""
        job.steps = self._begin(job.req.cmd, job.req.args, job.req.client)
        if self._advance(job):
            return False
        self._running.append(job)
        return True

    def _release(self) -> None:
        """Start the waiting requests that nothing blocks any more, in arrival order (one pass: the peers and
        sessions of the requests still unfinished are collected as it goes)."""
        waiting, self._waiting = self._waiting, deque()
        peers = {job.peer for job in self._running}
        sessions = {job.session for job in self._running} - {None}
        for job in waiting:
            if job.peer in peers or job.session in sessions:
                self._waiting.append(job)
            elif not self._start(job):
                continue
            peers.add(job.peer)
            if job.session is not None:
                sessions.add(job.session)

    def _advance(self, job: Job) -> bool:
        """Run one slice; True when the request is finished (its reply sent, its events passed on)."""
        try:
            self._publish(next(job.steps))
            return False
        except StopIteration as done:
            result, events = done.value
            job.send(P.encode_reply(P.Reply(job.req.id, True, result=result)))
            self._publish(events)  # after the reply has left
        except P.ProtocolError as exc:
            exc.request_id = job.req.id
            job.send(P.encode_reply(P.error_reply(exc)))
        except EngineBug as exc:
            _internal(job, exc)
        except EngineError as exc:
            job.send(P.encode_reply(P.Reply(job.req.id, False, error_code="bad_argument", error_message=str(exc))))
        except Exception as exc:  # noqa: BLE001 - the live server must survive a bug in one command
            _internal(job, exc)
        return True


def _internal(job: Job, exc: Exception) -> None:
    """A bug met while answering: logged with its traceback, answered `internal`; the server carries on."""
    log.exception("internal error in %s", job.req.cmd, exc_info=exc)
    job.send(P.encode_reply(P.Reply(job.req.id, False, error_code="internal",
                                    error_message=f"{job.req.cmd} failed: {type(exc).__name__}: {exc}")))
