"""A session's conditioning, constraints and sampling, fixed in one frozen dataclass (engine/sessions/session.py
uses it; the server builds it from protocol parameters in engine/server/service.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inference.sampler import Constraints, SamplingConfig
from ..tokens import vocab as V
from .follow_config import FollowConfig


@dataclass(frozen=True)
class SessionConfig:
    """One session's conditioning, constraints and sampling.

    style: style name (vocab.STYLES). instruments: classes of the piece (conditioning SET tokens); the engine
    plays those other than player_instrument. scale/pitch_ranges/max_polyphony: see sampler.Constraints.
    slide_tokens: tokens dropped per window slide (default: a quarter of the cache). context: tokens the model
    sees (the window; default: the model's block size): shorter answers faster and remembers less. Fixed for the
    session's life. follow: how the engine follows the player (engine/sessions/follow.py). style_guidance: how
    strongly the style is played (engine/inference/guidance.py): 1 is the model as it is; above 1 runs the model
    twice per token (twice the time) and needs a model trained with `--style-drop`. Fixed for the session's life.
    """

    style: str = "unknown"
    instruments: tuple[int, ...] = (0,)
    player_instrument: int | None = None
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    scale: tuple[int, ...] | None = None
    pitch_ranges: tuple[tuple[int, int, int], ...] = ()
    max_polyphony: int | None = None
    allow_eos: bool = False
    slide_tokens: int | None = None
    context: int | None = None
    follow: FollowConfig = field(default_factory=FollowConfig)
    style_guidance: float = 1.0

    def constraints(self) -> Constraints:
        return Constraints(instruments=self.instruments, player_instrument=self.player_instrument,
                           pitch_ranges=self.pitch_ranges, scale=self.scale,
                           max_polyphony=self.max_polyphony, allow_eos=self.allow_eos)

    def prefix(self) -> list[int]:
        """The conditioning tokens BOS STYLE SET... (the player's class is part of the instrument set)."""
        extra = () if self.player_instrument is None else (self.player_instrument,)
        return V.conditioning(self.style, tuple(self.instruments) + extra)
