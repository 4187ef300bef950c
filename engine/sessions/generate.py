"""Offline generation through the engine, file to file: from scratch, continuing a prompt, or accompanying a
melody.

All three run a real engine Session (the same code as the live server), so what you hear offline is what the
live engine plays. Times are seconds.

The result is laid out for a DAW: the prompt's or melody's messages as they were (their channels, programs, track
names, tempo map and metre), and the model's part on tracks of its own, one per instrument class it plays, named
"MuseBridge <class>", each on its own channel (model_channels) with its program at time 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import mido

from ..errors import EngineError
from ..inference.sampler import SamplingConfig
from ..tokens.codec import Timed
from ..tokens.instruments import DRUM_CHANNEL, DRUMS, INSTRUMENT_NAMES, INSTRUMENTS
from ..tokens.midifile import (
    DEFAULT_TEMPO,
    Conductor,
    MetreChange,
    TempoChange,
    notes_from_events,
    release_held,
    ticks_per_beat_for,
    write_midi,
)
from .follow_config import FollowConfig
from .session import Engine
from .session_config import SessionConfig

log = logging.getLogger(__name__)

STAND_INS = ("voice", "pipe", "strings", "reed", "organ", "piano")  # classes that can stand for a melody
CHUNK_S = 1.0  # generation advances (and reports progress) in steps of this many seconds
SCRATCH_CONDUCTOR = Conductor((TempoChange(0.0, DEFAULT_TEMPO),), (MetreChange(0.0, 4, 4),))  # 120 bpm, 4/4
MODEL_TRACK = "MuseBridge {}"  # the model's track names, by instrument class name
_DECODED_CLASS = {i.channel: cls for cls, i in enumerate(INSTRUMENTS)}  # a session's output channel -> class


@dataclass(frozen=True)
class GenerateConfig:
    """style: vocab style name; instruments: classes the engine plays (None: the prompt's, for continuation);
    seconds: how much to generate (scratch, continue) in seconds; sampling: temperature, top-p, seed ...;
    scale: allowed pitch classes (None: all); pitch_range: (low, high) MIDI notes for every engine instrument
    (None: each instrument's own); max_polyphony: most engine notes at once (None: no cap); follow: how the
    engine follows the prompt or melody (engine/sessions/follow.py); best_of: candidate continuations sampled per
    second of music, the most probable kept; context: tokens the model sees (None: its block size);
    style_guidance: how strongly the style is played (engine/inference/guidance.py; 1: the model as it is)."""

    style: str = "unknown"
    instruments: tuple[int, ...] | None = None
    seconds: float = 20.0
    sampling: SamplingConfig = SamplingConfig()  # the engine's defaults, as `play` and the server use
    scale: tuple[int, ...] | None = None
    pitch_range: tuple[int, int] | None = None
    max_polyphony: int | None = None
    follow: FollowConfig = FollowConfig()
    best_of: int = 1
    context: int | None = None
    style_guidance: float = 1.0

    def session_config(self, instruments: tuple[int, ...], player: int | None = None) -> SessionConfig:
        """The session that plays `instruments` (beside `player`'s class, when there is a player)."""
        ranges = tuple((i, *self.pitch_range) for i in instruments) if self.pitch_range else ()
        return SessionConfig(style=self.style, instruments=instruments, player_instrument=player,
                             sampling=self.sampling, scale=self.scale, pitch_ranges=ranges,
                             max_polyphony=self.max_polyphony, context=self.context, follow=self.follow,
                             style_guidance=self.style_guidance)


@dataclass(frozen=True)
class Generated:
    """The result: `parts` maps a part name ("model", "prompt", "melody") to its timed messages (seconds);
    `conductor` is the tempo map and metre to write them with; `track_names` maps a MIDI channel to its track's
    name (channels not named there are named by write_midi after the class they play)."""

    parts: dict[str, list[Timed]]
    conductor: Conductor = SCRATCH_CONDUCTOR
    track_names: dict[int, str] = field(default_factory=dict)

    def events(self) -> list[Timed]:
        """All parts merged by time (stable: a part's own order is kept)."""
        return sorted((e for part in self.parts.values() for e in part), key=lambda e: e.time)

    def write(self, path) -> None:
        """Write events() as a .mid file (atomically): the conductor track, then one track per channel, with
        1 ms ticks at 120 bpm and 960 ticks per beat under any other tempo map."""
        write_midi(self.events(), path, ticks_per_beat_for(self.conductor), track_names=self.track_names,
                   conductor=self.conductor)


Progress = Callable[[float], None]  # called with the seconds generated so far


def advance(session, start: float, end: float, progress: Progress | None = None, best_of: int = 1) -> list[Timed]:
    """Plan and commit from `start` to `end` seconds, CHUNK_S at a time (each chunk the most probable of
    `best_of` candidates); the engine's messages as planned (a note still sounding at `end` has no note-off)."""
    out: list[Timed] = []
    t = start
    while t < end:
        t = min(end, t + CHUNK_S)
        out += session.plan(until_time=t, best_of=best_of)
        session.commit(t)
        if progress:
            progress(t - start)
    return out


def _run(session, start: float, end: float, progress: Progress | None, best_of: int) -> list[Timed]:
    return advance(session, start, end, progress, best_of) + session.finish()


def from_scratch(engine: Engine, config: GenerateConfig, progress: Progress | None = None, *,
                 conductor: Conductor | None = None) -> Generated:
    """config.seconds of music in config.instruments (default: piano). conductor: the tempo map and metre the
    file is written with (default: 120 bpm, 4/4); the music's times in seconds do not depend on it."""
    instruments = config.instruments or (0,)
    session = engine.new_session(config.session_config(instruments))
    model = _clip(_run(session, 0.0, config.seconds, progress, config.best_of), config.seconds)
    return _arranged(model, None, [], conductor or SCRATCH_CONDUCTOR, None)


def continuation(engine: Engine, prompt: list[Timed], config: GenerateConfig,
                 progress: Progress | None = None, *, conductor: Conductor | None = None,
                 track_names: dict[int, str] | None = None) -> Generated:
    """Continue `prompt` (timed messages) for config.seconds after its last event. conductor, track_names: the
    prompt file's tempo map and metre, and its track names by channel (MidiEvents gives both), kept in the
    result (default: 120 bpm, 4/4; tracks named after their class)."""
    prompt_notes = notes_from_events(prompt)
    if not prompt_notes:
        raise EngineError("the prompt has no notes to continue")
    instruments = config.instruments or tuple(sorted({n.instrument for n in prompt_notes}))
    session = engine.new_session(config.session_config(instruments))
    session.prime(prompt)
    start = max(n.end for n in prompt_notes)
    model = _clip(_run(session, start, start + config.seconds, progress, config.best_of), start + config.seconds)
    return _arranged(model, "prompt", prompt, conductor or SCRATCH_CONDUCTOR, track_names)


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
                  progress: Progress | None = None, *, conductor: Conductor | None = None,
                  track_names: dict[int, str] | None = None) -> Generated:
    """Add config.instruments under `melody`, in its timing: the melody is fed as the player's part, note by note
    at its true time, and the engine plans up to each note (rolling back what the note contradicts).
    conductor, track_names: the melody file's, kept in the result (as for continuation)."""
    notes = notes_from_events(melody)
    if not notes:
        raise EngineError("the melody has no notes")
    instruments = config.instruments or (INSTRUMENT_NAMES.index("piano"),)
    player = melody_instrument({n.instrument for n in notes}, instruments)
    session = engine.new_session(config.session_config(instruments, player))
    model: list[Timed] = []
    for event in (e for e in melody if e.msg.type in ("note_on", "note_off", "control_change")):
        model += session.plan(until_time=event.time, best_of=config.best_of)
        inserted = session.insert(event.time, event.msg)
        if inserted.rolled_back:
            model = [e for e in model if e.time <= inserted.time]
        if progress:
            progress(event.time)
    end = max(n.end for n in notes)
    model += session.plan(until_time=end, best_of=config.best_of)
    model = _clip(model + session.finish(), end)
    return _arranged(model, "melody", melody, conductor or SCRATCH_CONDUCTOR, track_names)


def _clip(events: list[Timed], end: float) -> list[Timed]:
    """Drop events after `end` seconds, then end the notes still sounding at `end` (no hanging notes)."""
    return release_held([e for e in events if e.time <= end + 1e-9], end)


def model_channels(classes, taken: set[int]) -> dict[int, int]:
    """Instrument class -> the MIDI channel (0-15) its part is written on, next to parts already on `taken`.
    Drums always play on channel 10 (index 9), General MIDI's drum channel, shared with the source's drums if it
    has any. Any other class plays on its default channel (engine/tokens/instruments.py) when that is free, else on
    the lowest channel free of `taken` and of the other classes, never 9 (it would sound as drums)."""
    chosen = {c: INSTRUMENTS[c].channel for c in classes if c == DRUMS or INSTRUMENTS[c].channel not in taken}
    free = [ch for ch in range(16) if ch != DRUM_CHANNEL and ch not in taken and ch not in chosen.values()]
    for cls in sorted(set(classes) - set(chosen)):
        if not free:
            raise EngineError(f"no MIDI channel is left for the model's {INSTRUMENT_NAMES[cls]}: the prompt or "
                              f"melody uses {len(taken)}; ask for fewer instruments or merge its channels")
        chosen[cls] = free.pop(0)
    return chosen


def _arranged(model: list[Timed], source_name: str | None, source: list[Timed], conductor: Conductor,
              source_names: dict[int, str] | None) -> Generated:
    """The model's part (as a session decodes it: each class on its default channel) moved to the channels
    model_channels picks beside `source`, with one program change per class at time 0 in place of the
    decoder's, and the result's track names: the source's, and "MuseBridge <class>" for the model's tracks.
    A class the model strikes no note in gets no track (its messages could only end notes of the prompt's)."""
    classes = sorted({_DECODED_CLASS[m.channel] for _, m in model if m.type == "note_on" and m.velocity > 0})
    taken = {e.msg.channel for e in source if hasattr(e.msg, "channel")}
    channels = model_channels(classes, taken)
    part = [Timed(0.0, mido.Message("program_change", channel=channels[c], program=INSTRUMENTS[c].program))
            for c in classes if c != DRUMS]
    part += [Timed(t, msg.copy(channel=channels[_DECODED_CLASS[msg.channel]])) for t, msg in model
             if msg.type != "program_change" and _DECODED_CLASS.get(getattr(msg, "channel", -1)) in channels]
    names = {channels[c]: MODEL_TRACK.format(INSTRUMENT_NAMES[c]) for c in classes
             if channels[c] not in taken}  # drums sharing the source's channel 10 keep its track
    names |= {ch: name for ch, name in (source_names or {}).items() if ch in taken}
    parts = {source_name: source, "model": part} if source_name else {"model": part}
    return Generated(parts, conductor, names)
