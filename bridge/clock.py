"""Time sources for the bridge: the real monotonic clock and a controllable fake clock for tests.

Everything in the bridge asks a Clock for the time (seconds, float, arbitrary origin) instead of calling
time.* directly, so tests can drive the scheduler, the clock follower and the modes step by step.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)

SPIN_S = 0.0015  # the last 1.5 ms before a due time are spun, not slept: OS sleeps overshoot by up to ~1 ms
SPIN_STEP_S = 0.0001  # sleep granularity while spinning
RT_SPIN_S = 0.0003  # a real-time thread wakes within tens of microseconds: spin only the last 0.3 ms


def try_realtime(priority: int) -> bool:
    """Give the calling thread SCHED_FIFO `priority` (1-99; keep it below JACK's) when the system allows it
    (Linux with an rtprio limit, e.g. the `audio` group). False, and nothing changes, elsewhere."""
    if not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as exc:
        log.debug("no real-time priority for %s: %s", threading.current_thread().name, exc)
        return False
    return True


class Clock(Protocol):
    def now(self) -> float:
        """Current time in seconds (monotonic; only differences are meaningful)."""

    def sleep_until(self, when: float, wake: threading.Event | None = None) -> bool:
        """Wait until `when` (seconds on this clock) or until `wake` is set; True if `when` was reached."""


class MonotonicClock:
    """time.perf_counter(): sub-microsecond resolution, never goes backwards. sleep_until sleeps coarsely and
    spins the last spin_s seconds, so a due time is met with sub-millisecond error on an idle core."""

    def __init__(self, spin_s: float = SPIN_S):
        self.spin_s = spin_s

    def now(self) -> float:
        return time.perf_counter()

    def sleep_until(self, when: float, wake: threading.Event | None = None) -> bool:
        while True:
            left = when - time.perf_counter()
            if left <= 0:
                return True
            if wake is not None and wake.is_set():
                return False
            if left > self.spin_s:
                if wake is not None:
                    wake.wait(left - self.spin_s)
                else:
                    time.sleep(left - self.spin_s)
            else:
                # short real sleeps, not sleep(0): a thread that only yields keeps retaking the GIL, and the MIDI
                # callback (which needs it to timestamp) would wait up to the 5 ms switch interval
                time.sleep(min(left, SPIN_STEP_S))


class FakeClock:
    """A clock that moves only when told: advance(seconds) or set(seconds). sleep_until never blocks: it
    reports whether the due time has been reached, so code under test must be driven step by step."""

    def __init__(self, start: float = 1000.0):
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> float:
        with self._lock:
            self._now += seconds
            return self._now

    def set(self, when: float) -> None:
        with self._lock:
            self._now = max(self._now, when)

    def sleep_until(self, when: float, wake: threading.Event | None = None) -> bool:
        return self.now() >= when
