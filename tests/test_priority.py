"""The server's real-time priority (engine/server/priority.py): live work at the priority it was started with, the
slices of a long request lower, so a long `generate` does not keep JACK's clients off a CPU. Linux, where
SCHED_FIFO is allowed (root, or an rtprio limit); skipped elsewhere."""

from __future__ import annotations

import os
import threading

import pytest
import zmq
from musebridge.engine.server.client import Client, ClientConfig
from musebridge.engine.server.priority import BACKGROUND_PRIORITY, ThreadPriority, fifo_priority
from musebridge.engine.server.service import Service
from musebridge.engine.server.zmq_server import Server, ServerConfig
from musebridge.engine.sessions.session import Engine

from tests.model_fixtures import export_small
from tests.net import free_port

LIVE = 6


def _fifo_allowed() -> bool:
    result = []

    def probe():
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(LIVE))
            result.append(True)
        except (AttributeError, OSError):
            result.append(False)

    thread = threading.Thread(target=probe)  # only that thread changes policy
    thread.start()
    thread.join()
    return result[0]


pytestmark = pytest.mark.skipif(not _fifo_allowed(), reason="SCHED_FIFO is not allowed here")


def _at_fifo(target, *args) -> threading.Thread:
    """A thread running target(*args) at SCHED_FIFO priority LIVE."""
    def run():
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(LIVE))
        target(*args)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_background_lowers_the_thread_for_the_block_only():
    seen = []

    def check():
        priority = ThreadPriority()
        with priority.background():
            seen.append(fifo_priority())
        seen.extend([fifo_priority(), priority.live])

    _at_fifo(check).join(timeout=5.0)
    assert seen == [BACKGROUND_PRIORITY, LIVE, LIVE]


def test_a_thread_at_normal_priority_is_left_alone():
    priority = ThreadPriority()
    with priority.background():
        assert fifo_priority() == 0
    assert priority.live == 0 and fifo_priority() == 0


class Recording(Service):
    """The real service, noting the serving thread's priority before each slice of each request."""

    def __init__(self, engine):
        super().__init__(engine)
        self.seen: list[tuple[str, int]] = []

    def begin(self, cmd, args, client=""):
        steps = super().begin(cmd, args)

        def recorded():
            while True:
                self.seen.append((cmd, fifo_priority()))
                try:
                    item = next(steps)
                except StopIteration as done:
                    return done.value
                yield item
        return recorded()


def test_a_long_generate_runs_its_later_slices_below_the_live_priority(tmp_path):
    service = Recording(Engine.load(export_small(tmp_path)[1]))
    srv = Server(ServerConfig(port=free_port(), pub_port=free_port()), service)
    loop = _at_fifo(srv.serve_forever, 10)
    try:
        with Client(ClientConfig(endpoint=srv.endpoints[0], timeout=10.0), context=zmq.Context()) as c:
            sid = c.call("session.create", instruments=["piano"], seed=1)["session"]
            assert c.call("generate", session=sid, max_tokens=120)["tokens"] == 120
            c.call("status")
    finally:
        srv.stop()
        loop.join(timeout=5.0)
        srv.close()
    slices = [p for cmd, p in service.seen if cmd == "generate"]
    assert len(slices) > 10, "a long request runs in slices"
    assert slices[0] == LIVE, "its first slice is answered at once, at the live priority"
    assert set(slices[1:]) == {BACKGROUND_PRIORITY}, "the others below it"
    assert service.seen[-1] == ("status", LIVE), "and the server returns to the live priority"
