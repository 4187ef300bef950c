"""Feedback suppression: when one loopback port carries both directions (a single loopMIDI port, a DAW track
that echoes its input), what the bridge sends comes back on its input. Those echoes are recognised by their bytes
within a short window after sending and dropped, so the bridge never answers itself."""

from __future__ import annotations

import threading
from collections import deque

import mido


class EchoFilter:
    """window_s: how long (seconds) after sending an identical incoming message counts as the echo."""

    def __init__(self, window_s: float = 0.1):
        self.window_s = window_s
        self._sent: deque[tuple[float, bytes]] = deque(maxlen=4096)
        self._lock = threading.Lock()
        self.suppressed = 0

    def sent(self, t: float, msg: mido.Message, _source: str = "") -> None:
        """Remember a message sent at time t (seconds). A Scheduler.on_sent listener."""
        with self._lock:
            self._sent.append((t, bytes(msg.bytes())))

    def is_echo(self, t: float, data: bytes) -> bool:
        """True (and forgotten) when `data` arrived at t within window_s after an identical sent message."""
        with self._lock:
            while self._sent and t - self._sent[0][0] > self.window_s:
                self._sent.popleft()
            for i, (_, sent) in enumerate(self._sent):
                if sent == data:
                    del self._sent[i]
                    self.suppressed += 1
                    return True
        return False
