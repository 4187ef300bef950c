"""What a play mode sees: the narrow context of bridge/modes.py.

A mode asks the engine (feed, generate, anticipate), plays the engine's events on a timebase, releases them,
reads the time and the tempo, and records how long an answer took. It never sees ports, queues, threads, the CC
map or the reconnect logic. Times: `wall` is seconds on the bridge clock, `session` seconds on the engine
session's timeline (0 when the session began).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

import mido
from musebridge.engine.server.wire import to_wire

from .clock import Clock
from .config import ModeConfig
from .engine_link import EngineLink
from .output import Events, Key, OutputStage

Timed = Iterable[tuple[float, mido.Message]]


class Tempo(Protocol):
    """The transport and tempo a mode may read (midiclock.ClockFollower). Times in seconds, positions in beats."""

    running: bool

    @property
    def seconds_per_beat(self) -> float: ...

    def beat_at(self, t: float) -> float: ...

    def time_of_beat(self, beat: float) -> float: ...


class SessionTime:
    """Engine session seconds <-> bridge clock seconds. origin: the bridge clock time of session time 0 (it
    moves when a new engine session starts)."""

    def __init__(self, origin: float):
        self.origin = origin

    def session(self, wall: float) -> float:
        return max(0.0, wall - self.origin)

    def wall(self, session: float) -> float:
        return self.origin + session


class ModeContext:
    """The bridge as a mode sees it. config: the modes' settings; tempo: transport and tempo; latencies: seconds
    from a player's note or a trigger to the first engine note sent (the status line's `answer`)."""

    def __init__(self, config: ModeConfig, link: EngineLink, output: OutputStage, time: SessionTime,
                 tempo: Tempo, clock: Clock):
        self.config, self.tempo = config, tempo
        self.latencies: deque[float] = deque(maxlen=1000)
        self._link, self._output, self._time, self._clock = link, output, time, clock

    # -- time ------------------------------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock.now()

    def session_time(self, wall: float) -> float:
        return self._time.session(wall)

    def wall_time(self, session: float) -> float:
        return self._time.wall(session)

    def measured(self, since: float) -> None:
        """An answer's first note was just sent; since: when the player's note or the trigger came."""
        self.latencies.append(self._clock.now() - since)

    # -- the engine ------------------------------------------------------------------------------------------
    def _wire(self, items: Timed, engine_ends: Timed = ()) -> list[dict]:
        """Player messages at wall times -> protocol events (session times). engine_ends: note-offs (engine
        channels) for engine notes the bridge ended itself, marked `"engine": true`."""
        session = self._time.session
        events = [to_wire(session(t), m) for t, m in items]
        return events + [to_wire(session(t), m, engine=True) for t, m in engine_ends]

    def feed(self, items: Timed, engine_ends: Timed = ()) -> dict:
        """Feed player messages (wall times) to the engine; returns its reply (rolled_back, time)."""
        return self._link.feed(self._wire(items, engine_ends))

    def generate(self, *, until: float | None = None, notes: int | None = None, max_tokens: int | None = None,
                 now: bool = False, feed: Timed = ()) -> tuple[list[tuple[float, mido.Message]], float]:
        """Ask the engine for notes up to session time `until`, or `notes` note-ons, in at most `max_tokens`
        tokens; now: only note-ons at the current time (docs/protocol.md); feed: player messages (wall times)
        fed first in the same request. Returns (events at session times, the engine's timeline end)."""
        limits: dict = {k: v for k, v in (("until", until), ("notes", notes), ("max_tokens", max_tokens))
                        if v is not None}
        if now:
            limits["now"] = True
        if feed:
            limits["feed"] = self._wire(feed)
        return self._link.generate(**limits)

    def anticipate(self, session: float) -> None:
        """Tell the engine the player may play at this session time (no reply awaited)."""
        self._link.anticipate(session)

    def engine_time(self) -> float:
        """End of the engine's planned timeline (session seconds)."""
        return float(self._link.feed([]).get("time", 0.0))

    # -- the out port ----------------------------------------------------------------------------------------
    def play(self, events: Events, to_wall: Callable[[float], float], quantize: bool = True,
             voices_of: Key | None = None, flush: bool = False) -> list[tuple[float, mido.Message]]:
        """Play engine events on the timebase to_wall (session or beat time -> wall time): OutputStage.play."""
        return self._output.play(events, to_wall, quantize, voices_of, flush)

    def release(self) -> None:
        """End the engine's notes now and drop its plan."""
        self._output.release()

    def cancel_after(self, wall: float) -> None:
        """Drop the engine's plan after this time (a rollback); what already sounds ends as planned."""
        self._output.cancel_after(wall)

    def end_voices(self, key: Key | None, now: float) -> list[mido.Message]:
        """End the harmony voices of a player key now; returns them as the engine made them."""
        return self._output.end_voices(key, now)

    def forget_voices(self) -> None:
        self._output.forget_voices()

    def keys_down(self) -> int:
        """How many of the player's keys are down (counted since forget_keys)."""
        return self._output.keys_down()

    def forget_keys(self) -> None:
        self._output.forget_keys()
