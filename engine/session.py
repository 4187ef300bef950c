"""Sessions: a timeline of tokens over one KV cache, with a committed past and a speculative future.

    engine = Engine.load()                                   # bundled model, or Engine.load("model.onnx")
    s = engine.new_session(SessionConfig(style="bach", instruments=(0, 5), player_instrument=0))
    planned = s.plan(until_time=2.0)                         # engine notes (Timed, seconds) up to t = 2 s
    s.insert(0.73, mido.Message("note_on", note=60, velocity=90))  # the player, at its true time
    s.commit(until_time=0.9)                                 # what has sounded can no longer be rolled back

Token bookkeeping: `tokens` mirrors the cache (the conditioning prefix, then the window). Tokens before `_commit`
are committed; later ones are speculative. The grid step after each token is kept, so a player event at time t
cuts the speculative tokens planned after t (cache truncation, nothing recomputed), its own tokens are appended
at t, and everything up to it is committed. When the cache is full, the oldest committed tokens after the prefix
are dropped (`KVCache.slide`): memory stays bounded by the model's block size.
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass

import mido
import numpy as np

from . import vocab as V
from .codec import EventEncoder, Timed
from .errors import EngineBug, EngineError
from .follow import Follower
from .runtime import KVCache, Model, RuntimeOptions
from .sampler import MaskedOut, Sampler, additive, dynamic_mask, log_prob
from .session_config import SessionConfig
from .steps import finish, quiet
from .timeline import PLAYER_BODY_TOKENS, State, encode_engine_off, encode_player

log = logging.getLogger(__name__)

READ_CHUNK_TOKENS = 32  # generate_steps reads the chosen best-of candidate this many tokens a step


@dataclass(frozen=True)
class Insertion:
    """Result of inserting a player event: `rolled_back` speculative tokens were dropped; engine events planned
    after `time` (seconds) must be cancelled by whoever scheduled them."""

    rolled_back: int
    time: float


class Session:
    """A live timeline over one KV cache. Not thread-safe: one caller (the server's session loop) at a time."""

    def __init__(self, model: Model, config: SessionConfig):
        self.config = config
        self.cache: KVCache = model.new_cache(config.context)
        self.sampler = Sampler(config.sampling)
        self._set_constraints(config)
        prefix = config.prefix()
        self._prefix_len = len(prefix)
        self._slide = config.slide_tokens or max(1, (self.cache.capacity - self._prefix_len) // 4)
        if self._prefix_len + self._slide >= self.cache.capacity:
            raise EngineError(f"slide_tokens {self._slide} leaves no room in a {self.cache.capacity}-token cache")
        self.cache.plan_slides(self._prefix_len, self._slide)
        self.tokens: list[int] = []  # mirrors the cache
        self._player: list[bool] = []
        self._steps: list[int] = []  # grid step after each token
        self._live = State()
        self._committed = State()
        self._commit = 0
        self._logits = None
        self._tentative = 0  # time tokens at the end put there by anticipate(), not yet any event's
        self.dropped = 0  # tokens dropped by window slides so far
        self._append(prefix, player=False)
        self._commit_to(len(self.tokens))

    # -- timeline ------------------------------------------------------------------------------------------
    @property
    def time(self) -> float:
        """End of the planned timeline, seconds (an anticipated time shift is not part of it yet)."""
        return self._end_step * V.GRID_S

    @property
    def _end_step(self) -> int:
        """The grid step after the last token that is not a tentative (anticipated) time shift."""
        return self._steps[len(self._steps) - 1 - self._tentative]

    @property
    def committed_time(self) -> float:
        return self._committed.step * V.GRID_S

    @property
    def speculative(self) -> int:
        """Number of speculative (not yet committed) tokens."""
        return len(self.tokens) - self._commit

    def _append(self, tokens: list[int], player: bool, run: bool = True) -> list[Timed]:
        """Append tokens to the timeline (in chunks that fit the window). run: put them through the model now;
        otherwise they wait in `tokens` beyond the cache until logits are needed (`_next_logits`) or the
        server has a moment (`precompute`): a sampled token's own forward pass is not on the reply's path."""
        out: list[Timed] = []
        for i in range(0, len(tokens), self._slide):
            chunk = tokens[i : i + self._slide]
            self._ensure_room(len(chunk))
            for t in chunk:
                out += self._live.apply(t, player)
                self.tokens.append(t)
                self._player.append(player)
                self._steps.append(self._live.step)
            self._logits = None
            if run:
                self._next_logits()
        return out

    def _ensure_room(self, n: int) -> None:
        need = len(self.tokens) + n - self.cache.capacity
        if need <= 0:
            return
        drop = max(self._slide, need)
        if self.cache.length < self._prefix_len + drop:  # the window waits to be re-read (a new prefix)
            self._next_logits()
        if self._commit - self._prefix_len < drop:  # never drop speculative tokens: commit them (all) first
            log.debug("window slide commits %d speculative tokens", len(self.tokens) - self._commit)
            self._commit_to(len(self.tokens))
        p = self._prefix_len
        self.cache.slide(p, drop)
        del self.tokens[p : p + drop], self._player[p : p + drop], self._steps[p : p + drop]
        self._commit -= drop
        self.dropped += drop

    def _commit_to(self, index: int) -> None:
        if index <= self._commit:
            return
        if index == len(self.tokens):  # everything: a copy of the live state, not a replay
            self._committed = self._live.copy()
        else:
            for i in range(self._commit, index):
                self._committed.apply(self.tokens[i], self._player[i])
        self._commit = index

    def _state_at(self, index: int) -> State:
        """The stream state after tokens[:index] (the live state itself when index is the end: do not modify)."""
        if index == len(self.tokens):
            return self._live
        state = self._committed.copy()
        for i in range(self._commit, index):
            state.apply(self.tokens[i], self._player[i])
        return state

    def _rollback(self, index: int, state: State | None = None) -> int:
        """Drop the speculative tokens from `index` on (cache truncation); returns how many."""
        if index < self._commit:
            raise EngineBug("cannot roll back into the committed past")
        dropped = len(self.tokens) - index
        if dropped:
            self._live = state if state is not None else self._state_at(index)
            del self.tokens[index:], self._player[index:], self._steps[index:]
            self.cache.truncate(min(index, self.cache.length))
            self._logits = None
        return dropped

    def _next_logits(self):
        """Logits for the token after the timeline. The cache holds tokens[:cache.length]: run the rest; after a
        rollback to the cache's end, step the last kept token again (one token, never the past)."""
        if self._logits is None:
            n = self.cache.length
            if n >= len(self.tokens):
                n = len(self.tokens) - 1
                self.cache.truncate(n)
            self._logits = self.cache.forward(self.tokens[n:])[-1].copy()
        return self._logits

    @property
    def pending(self) -> int:
        """Tokens on the timeline not yet through the model (a sampled token waits for the next request)."""
        return len(self.tokens) - self.cache.length

    def precompute(self, budget: int | None = None) -> bool:
        """Work for an idle moment (the server calls it after a reply, while it waits): run pending tokens
        through the model (at most `budget` of them: a window re-read after a new prefix goes in chunks), else
        prepare the next window slide. True when there was any."""
        if self.pending > 0:
            if budget is not None and self.pending > budget:
                n = self.cache.length
                self.cache.forward(self.tokens[n : n + budget])
            else:
                self._next_logits()
            return True
        return self.cache.prepare()

    def _drop_tentative(self) -> None:
        if self._tentative:
            self._rollback(len(self.tokens) - self._tentative)
            self._tentative = 0

    # -- public API ----------------------------------------------------------------------------------------
    def anticipate(self, time_s: float) -> int:
        """The player may play at `time_s` (seconds): put the time shift to that grid step at the end of the
        timeline now, tentatively, so that a player event there finds it through the model already (run it
        with precompute(), as the server does between requests). Nothing is added where the timeline already
        reaches that step, nor where the shift and the event's own tokens would not fit the window without a
        slide: a slide cannot be taken back, and a kept shift must have been computed over the same window as
        without anticipation. The next player event keeps the shift if it lands on that step; any other change
        takes it back first: the token stream is the same as without it. Returns the tentative tokens."""
        target, end = int(round(time_s / V.GRID_S)), self._end_step
        tokens = V.time_tokens(target - end) if target > end else []
        if tokens != self.tokens[len(self.tokens) - self._tentative:]:
            self._drop_tentative()
            if len(self.tokens) + len(tokens) + PLAYER_BODY_TOKENS <= self.cache.capacity:
                self._append(tokens, player=True, run=False)
                self._tentative = len(tokens)
        return self._tentative

    def commit(self, until_time: float) -> None:
        """Mark the speculative tokens at or before `until_time` (seconds) as sounded: no rollback past them."""
        self._drop_tentative()
        step = int(round(until_time / V.GRID_S))
        self._commit_to(bisect.bisect_right(self._steps, step, lo=self._commit))

    def insert(self, time_s: float, msg: mido.Message, engine: bool = False) -> Insertion:
        """A player event at its true time (seconds): roll back speculative tokens planned after it, append its
        tokens, and commit everything up to it. Events earlier than the committed time are placed at it.
        engine: `msg` is instead the end of one of the engine's own notes (a note-off on the channel it was
        generated on), cut short by whoever plays it: a harmony voice that ends with the player's note."""
        if self.config.player_instrument is None and not engine:
            raise EngineError("this session has no player_instrument; set one in SessionConfig")
        step = max(int(round(time_s / V.GRID_S)), self._committed.step)
        if step != self._live.step:  # an anticipated time shift is kept only by an event at its step
            self._drop_tentative()
        cut = bisect.bisect_right(self._steps, step, lo=self._commit)
        state = self._state_at(cut)
        step = max(step, state.step)
        if engine:
            tokens = encode_engine_off(state, step, msg)
        else:
            tokens = encode_player(state, step, msg, self.config.player_instrument)
        if not tokens:
            return Insertion(0, step * V.GRID_S)
        self._tentative = 0  # kept: this event's time shift
        dropped = self._rollback(cut, state)
        self._append(tokens, player=not engine)
        self._commit_to(len(self.tokens))
        return Insertion(dropped, step * V.GRID_S)

    def feed(self, event: Timed, engine: bool = False) -> Insertion:
        """insert() for a Timed(time, msg)."""
        return self.insert(event.time, event.msg, engine)

    def _set_constraints(self, config: SessionConfig) -> None:
        self._constraints = config.constraints()
        old = getattr(self, "follower", None)
        self.follower = Follower(config.follow, self._constraints.allowed_instruments())
        if old is not None:
            self.follower.inherit(old)
        self._static = additive(self._constraints.static_mask())
        self._static_now = additive(self._constraints.static_mask(now=True))
        self._now_possible = bool(np.isfinite(self._static_now).any())  # some note-on passes the constraints

    def step(self, score: bool = False, now: bool = False,
             keep: frozenset | set = frozenset()) -> tuple[int, float, list[Timed]]:
        """Sample and append one engine token: (token, its log-probability if `score` else 0.0, output events).
        now: only a note-on (or the note-off of a sounding engine note): nothing that moves time.
        keep: engine notes (class, pitch) that may not end at this step (those `now` just started)."""
        self._drop_tentative()
        held = self._live.decoder.held
        releasable = [key for key in held if key not in keep]
        mask = dynamic_mask(self._static_now if now else self._static, releasable, sum(held.values()),
                            self._constraints.max_polyphony, struck=held)
        bias = self.follower.bias(self._live, now)
        if bias is not None:
            mask = mask + bias
        logits = self._next_logits()
        token = self.sampler.sample(logits, mask)
        logprob = log_prob(logits, mask, token) if score else 0.0
        return token, logprob, self._append([token], player=False, run=False)

    def generate(self, n_tokens: int | None = None, n_notes: int | None = None, until_time: float | None = None,
                 best_of: int = 1, max_tokens: int = 4096, now: bool = False) -> list[Timed]:
        """Generate engine tokens until n_tokens, n_notes note-ons, or the timeline reaches until_time (seconds),
        whichever comes first (at most max_tokens). With best_of > 1, that many candidate continuations are
        sampled and the one with the highest mean log-probability is kept. now: notes that start at the current
        time (a chord or a harmony for the player's note): no time shift, velocity or pedal token is sampled, so
        each note takes one model step (plus note-offs the model chooses for its earlier notes). Returns the
        timed MIDI events."""
        return finish(self.generate_steps(n_tokens, n_notes, until_time, best_of, max_tokens, now))

    def generate_steps(self, n_tokens=None, n_notes=None, until_time=None, best_of=1, max_tokens=4096,
                       now=False) -> Generator[list[Timed], None, list[Timed]]:
        """generate() a model step per next() (the server slices long requests), yielding each token's events
        (none from best-of candidates); returns generate()'s result. Nothing else may use the session meanwhile."""
        if n_tokens is None and n_notes is None and (until_time is None or now):
            raise EngineError("generate() needs n_tokens, n_notes or until_time (not until_time with now)")
        self._drop_tentative()
        if best_of <= 1:
            return (yield from self._generate_steps(n_tokens, n_notes, until_time, max_tokens, now, False))[0]
        limit = min(max_tokens, n_tokens if n_tokens is not None else max_tokens)
        out: list[Timed] = []
        while limit > 0 and (n_notes is None or n_notes > 0):  # rounds: a candidate never slides the window
            self._ensure_room(min(limit, self._slide))  # a slide commits what precedes it: none inside a round
            cap = min(limit, self.cache.capacity - len(self.tokens))
            chosen = yield from self._best_candidate(best_of, (cap, n_notes, until_time, cap, now))
            for i in range(0, len(chosen), READ_CHUNK_TOKENS):  # the chosen one is read again, a chunk a step
                if i:
                    yield []
                out += self._append(chosen[i : i + READ_CHUNK_TOKENS], player=False)
            if len(chosen) < cap or chosen[-1] == V.EOS:
                break  # it ended on its own limits (notes, until, EOS), not the round's room
            limit -= cap
            n_notes = None if n_notes is None else n_notes - sum(V.token_kind(t)[0] == "note_on" for t in chosen)
        return out

    def _best_candidate(self, best_of: int, args: tuple) -> Generator[list[Timed], None, list[int]]:
        """Sample best_of continuations (_generate_steps args) that fit the window and take each back; returns
        the tokens of the one with the highest mean log-probability."""
        start = len(self.tokens)
        best: tuple[float, list[int]] | None = None
        for _ in range(best_of):
            _, score = yield from quiet(self._generate_steps(*args, score=True))
            if best is None or score > best[0]:
                best = (score, self.tokens[start:])
            self._rollback(start)
        return best[1]

    def _generate_steps(self, n_tokens, n_notes, until_time, max_tokens, now, score):
        """Yields each sampled token's events; returns (all events, mean log-probability if `score`)."""
        out: list[Timed] = []
        total, count, notes = 0.0, 0, 0
        limit = min(max_tokens, n_tokens if n_tokens is not None else max_tokens)
        end_step = None if until_time is None else int(round(until_time / V.GRID_S))
        started: set[tuple[int, int]] = set()  # with `now`: this call's notes, never ended in it (0-length)
        while count < limit:
            if end_step is not None and self._live.step >= end_step:
                break
            if now and not self._now_possible:  # no allowed note-on (pitch ranges x scale): nothing to add now
                break
            if n_notes is not None and notes >= n_notes:
                break
            try:
                token, logprob, events = self.step(score, now, started if now else frozenset())
            except MaskedOut:  # now: every allowed key sounds, or the polyphony cap with only this call's notes
                if not now:
                    raise
                break
            out += events
            total += logprob
            count += 1
            kind, arg = V.token_kind(token)
            if kind == "note_on":
                notes += 1
                started.add(divmod(arg, V.N_PITCHES))
            yield events
            if token == V.EOS:
                break
        return out, total / max(count, 1)

    def plan(self, until_time: float, best_of: int = 1) -> list[Timed]:
        """Generate the speculative future up to `until_time` (seconds); returns the new engine events."""
        return self.generate(until_time=until_time, best_of=best_of)

    def finish(self) -> list[Timed]:
        """Note-offs (and pedal releases) for every engine note still sounding at the end of the timeline."""
        return self._live.decoder.finish()

    def prime(self, events: list[Timed]) -> int:
        """Append a prompt (timed MIDI messages, seconds from the session start) as committed history the engine
        continues from, in any instruments; it counts as the engine's own part (its notes may be ended by the
        engine). Long prompts slide the window as they go. Returns the number of tokens added."""
        self._drop_tentative()
        encoder = EventEncoder()
        tokens: list[int] = []
        for time_s, msg in events:
            tokens += encoder.feed(time_s, msg)
        for i in range(0, len(tokens), self._slide):  # never more than one slide's worth at a time
            self._append(tokens[i : i + self._slide], player=False)
        self._commit_to(len(self.tokens))
        self.follower.prime(self._live)
        return len(tokens)

    def reconfigure(self, config: SessionConfig) -> None:
        """New sampling, constraints or conditioning from the next token on. Sampling and constraints are swapped
        in place; a new style or instrument set rewrites the conditioning prefix and the window is read once
        more behind it (at most block_size tokens, no change to the timeline): lazily, by the next step or by
        precompute() in chunks."""
        if config.context != self.config.context:
            raise EngineError("the context length is fixed when a session is created; create a new session")
        self._drop_tentative()
        old_len, new_prefix = self._prefix_len, config.prefix()
        rng, same_seed = self.sampler.rng, config.sampling.seed == self.config.sampling.seed
        self.config = config
        self.sampler = Sampler(config.sampling)
        if same_seed:
            self.sampler.rng = rng  # a new temperature does not restart the random sequence
        self._set_constraints(config)
        if new_prefix == self.tokens[:old_len]:
            return
        self._ensure_room(max(0, len(new_prefix) - old_len))
        body = slice(self._prefix_len, None)
        self.tokens = new_prefix + self.tokens[body]
        self._player = [False] * len(new_prefix) + self._player[body]
        self._steps = [self._steps[0]] * len(new_prefix) + self._steps[body]
        self._commit += len(new_prefix) - old_len
        self._prefix_len = len(new_prefix)
        self.cache.truncate(0)
        self._logits = None  # every token waits to be read again behind the new prefix
        self.cache.plan_slides(self._prefix_len, self._slide)  # slides now keep the new prefix


class Engine:
    """A loaded model that hands out sessions (each with its own KV cache, about 8 MB for the default model)."""

    def __init__(self, model: Model):
        self.model = model

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, threads: int = 1, provider: str = "auto",
             optimization: str = "all") -> Engine:
        """Load a model file (None: the bundled default model). Raises ModelError (one line) on a bad file."""
        return cls(Model.load(path, RuntimeOptions(threads=threads, provider=provider, optimization=optimization)))

    def new_session(self, config: SessionConfig | None = None) -> Session:
        return Session(self.model, config or SessionConfig())

