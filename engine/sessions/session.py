"""Sessions: a timeline of tokens over one KV cache, with a committed past and a speculative future.

    engine = Engine.load()                                   # bundled model, or Engine.load("model.onnx")
    s = engine.new_session(SessionConfig(style="bach", instruments=(0, 5), player_instrument=0))
    planned = s.plan(until_time=2.0)                         # engine notes (Timed, seconds) up to t = 2 s
    s.insert(0.73, mido.Message("note_on", note=60, velocity=90))  # the player, at its true time
    s.commit(until_time=0.9)                                 # what has sounded can no longer be rolled back

`Session` is the facade the server and the tools use; it composes three pieces of one responsibility each:
- `timeline` (engine/sessions/timeline.py `Timeline`): the tokens with their player flags and grid steps, the
committed
  and live stream states, the tentative time shift and the prefix; it mirrors the KV cache (commit, rollback,
  window slide). A player event at time t cuts the speculative tokens planned after t (a cache truncation,
  nothing recomputed), its own tokens are appended at t, and everything up to it is committed.
- `generator` (engine/sessions/generator.py `Generator`): constraints, following the player, sampling, best-of.
- the inference backend (engine/inference/backend.py `Backend`; engine/inference/runtime.py `Model` on the CPU):
the timeline's cache
  and the logits for its requests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator
from dataclasses import dataclass, replace

import mido
import numpy as np

from ..errors import EngineError
from ..inference.backend import Backend, Cache
from ..inference.guidance import StyleGuidance, style_dropped
from ..inference.runtime import Model, RuntimeOptions
from ..inference.sampler import Sampler
from ..tokens import vocab as V
from ..tokens.codec import EventEncoder, Timed
from .follow import Follower
from .generator import Generator as TokenGenerator
from .generator import Limits
from .lifetimes import measured_lifetimes
from .session_config import SessionConfig
from .steps import finish
from .timeline import State, Timeline, encode_engine_off, encode_player

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Insertion:
    """Result of inserting a player event: `rolled_back` speculative tokens were dropped; engine events planned
    after `time` (seconds) must be cancelled by whoever scheduled them."""

    rolled_back: int
    time: float


class Session:
    """A live timeline over one KV cache. Not thread-safe: one caller (the server's session loop) at a time.
    backend: the model (engine/inference/runtime.py `Model`, or any engine/inference/backend.py `Backend`)."""

    def __init__(self, backend: Backend, config: SessionConfig, lifetimes: tuple[tuple[str, float], ...] = ()):
        """lifetimes: the model's measured longest notes (class name, seconds), for configs that set none."""
        self._lifetimes = lifetimes
        config = self._fitted(config)
        self.config = config
        if config.style_guidance != 1.0:
            backend = StyleGuidance(backend, config.style_guidance)
        self.timeline = Timeline(backend, config.prefix(), config.context, config.slide_tokens)
        self.generator = TokenGenerator(self.timeline, config)

    # -- state ---------------------------------------------------------------------------------------------
    @property
    def tokens(self) -> list[int]:
        """The token ids the cache mirrors: the conditioning prefix, then the window (do not modify)."""
        return self.timeline.tokens

    @property
    def cache(self) -> Cache:
        return self.timeline.cache

    @property
    def sampler(self) -> Sampler:
        return self.generator.sampler

    @property
    def follower(self) -> Follower:
        return self.generator.follower

    @property
    def dropped(self) -> int:
        """Tokens dropped by window slides so far."""
        return self.timeline.dropped

    @property
    def time(self) -> float:
        """End of the planned timeline, seconds (an anticipated time shift is not part of it yet)."""
        return self.timeline.end_step * V.GRID_S

    @property
    def committed_time(self) -> float:
        """End of the committed (sounded) part of the timeline, seconds."""
        return self.timeline.committed.step * V.GRID_S

    @property
    def speculative(self) -> int:
        """Number of speculative (not yet committed) tokens."""
        return len(self.timeline.tokens) - self.timeline.commit_index

    @property
    def pending(self) -> int:
        """Tokens on the timeline not yet through the model (a sampled token waits for the next request)."""
        return self.timeline.pending

    @property
    def _live(self) -> State:
        """The stream state after every token (read-only; tests and tools inspect the engine's notes)."""
        return self.timeline.live

    def _next_logits(self) -> np.ndarray:
        """Logits (vocab,) for the token after the timeline (runs what is pending)."""
        return self.timeline.next_logits()

    def precompute(self, budget: int | None = None) -> bool:
        """Work for an idle moment (the server calls it after a reply, while it waits): run pending tokens
        through the model (at most `budget` of them: a window re-read after a new prefix goes in chunks), else
        prepare the next window slide. True when there was any."""
        return self.timeline.precompute(budget)

    # -- the player ----------------------------------------------------------------------------------------
    def anticipate(self, time_s: float) -> int:
        """The player may play at `time_s` (seconds): put the time shift to that grid step at the end of the
        timeline now, tentatively, so that a player event there finds it through the model already (run it
        with precompute(), as the server does between requests). Nothing is added where the timeline already
        reaches that step, nor where the shift and the event's own tokens would not fit the window without a
        slide: a slide cannot be taken back, and a kept shift must have been computed over the same window as
        without anticipation. The next player event keeps the shift if it lands on that step; any other change
        takes it back first: the token stream is the same as without it. Returns the tentative tokens."""
        return self.timeline.anticipate(V.grid_step(time_s))

    def commit(self, until_time: float) -> None:
        """Mark the speculative tokens at or before `until_time` (seconds) as sounded: no rollback past them."""
        self.timeline.commit_until(V.grid_step(until_time))

    def insert(self, time_s: float, msg: mido.Message, engine: bool = False) -> Insertion:
        """A player event at its true time (seconds): roll back speculative tokens planned after it, append its
        tokens, and commit everything up to it. Events earlier than the committed time are placed at it.
        engine: `msg` is instead the end of one of the engine's own notes (a note-off on the channel it was
        generated on), cut short by whoever plays it: a harmony voice that ends with the player's note."""
        if self.config.player_instrument is None and not engine:
            raise EngineError("this session has no player_instrument; set one in SessionConfig")
        timeline = self.timeline
        step = max(V.grid_step(time_s), timeline.committed.step)
        if step != timeline.live.step:  # an anticipated time shift is kept only by an event at its step
            timeline.drop_tentative()
        cut = timeline.cut(step)
        state = timeline.state_at(cut)
        step = max(step, state.step)
        if engine:
            tokens = encode_engine_off(state, step, msg)
        else:
            tokens = encode_player(state, step, msg, self.config.player_instrument)
        if not tokens:
            return Insertion(0, step * V.GRID_S)
        return Insertion(timeline.splice(cut, state, tokens, player=not engine), step * V.GRID_S)

    def feed(self, event: Timed, engine: bool = False) -> Insertion:
        """insert() for a Timed(time, msg)."""
        return self.insert(event.time, event.msg, engine)

    # -- the engine ----------------------------------------------------------------------------------------
    def step(self, score: bool = False, now: bool = False,
             keep: frozenset | set = frozenset()) -> tuple[int, float, list[Timed]]:
        """Sample and append one engine token: (token, its log-probability if `score` else 0.0, output events).
        now: only a note-on (or the note-off of a sounding engine note): nothing that moves time.
        keep: engine notes (class, pitch) that may not end at this step (those `now` just started)."""
        return self.generator.step(score, now, keep)

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
        self.timeline.drop_tentative()
        limits = Limits.of(n_tokens, n_notes, until_time, max_tokens, now)
        return (yield from self.generator.generate_steps(limits, best_of))

    def plan(self, until_time: float, best_of: int = 1) -> list[Timed]:
        """Generate the speculative future up to `until_time` (seconds); returns the new engine events."""
        return self.generate(until_time=until_time, best_of=best_of)

    def finish(self) -> list[Timed]:
        """Note-offs (and pedal releases) for every engine note still sounding at the end of the timeline."""
        return self.timeline.live.decoder.finish()

    # -- history and settings ------------------------------------------------------------------------------
    def prime(self, events: list[Timed]) -> int:
        """Append a prompt (timed MIDI messages, seconds from the session start) as committed history the engine
        continues from, in any instruments; it counts as the engine's own part (its notes may be ended by the
        engine). Long prompts slide the window as they go. Returns the number of tokens added."""
        timeline = self.timeline
        timeline.drop_tentative()
        encoder = EventEncoder()
        tokens: list[int] = []
        for time_s, msg in events:
            tokens += encoder.feed(time_s, msg)
        timeline.append(tokens, player=False)  # a slide's worth at a time, each run through the model
        timeline.commit_to(len(timeline.tokens))
        self.generator.follower.prime(timeline.live)
        return len(tokens)

    def reconfigure(self, config: SessionConfig) -> None:
        """New sampling, constraints or conditioning from the next token on. Sampling and constraints are swapped
        in place; a new style or instrument set rewrites the conditioning prefix and the window is read once
        more behind it (at most block_size tokens, no change to the timeline): lazily, by the next step or by
        precompute() in chunks."""
        if config.context != self.config.context:
            raise EngineError("the context length is fixed when a session is created; create a new session")
        if config.style_guidance != self.config.style_guidance:
            raise EngineError("style guidance is fixed when a session is created; create a new session")
        self.timeline.drop_tentative()
        old, self.config = self.config, self._fitted(config)
        config = self.config
        self.generator.reconfigure(old, config)
        self.timeline.set_prefix(config.prefix())


    def _fitted(self, config: SessionConfig) -> SessionConfig:
        """config with the model's note lifetimes where its following sets none."""
        if config.follow.lifetimes or not self._lifetimes:
            return config
        return replace(config, follow=replace(config.follow, lifetimes=self._lifetimes))


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
        """A new session on this model (its own cache; the default config: no player, style unknown). Style
        guidance is refused on a model trained without the style ever dropped: it has no unconditional stream."""
        if config is not None and config.style_guidance != 1.0 and not style_dropped(self.model.info):
            raise EngineError(f"{self.model.info.path}: style guidance needs a model trained with --style-drop "
                              "(musebridge train); use style guidance 1 with this one")
        return Session(self.model, config or SessionConfig(), measured_lifetimes(self.model.info.data))

