"""The stream state of a live timeline after some tokens, and the tokens of events inserted into it: the
player's notes and pedal (played as the session's player instrument), and ends of the engine's own notes cut
short by whoever plays them. Pure functions of the state: engine/session.py decides where they go."""

from __future__ import annotations

import copy
from typing import NamedTuple

import mido

from . import vocab as V
from .codec import EventDecoder, Timed

_PLAYER_KINDS = ("note_on", "note_off", "pedal_on", "pedal_off")
PLAYER_BODY_TOKENS = 2  # the most tokens encode_player puts after an event's time shift (velocity, note)


RECENT_ONSETS = 48  # note-ons remembered in State.recent (what following the player reads)


class Onset(NamedTuple):
    """A note-on on the timeline: its grid step, instrument class, pitch, velocity bin, whether the player
    played it, and how many notes of its part were already sounding then."""

    step: int
    cls: int
    pitch: int
    vel_bin: int
    player: bool
    sounding: int


class State:
    """Stream state after some tokens: grid step, velocity bin, engine notes (in the decoder) and the step
    each one started at, player notes, and the last RECENT_ONSETS note-ons of both parts."""

    def __init__(self) -> None:
        self.step = 0
        self.vel_bin: int | None = None
        self.decoder = EventDecoder()
        self.player_held: dict[int, int] = {}
        self.player_pedal = False
        self.started: dict[tuple[int, int], int] = {}  # sounding engine note (class, pitch) -> its first step
        self.recent: tuple[Onset, ...] = ()
        self.last_kind = ""  # the kind of the last token (vocab segment name)

    def apply(self, token: int, player: bool) -> list[Timed]:
        """Advance by one token; returns the engine's output events (none for the player's tokens)."""
        kind, arg = V.token_kind(token)
        self.last_kind = kind
        if kind == "time":
            self.step += arg + 1
        elif kind == "velocity":
            self.vel_bin = arg
        if kind == "note_on":
            self._remember(arg, player)
        elif kind == "note_off" and not player:
            self.started.pop(divmod(arg, V.N_PITCHES), None)
        elif kind == "eos":
            self.started.clear()
        if player and kind in _PLAYER_KINDS:
            pitch = arg % V.N_PITCHES
            if kind == "note_on":
                self.player_held[pitch] = self.player_held.get(pitch, 0) + 1
            elif kind == "note_off":
                self.player_held[pitch] -= 1
                if not self.player_held[pitch]:
                    del self.player_held[pitch]
            else:
                self.player_pedal = kind == "pedal_on"
            return []
        return self.decoder.feed(token)

    def _remember(self, arg: int, player: bool) -> None:
        cls, pitch = divmod(arg, V.N_PITCHES)
        vel_bin = self.vel_bin if self.vel_bin is not None else V.VELOCITY_BINS * 5 // 8
        if player:
            sounding = sum(self.player_held.values())
        else:
            sounding = self.decoder.sounding
            self.started.setdefault((cls, pitch), self.step)
        self.recent = (*self.recent[1 - RECENT_ONSETS:], Onset(self.step, cls, pitch, vel_bin, player, sounding))

    def copy(self) -> State:
        """An independent copy (containers copied one level deep: their items are immutable). copy.deepcopy
        took about 1 ms here; this takes a few microseconds."""
        new = copy.copy(self)
        new.player_held = dict(self.player_held)
        new.started = dict(self.started)
        new.decoder = copy.copy(self.decoder)
        for name, value in vars(new.decoder).items():
            if isinstance(value, (dict, list, set)):
                setattr(new.decoder, name, value.copy())
        return new


def encode_player(state: State, step: int, msg: mido.Message, instrument: int) -> list[int]:
    """Tokens for a player message at grid `step` (>= state.step) after `state`, played as class `instrument`.
    Notes and the sustain pedal produce tokens; a note-off for a note the player is not holding produces none."""
    body: list[int] = []
    if msg.type == "note_on" and msg.velocity > 0:
        vbin = V.velocity_bin(msg.velocity)
        vel = [V.velocity_token(vbin)] if vbin != state.vel_bin else []
        body = vel + [V.note_on_token(instrument, msg.note)]
    elif msg.type in ("note_on", "note_off"):
        if state.player_held.get(msg.note):
            body = [V.note_off_token(instrument, msg.note)]
    elif msg.type == "control_change" and msg.control == 64:
        down = msg.value >= 64
        if down != state.player_pedal:
            body = [V.pedal_token(instrument, down)]
    return (V.time_tokens(step - state.step) + body) if body else []


def ends_note(msg: mido.Message) -> bool:
    """A note-off, or a note-on of velocity 0."""
    return msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0)


def encode_engine_off(state: State, step: int, msg: mido.Message) -> list[int]:
    """Tokens ending an engine note at grid `step` (>= state.step): `msg` is a note-off (or velocity-0 note-on)
    on the channel the engine played that note on. No tokens for a note the engine is not sounding."""
    if not ends_note(msg):
        return []
    decoder = state.decoder
    sounding = [cls for (cls, pitch) in decoder.held if pitch == msg.note and decoder.channels[cls] == msg.channel]
    if not sounding:
        return []
    return V.time_tokens(step - state.step) + [V.note_off_token(sounding[0], msg.note)]
