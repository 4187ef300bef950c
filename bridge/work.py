"""Typed work events: what the input stage and the engine watcher hand the engine worker (bridge/worker.py).

Each is a frozen dataclass; the worker dispatches them with `match`. Times are seconds on the bridge clock.
"""

from __future__ import annotations

from dataclasses import dataclass

import mido


@dataclass(frozen=True, slots=True)
class PlayerNote:
    """A player note-on, note-off or sustain pedal (CC64) received at t, for the current mode."""

    t: float
    msg: mido.Message


@dataclass(frozen=True, slots=True)
class Transport:
    """The MIDI transport started, continued or relocated while running (running=True) or stopped, at t."""

    running: bool
    t: float


@dataclass(frozen=True, slots=True)
class Control:
    """A mapped CC (config.CCMap): action is a mode name, "trigger" or "temperature"; value 0-127; at t."""

    action: str
    value: int
    t: float


@dataclass(frozen=True, slots=True)
class SwitchMode:
    """Switch to mode `name`, asked through the engine's control protocol (the engine knows it already)."""

    name: str


@dataclass(frozen=True, slots=True)
class Silenced:
    """Everything was just silenced on the out port (panic, CC123, stop CC, transport stop)."""


@dataclass(frozen=True, slots=True)
class EngineGone:
    """The engine watcher saw the server stop or its connection drop; reason: one line for the status."""

    reason: str


@dataclass(frozen=True, slots=True)
class Stop:
    """The end of a queue: the thread reading it returns."""


WorkEvent = PlayerNote | Transport | Control | SwitchMode | Silenced | EngineGone
STOP = Stop()
