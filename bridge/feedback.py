"""Feedback suppression: when one loopback port carries both directions (a single loopMIDI port, a DAW track
that echoes its input), what the bridge sends comes back on its input. Those echoes are recognised by their bytes
within a short window after sending and dropped, so the bridge never answers itself.

A message the player really plays ends the window for what was sent earlier on the same key (channel and note,
or channel and controller): a key played again soon at the same velocity (note-on, note-off, note-on) is heard,
not taken for the echo of the first note-on passed thru."""

from __future__ import annotations

import threading
from collections import deque

import mido


class EchoFilter:
    """window_s: how long (seconds) after sending an identical incoming message counts as the echo."""

    def __init__(self, window_s: float = 0.1):
        self.window_s = window_s
        self._sent: deque[tuple[float, bytes, tuple | None]] = deque(maxlen=4096)  # (time s, bytes, _key)
        self._lock = threading.Lock()
        self.suppressed = 0

    def sent(self, t: float, msg: mido.Message, _source: str = "") -> None:
        """Remember a message sent at time t (seconds). A Scheduler.on_sent listener."""
        data = bytes(msg.bytes())
        with self._lock:
            self._sent.append((t, data, _key(data)))

    def is_echo(self, t: float, data: bytes) -> bool:
        """True (and forgotten) when `data` arrived at t within window_s after an identical sent message. False:
        the player's own message, and what was sent before on its key is no longer awaited as an echo."""
        with self._lock:
            while self._sent and t - self._sent[0][0] > self.window_s:
                self._sent.popleft()
            for i, (_, sent, _k) in enumerate(self._sent):
                if sent == data:
                    del self._sent[i]
                    self.suppressed += 1
                    return True
            key = _key(data)
            if key is not None and any(k == key for _, _, k in self._sent):
                self._sent = deque((s for s in self._sent if s[2] != key), maxlen=self._sent.maxlen)
        return False


def _key(data: bytes) -> tuple[int, int] | None:
    """What a channel message is about: (channel, note) for note-on/off and aftertouch, (16 + channel,
    controller) for a control change; None otherwise."""
    if len(data) < 2 or not 0x80 <= data[0] < 0xF0:
        return None
    kind, channel = data[0] & 0xF0, data[0] & 0x0F
    if kind in (0x80, 0x90, 0xA0):
        return channel, data[1]
    if kind == 0xB0:
        return 16 + channel, data[1]
    return None
