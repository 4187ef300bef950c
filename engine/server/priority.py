"""The server thread's real-time priority: live work at the priority it serves at, long work lower.

`musebridge play` starts its engine at SCHED_FIFO 1 where the system allows it, and the engine, once its model is
loaded, serves at LIVE_PRIORITY (`serve --live-priority`; bridge/launcher.py): above the process threads of JACK's
clients (5 under a jackd at its default 10), which would otherwise preempt a player's note in the middle of its
model step (docs/benchmarks.md, "Live latency"). Long work must not keep those clients off a CPU: the model is
loaded below them (loading at 6 holds a CPU for seconds, long enough to deadlock jackd in the real-port tests),
and a long request's slices (a `generate` of many tokens, a whole file fed) run at BACKGROUND_PRIORITY. Linux only;
elsewhere, and under any other policy, nothing changes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

LIVE_PRIORITY = 6  # SCHED_FIFO priority `play` asks its engine to serve at
BACKGROUND_PRIORITY = 1  # SCHED_FIFO priority of a long request's slices (still above ordinary processes)


def fifo_priority() -> int:
    """The calling thread's SCHED_FIFO priority (1-99); 0 under another policy or where there is none."""
    try:
        if os.sched_getscheduler(0) == os.SCHED_FIFO:
            return os.sched_getparam(0).sched_priority
    except (AttributeError, OSError):
        pass
    return 0


def set_fifo(priority: int) -> bool:
    """SCHED_FIFO `priority` for the calling thread; False when the system refuses."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return True
    except (AttributeError, OSError) as exc:
        log.debug("cannot set SCHED_FIFO priority %d: %s", priority, exc)
        return False


class ThreadPriority:
    """The priority of the thread that creates it (its live priority); background() lowers it for a block."""

    def __init__(self) -> None:
        self.live = fifo_priority()

    @contextmanager
    def background(self) -> Iterator[None]:
        """Run the block at BACKGROUND_PRIORITY when the live priority is above it, then return to the live one
        (if the system no longer allows that, the thread stays lower from then on, and says so once)."""
        if self.live <= BACKGROUND_PRIORITY or not set_fifo(BACKGROUND_PRIORITY):
            yield
            return
        try:
            yield
        finally:
            if not set_fifo(self.live):
                log.warning("cannot return to SCHED_FIFO priority %d after a long request; staying at %d",
                            self.live, BACKGROUND_PRIORITY)
                self.live = BACKGROUND_PRIORITY
