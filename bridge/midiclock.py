"""MIDI clock: follow an external 0xF8 clock (24 ppqn) with transport and song position, or run an internal one.

    follower = ClockFollower(ClockConfig(bpm=120))
    follower.handle(t, msg)          # clock / start / stop / continue / songpos messages, t in seconds
    follower.bpm                     # tempo estimate (beats per minute)
    follower.beat_at(t)              # position in beats (quarter notes) at time t
    follower.time_of_beat(b)         # when beat b falls, extrapolated at the current tempo

Tempo is the median, over the last `window_ticks` ticks, of the slopes between ticks half a window apart: robust
against a late tick (an outlier moves the median little) and averaging jitter over many ticks. Without an external
clock (none seen for `timeout_s`), an internal clock at `bpm` runs from its own start time.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass

import mido

from .errors import ConfigError

PPQN = 24  # MIDI clock ticks per quarter note
TICKS_PER_SIXTEENTH = 6  # song position pointer unit

GRIDS = {"1/4": 1.0, "1/8": 0.5, "1/16": 0.25, "1/32": 0.125, "1/4t": 2 / 3, "1/8t": 1 / 3, "1/16t": 1 / 6}


def grid_beats(name: str | None) -> float | None:
    """Length in beats of a quantization grid name ("1/8", "1/16", "1/8t" ...); None for no quantization."""
    if name in (None, "", "off", "none"):
        return None
    if name not in GRIDS:
        raise ConfigError(f"unknown quantization grid {name!r}; choose from: off, {', '.join(GRIDS)}")
    return GRIDS[name]


@dataclass(frozen=True)
class ClockConfig:
    """bpm: internal clock tempo (and the tempo before any external tick). window_ticks: ticks in the tempo
    estimate. timeout_s: seconds without a tick before the external clock counts as gone. quantize: grid name."""

    bpm: float = 120.0
    window_ticks: int = 48
    timeout_s: float = 0.5
    quantize: str | None = None

    def __post_init__(self):
        if not 20.0 <= self.bpm <= 400.0:
            raise ConfigError(f"tempo {self.bpm} bpm is out of range; use 20..400")
        grid_beats(self.quantize)


class ClockFollower:
    """Transport state, tempo and beat position from MIDI clock messages (or the internal clock)."""

    def __init__(self, config: ClockConfig | None = None, start: float = 0.0):
        self.config = config or ClockConfig()
        self.running = True  # the internal clock runs until an external transport says otherwise
        self._ticks: deque[tuple[int, float]] = deque(maxlen=self.config.window_ticks)  # (tick count, time s)
        self._count = 0  # clock ticks since start (position in ticks)
        self._last_tick: float | None = None
        self._last_pos: tuple[float, float] = (0.0, start)  # (beat, time) of the latest position fix
        self._spt = 60.0 / self.config.bpm / PPQN  # seconds per tick
        self.grid = grid_beats(self.config.quantize)

    # -- input -----------------------------------------------------------------------------------------------
    def handle(self, t: float, msg: mido.Message) -> str | None:
        """Apply one realtime message at time t (seconds). Returns "start", "stop", "continue", "tick",
        "position" or None (not a clock message)."""
        handler = {"clock": self._tick, "start": self._start, "stop": self._stop, "continue": self._continue,
                   "songpos": self._songpos}.get(msg.type)
        if handler is None:
            return None
        handler(t, msg)
        return "tick" if msg.type == "clock" else "position" if msg.type == "songpos" else msg.type

    def _tick(self, t: float, _msg) -> None:
        if self._last_tick is not None and t - self._last_tick > max(4 * self._spt, self.config.timeout_s):
            self._ticks.clear()  # a gap: the old ticks say nothing about the new tempo
        self._last_tick = t
        self._ticks.append((len(self._ticks) and self._ticks[-1][0] + 1, t))
        self._estimate()
        if self.running:
            self._last_pos = (self._count / PPQN, t)
            self._count += 1

    def _estimate(self) -> None:
        ticks = list(self._ticks)
        half = len(ticks) // 2
        if half < 2:
            return
        slopes = [(ticks[i + half][1] - ticks[i][1]) / (ticks[i + half][0] - ticks[i][0])
                  for i in range(len(ticks) - half)]
        spt = statistics.median(slopes)
        if spt > 0:
            self._spt = spt

    def _start(self, t: float, _msg) -> None:
        self._count = 0
        self._last_pos = (0.0, t)
        self.running = True

    def _stop(self, t: float, _msg) -> None:
        self._last_pos = (self.beat_at(t), t)
        self.running = False

    def _continue(self, t: float, _msg) -> None:
        self._last_pos = (self._count / PPQN, t)
        self.running = True

    def _songpos(self, t: float, msg) -> None:
        self._count = msg.pos * TICKS_PER_SIXTEENTH
        self._last_pos = (self._count / PPQN, t)

    # -- queries ---------------------------------------------------------------------------------------------
    def external(self, now: float) -> bool:
        """True while an external clock is ticking (a tick within timeout_s)."""
        return self._last_tick is not None and now - self._last_tick <= self.config.timeout_s

    @property
    def bpm(self) -> float:
        return 60.0 / (self._spt * PPQN)

    @property
    def seconds_per_beat(self) -> float:
        return self._spt * PPQN

    def beat_at(self, t: float) -> float:
        """Position in beats at time t (seconds): the last fix, extrapolated while running."""
        beat, when = self._last_pos
        if not self.running:
            return beat
        return beat + (t - when) / self.seconds_per_beat

    def time_of_beat(self, beat: float) -> float:
        """Time (seconds) at which `beat` falls, at the current tempo."""
        ref_beat, when = self._last_pos
        return when + (beat - ref_beat) * self.seconds_per_beat

    def quantize(self, t: float, not_before: float | None = None) -> float:
        """t (seconds) moved to the nearest grid line, or to the next one when the nearest is before
        `not_before` (a note is never moved into the past). Unchanged without a grid, or while the transport is
        stopped (the grid does not move then: every note would land on one line)."""
        if self.grid is None or not self.running:
            return t
        beat = self.beat_at(t)
        snapped = self.time_of_beat(round(beat / self.grid) * self.grid)
        if not_before is not None and snapped < not_before:
            snapped = self.time_of_beat(math.ceil(beat / self.grid) * self.grid)
        return snapped
