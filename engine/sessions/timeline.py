"""A session's timeline: its tokens over one KV cache, with a committed past and a speculative future.

- `State`: the stream state after some tokens (grid step, velocity, sounding notes of both parts, recent onsets);
- `encode_player`, `encode_engine_off`: the tokens of an event inserted after a state (pure functions);
- `Entries`: the tokens, each with whether the player made it and the grid step after it;
- `Timeline`: the entries, the committed and live states, the commit index, the tentative (anticipated) time
  shift and the conditioning prefix. It mirrors its cache: every rollback (truncate) and window slide of the
  cache goes through it, and it asks the inference backend (engine/inference/backend.py) for the next token's
  logits.
engine/sessions/session.py decides what goes where; engine/sessions/generator.py samples what the engine plays.
"""

from __future__ import annotations

import bisect
import copy
import logging
from typing import NamedTuple

import mido
import numpy as np

from ..errors import EngineBug, EngineError
from ..inference.backend import Backend, LogitsRequest
from ..tokens import vocab as V
from ..tokens.codec import EventDecoder, Timed

log = logging.getLogger(__name__)

_PLAYER_KINDS = ("note_on", "note_off", "pedal_on", "pedal_off")
PLAYER_BODY_TOKENS = 2  # the most tokens encode_player puts after an event's time shift (velocity, note)


RECENT_ONSETS = 48  # note-ons remembered in State.recent (what following the player reads)
RECENT_PEDALS = 32  # sustain-pedal presses remembered in State.pedals


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
        self.pedals: tuple[tuple[int, bool], ...] = ()  # the last pedal presses: (grid step, the player's?)
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
        elif kind == "pedal_on":
            self.pedals = (*self.pedals[1 - RECENT_PEDALS:], (self.step, player))
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


class Entries:
    """The timeline's tokens, each with whether the player made it and the grid step after it.

    Three columns that only these methods change, always together (in place: the lists are never replaced).
    Columns rather than one list of records because `tokens` is what the model runs (sliced straight into a
    backend request) and `steps` is searched with bisect, neither of which should build a list per step."""

    __slots__ = ("tokens", "player", "steps")

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.player: list[bool] = []
        self.steps: list[int] = []  # grid step after each token

    def push(self, tokens: list[int], player: bool, state: State) -> list[Timed]:
        """Append `tokens` (the player's if `player`), advancing `state` by each; returns the engine's events."""
        out: list[Timed] = []
        for t in tokens:
            out += state.apply(t, player)
            self.tokens.append(t)
            self.player.append(player)
            self.steps.append(state.step)
        return out

    def replay(self, state: State, start: int, end: int) -> None:
        """Advance `state` by the entries start..end-1 (Python bookkeeping, no model call)."""
        for i in range(start, end):
            state.apply(self.tokens[i], self.player[i])

    def after(self, step: int, lo: int) -> int:
        """Index of the first entry from `lo` on whose grid step is after `step`."""
        return bisect.bisect_right(self.steps, step, lo=lo)

    def truncate(self, n: int) -> None:
        del self.tokens[n:], self.player[n:], self.steps[n:]

    def drop(self, start: int, n: int) -> None:
        """Remove the n entries from `start` on (a window slide)."""
        del self.tokens[start : start + n], self.player[start : start + n], self.steps[start : start + n]

    def replace_prefix(self, old_len: int, prefix: list[int]) -> None:
        """Put `prefix` (conditioning tokens: not the player's, at the first entry's step) in place of the first
        old_len entries."""
        self.player[:old_len] = [False] * len(prefix)
        self.steps[:old_len] = [self.steps[0]] * len(prefix)
        self.tokens[:old_len] = prefix


