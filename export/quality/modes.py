"""Generation in each offline mode, through real engine sessions (the same code the live server runs), returning
the engine's raw messages: a note the engine never ended stays without its note-off, so the judge can count it.

- continue: the prompt is primed as history, the engine plays on after it in the prompt's instruments;
- respond: the phrase is the player's part (as the bridge feeds it), then the engine answers on its own;
- accompany: the melody is the player's part, fed note by note at its true time while the engine plans around it
  (rolling back what a note contradicts), as the live accompany mode does;
- harmonize: each melody note at once gets `voices` engine notes at its velocity, ended with it (live harmonize);
- from scratch: the instrument-set and style tests.
Times are seconds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

import mido
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.follow_config import FollowConfig
from musebridge.engine.sessions.generate import advance, melody_instrument
from musebridge.engine.sessions.session import Engine, Session
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES
from musebridge.engine.tokens.midifile import notes_from_events

from .prompts import Duet, Piece

PIANO, STRINGS = INSTRUMENT_NAMES.index("piano"), INSTRUMENT_NAMES.index("strings")
PLAYED = ("note_on", "note_off", "control_change")
FOLLOW = FollowConfig()  # the engine's default following


def _classes(events: Sequence[Timed]) -> tuple[int, ...]:
    return tuple(sorted({n.instrument for n in notes_from_events(events)}))


def _main_class(events: Sequence[Timed]) -> int:
    counts = Counter(n.instrument for n in notes_from_events(events))
    return counts.most_common(1)[0][0] if counts else PIANO


def continue_(engine: Engine, piece: Piece, sampling: SamplingConfig, grace_s: float,
              follow: FollowConfig = FOLLOW, best_of: int = 1) -> list[Timed]:
    """The engine continues the prompt in its instruments, until grace_s after the continuation's end."""
    prompt = piece.prompt_events()
    session = engine.new_session(SessionConfig(style=piece.source.style, instruments=_classes(prompt),
                                               sampling=sampling, follow=follow))
    session.prime(prompt)
    return advance(session, piece.prompt_end, piece.end + grace_s, best_of=best_of)


def answer_class(player: int) -> int:
    """The instrument that answers a player: strings for a pianist (the bridge's default), else piano."""
    return STRINGS if player == PIANO else PIANO


def respond(engine: Engine, piece: Piece, sampling: SamplingConfig, grace_s: float,
            follow: FollowConfig = FOLLOW, best_of: int = 1) -> list[Timed]:
    """The prompt is the player's phrase, fed as the bridge feeds it; then the engine answers."""
    phrase = [e for e in piece.prompt_events() if e.msg.type in PLAYED]
    player = _main_class(phrase)
    session = engine.new_session(SessionConfig(style=piece.source.style, instruments=(answer_class(player),),
                                               player_instrument=player, sampling=sampling, follow=follow))
    for time_s, msg in phrase:
        session.insert(time_s, msg)
    return advance(session, piece.prompt_end, piece.end + grace_s, best_of=best_of)


def _duet_session(engine: Engine, duet: Duet, sampling: SamplingConfig, follow: FollowConfig) -> Session:
    instruments = tuple(sorted({n.instrument for n in duet.accompaniment})) or (PIANO,)
    player = melody_instrument({n.instrument for n in duet.melody_notes}, instruments)
    return engine.new_session(SessionConfig(style=duet.source.style, instruments=instruments,
                                            player_instrument=player, sampling=sampling, follow=follow))


def accompany(engine: Engine, duet: Duet, sampling: SamplingConfig, grace_s: float,
              follow: FollowConfig = FOLLOW, best_of: int = 1) -> list[Timed]:
    """The melody is fed at its true times while the engine plans around it in the accompaniment's instruments."""
    session = _duet_session(engine, duet, sampling, follow)
    out: list[Timed] = []
    for time_s, msg in (e for e in duet.melody if e.msg.type in PLAYED):
        out += session.plan(until_time=time_s, best_of=best_of)
        inserted = session.insert(time_s, msg)
        if inserted.rolled_back:
            out = [e for e in out if e.time <= inserted.time]
    return out + advance(session, session.time, duet.end + grace_s, best_of=best_of)


def harmonize(engine: Engine, duet: Duet, sampling: SamplingConfig, voices: int,
              follow: FollowConfig = FOLLOW) -> list[Timed]:
    """Each melody note-on gets `voices` engine notes at once, at its velocity; they end with it."""
    session = _duet_session(engine, duet, sampling, follow)
    out: list[Timed] = []
    sounding: dict[tuple[int, int], list[mido.Message]] = {}
    for time_s, msg in (e for e in duet.melody if e.msg.type in PLAYED):
        key = (getattr(msg, "channel", 0), getattr(msg, "note", -1))
        session.insert(time_s, msg)
        if msg.type == "note_on" and msg.velocity > 0:
            made = [m for _, m in session.generate(n_notes=voices, now=True, max_tokens=8 * voices + 8)
                    if m.type == "note_on" and m.velocity > 0]
            out += [Timed(time_s, m.copy(velocity=msg.velocity)) for m in made]
            sounding.setdefault(key, []).extend(made)
        elif msg.type in ("note_on", "note_off"):
            for voice in sounding.pop(key, []):
                off = mido.Message("note_off", channel=voice.channel, note=voice.note)
                out.append(Timed(time_s, off))
                session.insert(time_s, off, engine=True)
    return out


def from_scratch(engine: Engine, style: str, instruments: tuple[int, ...], seconds: float,
                 sampling: SamplingConfig, follow: FollowConfig = FOLLOW,
                 style_guidance: float = 1.0) -> list[Timed]:
    """The engine alone for `seconds`, conditioned on a style and an instrument set (the style played with
    `style_guidance`, engine/inference/guidance.py)."""
    session = engine.new_session(SessionConfig(style=style, instruments=instruments, sampling=sampling,
                                               follow=follow, style_guidance=style_guidance))
    return advance(session, 0.0, seconds)


def seeded(sampling: SamplingConfig, seed: int) -> SamplingConfig:
    """The same sampling with another seed (one per generated piece: runs are reproducible piece by piece)."""
    return replace(sampling, seed=seed)
