"""The generator: what the engine plays next on a timeline.

Each step builds the next token's mask (the constraints, engine/inference/sampler.py: a guarantee), adds the
follower's bias (engine/sessions/follow.py: following the player), asks the timeline for the logits (which asks the
inference backend), samples one token and appends it to the timeline (its own forward pass waits for the next
step). `generate_steps` repeats that until the request's limits (`Limits`), one model step per next(); with best_of
> 1 it samples that many candidate continuations, takes each back (a truncation) and keeps the one with the highest
mean log-probability.
"""

from __future__ import annotations

from collections.abc import Generator as Steps
from dataclasses import dataclass, replace

import numpy as np

from ..inference.sampler import MaskedOut, Sampler, additive, dynamic_mask, log_prob
from ..tokens import vocab as V
from ..tokens.codec import Timed
from .follow import Follower
from .session_config import SessionConfig
from .steps import quiet
from .timeline import Timeline

READ_CHUNK_TOKENS = 32  # generate_steps reads the chosen best-of candidate this many tokens a step


@dataclass(frozen=True)
class Limits:
    """When a generation stops, whichever comes first.

    tokens: most tokens generated. notes: most note-ons (None: no limit). until_step: the grid step the timeline
    must reach (None: no limit). now: only notes at the current time (note-ons and note-offs of engine notes,
    nothing that moves time)."""

    tokens: int
    notes: int | None = None
    until_step: int | None = None
    now: bool = False

    @classmethod
    def of(cls, n_tokens: int | None, n_notes: int | None, until_time: float | None, max_tokens: int,
           now: bool) -> Limits:
        """From a generate() request: until_time in seconds; at most max_tokens whatever n_tokens says."""
        tokens = min(max_tokens, n_tokens if n_tokens is not None else max_tokens)
        return cls(tokens, n_notes, None if until_time is None else V.grid_step(until_time), now)


class Generator:
    """Samples one session's engine tokens onto its timeline: constraints, following, sampling, best-of.
    Not thread-safe: its session's one caller at a time."""

    def __init__(self, timeline: Timeline, config: SessionConfig):
        self.timeline = timeline
        self.sampler = Sampler(config.sampling)
        self.follower: Follower | None = None
        self.set_constraints(config)

    def set_constraints(self, config: SessionConfig) -> None:
        """The config's constraints (masks computed once here) and following rules; what the old follower heard
        (a primed prompt, the key) is kept."""
        self._constraints = config.constraints()
        old = self.follower
        self.follower = Follower(config.follow, self._constraints.allowed_instruments())
        if old is not None:
            self.follower.inherit(old)
        self._static = additive(self._constraints.static_mask())
        self._static_now = additive(self._constraints.static_mask(now=True))
        self._now_possible = bool(np.isfinite(self._static_now).any())  # some note-on passes the constraints

    def reconfigure(self, old: SessionConfig, config: SessionConfig) -> None:
        """New sampling and constraints from the next token on; the same seed keeps the random sequence going
        (a new temperature does not restart it)."""
        rng = self.sampler.rng
        self.sampler = Sampler(config.sampling)
        if config.sampling.seed == old.sampling.seed:
            self.sampler.rng = rng
        self.set_constraints(config)

    def step(self, score: bool = False, now: bool = False,
             keep: frozenset | set = frozenset()) -> tuple[int, float, list[Timed]]:
        """Sample and append one engine token: (token, its log-probability if `score` else 0.0, output events).
        now: only a note-on (or the note-off of a sounding engine note). keep: engine notes (class, pitch) that
        may not end at this step."""
        timeline = self.timeline
        timeline.drop_tentative()
        live = timeline.live
        held = live.decoder.held
        releasable = [key for key in held if key not in keep]
        mask = dynamic_mask(self._static_now if now else self._static, releasable, sum(held.values()),
                            self._constraints.max_polyphony, struck=held)
        bias = self.follower.bias(live, now)
        if bias is not None:
            mask = mask + bias
        logits = timeline.next_logits()
        token = self.sampler.sample(logits, mask)
        logprob = log_prob(logits, mask, token) if score else 0.0
        return token, logprob, timeline.append([token], player=False, run=False)

    def generate_steps(self, limits: Limits, best_of: int = 1) -> Steps[list[Timed], None, list[Timed]]:
        """Generate until `limits`, a model step per next(), yielding each token's events (none from best-of
        candidates); returns all the events. With best_of > 1 the request is chosen in rounds that never slide
        the window inside a round (a slide commits what precedes it and could not be taken back)."""
        if best_of <= 1:
            return (yield from self._sample(limits, score=False))[0]
        timeline, out = self.timeline, []
        while limits.tokens > 0 and (limits.notes is None or limits.notes > 0):
            timeline.ensure_room(min(limits.tokens, timeline.slide))
            cap = min(limits.tokens, timeline.room())
            chosen = yield from self._best_candidate(best_of, replace(limits, tokens=cap))
            for i in range(0, len(chosen), READ_CHUNK_TOKENS):  # the chosen one is read again, a chunk a step
                if i:
                    yield []
                out += timeline.append(chosen[i : i + READ_CHUNK_TOKENS], player=False)
            if len(chosen) < cap or chosen[-1] == V.EOS:
                break  # it ended on its own limits (notes, until, EOS), not the round's room
            notes = limits.notes
            if notes is not None:
                notes -= sum(V.token_kind(t)[0] == "note_on" for t in chosen)
            limits = replace(limits, tokens=limits.tokens - cap, notes=notes)
        return out

    def _best_candidate(self, best_of: int, limits: Limits) -> Steps[list[Timed], None, list[int]]:
        """Sample best_of continuations within `limits` and take each back; returns the tokens of the one with
        the highest mean log-probability."""
        timeline = self.timeline
        start = len(timeline.tokens)
        best: tuple[float, list[int]] | None = None
        for _ in range(best_of):
            _, score = yield from quiet(self._sample(limits, score=True))
            if best is None or score > best[0]:
                best = (score, timeline.tokens[start:])
            timeline.rollback(start)
        return best[1]

    def _sample(self, limits: Limits, score: bool) -> Steps[list[Timed], None, tuple[list[Timed], float]]:
        """The step loop: yields each sampled token's events; returns (all events, mean log-probability if
        `score`)."""
        out: list[Timed] = []
        total, count, notes = 0.0, 0, 0
        now, end_step, timeline = limits.now, limits.until_step, self.timeline
        started: set[tuple[int, int]] = set()  # with `now`: this call's notes, never ended in it (0-length)
        while count < limits.tokens:
            if end_step is not None and timeline.live.step >= end_step:
                break
            if now and not self._now_possible:  # no allowed note-on (pitch ranges x scale): nothing to add now
                break
            if limits.notes is not None and notes >= limits.notes:
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
