"""The one-line live status of `musebridge play`: mode, state, tempo, traffic, latency, engine."""

from __future__ import annotations

import time


def percentile_ms(values, q: float) -> float | None:
    """q-th percentile (0-100) of seconds, in milliseconds; None when empty."""
    data = sorted(values)
    if not data:
        return None
    return 1000.0 * data[min(len(data) - 1, int(round(q / 100 * (len(data) - 1))))]


def status_text(bridge) -> str:
    now = bridge.clock.now()
    f = bridge.follower
    source = "MIDI clock" if f.external(now) else "internal"
    tempo = f"{f.bpm:.1f} bpm {source}{'' if f.running else ' stopped'}"
    parts = [f"{bridge.mode.name}: {bridge.mode.state}", tempo, f"key {bridge.link.key}",
             f"in {bridge.counts['in']} out {bridge.counts['out']}"]
    if bridge.counts["dropped"]:
        parts.append(f"dropped {bridge.counts['dropped']} notes (engine behind)")
    lat = percentile_ms(list(bridge.latencies), 50)
    if lat is not None:
        parts.append(f"answer {lat:.1f} ms")
    err = percentile_ms([abs(e) for e in list(bridge.scheduler.errors_s)], 99)
    if err is not None:
        parts.append(f"timing p99 {err:.2f} ms")
    if bridge.engine_ok:
        slow = f", {bridge.link.slow} slow replies" if bridge.link.slow else ""
        parts.append(f"engine {bridge.link.session} ok{slow}")
    else:
        restarts = getattr(bridge.worker.supervisor, "restarts", 0)
        restarting = f"; restarting it ({restarts})" if restarts else ""
        parts.append(f"engine lost ({bridge.lost_reason}{restarting})")
    return " | ".join(parts)


class StatusLine:
    """Rewrites one terminal line (\\r) on a TTY; elsewhere prints a line every `every_s` seconds."""

    def __init__(self, bridge, stream, enabled: bool = True, every_s: float = 10.0):
        self.bridge, self.stream, self.enabled, self.every_s = bridge, stream, enabled, every_s
        self.tty = hasattr(stream, "isatty") and stream.isatty()
        self._last = 0.0
        self._width = 0

    def show(self) -> None:
        if not self.enabled:
            return
        text = status_text(self.bridge)
        if self.tty:
            self.stream.write("\r" + text.ljust(self._width))
            self._width = len(text)
            self.stream.flush()
        elif time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            print(text, file=self.stream, flush=True)

    def done(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