class Timeline:
    """A session's tokens over one KV cache from `backend`: the conditioning `prefix`, then the window.

    Tokens before `commit_index` are committed (they have sounded; `committed` is the state after them); the
    later ones are speculative (`live` is the state after all). The cache holds tokens[:cache.length] and may
    lag behind: a sampled token's own forward pass waits until the next logits are needed (`next_logits`) or an
    idle moment (`precompute`). When the cache is full, `slide` tokens after the prefix are dropped (committed
    ones only). The last `tentative` tokens are a time shift put there by `anticipate`, no event's yet.
    Not thread-safe: its session's one caller at a time."""

    def __init__(self, backend: Backend, prefix: list[int], context: int | None = None,
                 slide: int | None = None):
        """context: cache capacity in tokens (None: the model's block size); slide: tokens dropped per window
        slide (None: a quarter of the room after the prefix)."""
        self.backend = backend
        self.cache = backend.new_cache(context)
        self.prefix_len = len(prefix)
        self.slide = slide or max(1, (self.cache.capacity - self.prefix_len) // 4)
        room = self.cache.capacity - self.prefix_len  # the window after the prefix
        if self.slide > room // 2:  # a chunk of a slide's size must fit beside what a slide keeps
            raise EngineError(f"slide_tokens {self.slide} is more than half of the {room}-token window after the "
                              f"prefix in a {self.cache.capacity}-token cache; use at most {room // 2}")
        self.cache.plan_slides(self.prefix_len, self.slide)
        self.entries = Entries()
        self.live = State()
        self.committed = State()
        self.commit_index = 0
        self.logits: np.ndarray | None = None  # the backend's answer for the token after the timeline
        self.tentative = 0  # time tokens at the end put there by anticipate(), not yet any event's
        self.dropped = 0  # tokens dropped by window slides so far
        self.append(prefix, player=False)
        self.commit_to(len(self.tokens))

    @property
    def tokens(self) -> list[int]:
        """The token ids, prefix first (the list itself: do not modify)."""
        return self.entries.tokens

    @property
    def end_step(self) -> int:
        """The grid step after the last token that is not a tentative (anticipated) time shift."""
        steps = self.entries.steps
        return steps[len(steps) - 1 - self.tentative]

    @property
    def pending(self) -> int:
        """Tokens not yet through the model."""
        return len(self.entries.tokens) - self.cache.length

    def room(self) -> int:
        """Tokens that fit before the window must slide."""
        return self.cache.capacity - len(self.entries.tokens)

    # -- growing and sliding -------------------------------------------------------------------------------
    def append(self, tokens: list[int], player: bool, run: bool = True) -> list[Timed]:
        """Append tokens (in chunks that fit the window; the player's if `player`); returns the engine's output
        events. run: through the model now; otherwise they wait beyond the cache until logits are needed."""
        out: list[Timed] = []
        for i in range(0, len(tokens), self.slide):
            chunk = tokens[i : i + self.slide]
            self.ensure_room(len(chunk))
            out += self.entries.push(chunk, player, self.live)
            self.logits = None
            if run:
                self.next_logits()
        return out

    def ensure_room(self, n: int) -> None:
        """Slide the window if n more tokens would not fit: drop the oldest committed tokens after the prefix,
        committing everything first if the speculative part reaches into what must go."""
        need = len(self.tokens) + n - self.cache.capacity
        if need <= 0:
            return
        drop = max(self.slide, need)
        if self.cache.length < self.prefix_len + drop:  # the window waits to be re-read (a new prefix)
            self.next_logits()
        if self.commit_index - self.prefix_len < drop:  # never drop speculative tokens: commit them (all) first
            log.debug("window slide commits %d speculative tokens", len(self.tokens) - self.commit_index)
            self.commit_to(len(self.tokens))
        p = self.prefix_len
        self.cache.slide(p, drop)
        self.entries.drop(p, drop)
        self.commit_index -= drop
        self.dropped += drop

    def set_prefix(self, prefix: list[int]) -> None:
        """A new conditioning prefix: the window is read again behind it (lazily: next_logits or precompute)."""
        old_len = self.prefix_len
        if prefix == self.tokens[:old_len]:
            return
        self.ensure_room(max(0, len(prefix) - old_len))
        self.entries.replace_prefix(old_len, prefix)
        self.commit_index += len(prefix) - old_len
        self.prefix_len = len(prefix)
        self.cache.truncate(0)
        self.logits = None  # every token waits to be read again behind the new prefix
        self.cache.plan_slides(self.prefix_len, self.slide)  # slides now keep the new prefix

    # -- commit and rollback -------------------------------------------------------------------------------
    def commit_to(self, index: int) -> None:
        """Commit the tokens before `index`."""
        if index <= self.commit_index:
            return
        if index == len(self.tokens):  # everything: a copy of the live state, not a replay
            self.committed = self.live.copy()
        else:
            self.entries.replay(self.committed, self.commit_index, index)
        self.commit_index = index

    def commit_until(self, step: int) -> None:
        """Commit the tokens at or before grid `step` (an anticipated time shift is taken back first)."""
        self.drop_tentative()
        self.commit_to(self.cut(step))

    def cut(self, step: int) -> int:
        """Index of the first speculative token planned after grid `step`."""
        return self.entries.after(step, self.commit_index)

    def state_at(self, index: int) -> State:
        """The stream state after tokens[:index] (the live state itself when index is the end: do not modify)."""
        if index == len(self.tokens):
            return self.live
        state = self.committed.copy()
        self.entries.replay(state, self.commit_index, index)
        return state

    def rollback(self, index: int, state: State | None = None) -> int:
        """Drop the speculative tokens from `index` on (cache truncation); returns how many. state: the stream
        state at `index`, when the caller has it."""
        if index < self.commit_index:
            raise EngineBug("cannot roll back into the committed past")
        dropped = len(self.tokens) - index
        if dropped:
            self.live = state if state is not None else self.state_at(index)
            self.entries.truncate(index)
            self.cache.truncate(min(index, self.cache.length))
            self.logits = None
        return dropped

    def splice(self, cut: int, state: State, tokens: list[int], player: bool) -> int:
        """An inserted event: drop the speculative tokens from `cut` on (`state`: the stream state there),
        append and run `tokens`, commit everything. Returns the number of tokens rolled back."""
        self.tentative = 0  # a tentative time shift before `cut` is kept: it is this event's
        dropped = self.rollback(cut, state)
        self.append(tokens, player)
        self.commit_to(len(self.tokens))
        return dropped

    def anticipate(self, target: int) -> int:
        """Put the time shift to grid step `target` at the end, tentatively, where it fits with an event's own
        tokens without a slide (see Session.anticipate). Returns the tentative tokens."""
        end = self.end_step
        tokens = V.time_tokens(target - end) if target > end else []
        if tokens != self.tokens[len(self.tokens) - self.tentative :]:
            self.drop_tentative()
            if len(self.tokens) + len(tokens) + PLAYER_BODY_TOKENS <= self.cache.capacity:
                self.append(tokens, player=True, run=False)
                self.tentative = len(tokens)
        return self.tentative

    def drop_tentative(self) -> None:
        """Take back an anticipated time shift (a truncation)."""
        if self.tentative:
            self.rollback(len(self.tokens) - self.tentative)
            self.tentative = 0

    # -- the model -----------------------------------------------------------------------------------------
    def request(self) -> LogitsRequest:
        """What the backend must run for the logits after the timeline: the tokens the cache has not seen; after
        a rollback to the cache's end, the last kept token once more (one token, never the past)."""
        n = self.cache.length
        tokens = self.entries.tokens
        if n >= len(tokens):
            n = len(tokens) - 1
            self.cache.truncate(n)
        return LogitsRequest(self.cache, tokens[n:])

    def next_logits(self) -> np.ndarray:
        """Logits (vocab,) for the token after the timeline, asked of the backend once per change."""
        if self.logits is None:
            self.logits = self.backend.logits((self.request(),))[0]
        return self.logits

    def precompute(self, budget: int | None = None) -> bool:
        """Idle-moment work: run pending tokens (at most `budget`: a window re-read behind a new prefix goes in
        chunks), else prepare the next window slide. True when there was any."""
        pending = self.pending
        if pending > 0:
            if budget is not None and pending > budget:
                n = self.cache.length
                self.backend.logits((LogitsRequest(self.cache, self.tokens[n : n + budget]),))
            else:
                self.next_logits()
            return True
        return self.cache.prepare()
