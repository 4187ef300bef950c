"""Offline generation through the engine, file to file: from scratch, continuing a prompt, or accompanying a
melody.

All three run a real engine Session (the same code as the live server), so what you hear offline is what the
live engine plays. Times are seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import mido

from .codec import Timed
from .errors import EngineError
from .instruments import INSTRUMENT_NAMES
from .midifile import notes_from_events
from .sampler import SamplingConfig
from .session import Engine
from .session_config import SessionConfig

log = logging.getLogger(__name__)

STAND_INS = ("voice", "pipe", "strings", "reed", "organ", "piano")  # classes that can stand for a melody
CHUNK_S = 1.0  # generation advances (and reports progress) in steps of this many seconds


@dataclass(frozen=True)
class GenerateConfig:
    """style: vocab style name; instruments: classes the engine plays (None: the prompt's, for continuation);
    seconds: how much to generate (scratch, continue) in seconds; sampling: temperature, top-p, seed ..."""

    style: str = "unknown"
    instruments: tuple[int, ...] | None = None
    seconds: float = 20.0
    sampling: SamplingConfig = SamplingConfig(temperature=1.0, top_p=0.98)


@dataclass(frozen=True)
class Generated:
    """The result: `parts` maps a part name ("model", "prompt", "melody") to its timed messages."""

    parts: dict[str, list[Timed]]

    def events(self) -> list[Timed]:
        """All parts merged by time (stable: a part's own order is kept)."""
        return sorted((e for part in self.parts.values() for e in part), key=lambda e: e.time)


Progress = Callable[[float], None]  # called with the seconds generated so far


def _run(session, start: float, end: float, progress: Progress | None) -> list[Timed]:
    out: list[Timed] = []
    t = start
    while t < end:
        t = min(end, t + CHUNK_S)
        out += session.plan(until_time=t)
        session.commit(t)
        if progress:
            progress(t - start)
    return out + session.finish()


def from_scratch(engine: Engine, config: GenerateConfig, progress: Progress | None = None) -> Generated:
    instruments = config.instruments or (0,)
    session = engine.new_session(SessionConfig(style=config.style, instruments=instruments,
                                               sampling=config.sampling))
    return Generated({"model": _clip(_run(session, 0.0, config.seconds, progress), config.seconds)})


def continuation(engine: Engine, prompt: list[Timed], config: GenerateConfig,
                 progress: Progress | None = None) -> Generated:
    """Continue `prompt` (timed messages) for config.seconds after its last event."""
    prompt_notes = notes_from_events(prompt)
    if not prompt_notes:
        raise EngineError("the prompt has no notes to continue")
    instruments = config.instruments or tuple(sorted({n.instrument for n in prompt_notes}))
    session = engine.new_session(SessionConfig(style=config.style, instruments=instruments,
                                               sampling=config.sampling))
    session.prime(prompt)
    start = max(n.end for n in prompt_notes)
    model = _run(session, start, start + config.seconds, progress)
    return Generated({"prompt": prompt, "model": _clip(model, start + config.seconds)})


def melody_instrument(melody_classes: set[int], instruments: tuple[int, ...]) -> int:
    """The class the melody is given in the model's eyes: its own, unless the engine plays that one too."""
    for cls in sorted(melody_classes):
        if cls not in instruments:
            return cls
    for name in STAND_INS:
        if INSTRUMENT_NAMES.index(name) not in instruments:
            return INSTRUMENT_NAMES.index(name)
    raise EngineError("no instrument class is left for the melody; ask for fewer instruments")


def accompaniment(engine: Engine, melody: list[Timed], config: GenerateConfig,
                  progress: Progress | None = None) -> Generated:
    """Add config.instruments under `melody`, in its timing: the melody is fed as the player's part, note by note
    at its true time, and the engine plans up to each note (rolling back what the note contradicts)."""
    notes = notes_from_events(melody)
    if not notes:
        raise EngineError("the melody has no notes")
    instruments = config.instruments or (INSTRUMENT_NAMES.index("piano"),)
    player = melody_instrument({n.instrument for n in notes}, instruments)
    session = engine.new_session(SessionConfig(style=config.style, instruments=instruments,
                                               player_instrument=player, sampling=config.sampling))
    model: list[Timed] = []
    for event in (e for e in melody if e.msg.type in ("note_on", "note_off", "control_change")):
        model += session.plan(until_time=event.time)
        inserted = session.insert(event.time, event.msg)
        if inserted.rolled_back:
            model = [e for e in model if e.time <= inserted.time]
        if progress:
            progress(event.time)
    end = max(n.end for n in notes)
    model += session.plan(until_time=end)
    model = _clip(model + session.finish(), end)
    return Generated({"melody": melody, "model": model})


def _clip(events: list[Timed], end: float) -> list[Timed]:
    """Drop events after `end` seconds, then end the notes still sounding at `end` (no hanging notes)."""
    kept = [e for e in events if e.time <= end + 1e-9]
    held: dict[tuple[int, int], int] = {}
    for _, msg in kept:
        key = (getattr(msg, "channel", 0), getattr(msg, "note", -1))
        if msg.type == "note_on" and msg.velocity > 0:
            held[key] = held.get(key, 0) + 1
        elif msg.type in ("note_on", "note_off") and held.get(key):
            held[key] -= 1
    for (channel, note), count in sorted(held.items()):
        kept += [Timed(end, mido.Message("note_off", channel=channel, note=note, velocity=0))] * count
    return kept
