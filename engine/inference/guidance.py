"""Style guidance: a backend that plays its style more strongly than the model alone does.

The model reads its style from one token of the conditioning prefix, and once a few bars are in its window the
music itself says more than that token, so a piece started from scratch drifts to the style the model knows best.
Classifier-free guidance (Ho & Salimans 2022; used for music by MusicGen, Copet et al. 2023) sharpens it: each
session runs its tokens twice, once as given (conditional) and once with its STYLE token replaced by
STYLE_unknown (unconditional), and samples from

    logits = unconditional + scale * (conditional - unconditional)

scale 1 is the model as it is; above 1 moves away from what the model would play in no style, towards what the
asked style makes more likely. The unconditional stream needs a model trained with the style sometimes dropped
(`musebridge train --style-drop`); the model file's training config says whether it was (`style_dropped`).

Cost: two forward passes per token (the pair goes to the backend as one request list, which a batching backend
serves in one pass) and a second KV cache. The default everywhere is scale 1, which never builds the pair: on the
bundled model's stage 2 guidance did not make its styles recognised more often (docs/quality.md, "Style guidance").
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import EngineError
from ..tokens import vocab as V
from .backend import Backend, Cache, LogitsRequest
from .model_file import ModelInfo

UNKNOWN_STYLE = V.style_token("unknown")
MAX_SCALE = 8.0  # beyond this the difference of two streams swamps the model's own distribution


def style_dropped(info: ModelInfo) -> float:
    """The share of training pieces whose style was dropped (0.0: the model never saw STYLE_unknown)."""
    augment = (info.train.get("config") or {}).get("augment") or {}
    return float(augment.get("style_drop") or 0.0)


class GuidedCache:
    """A pair of caches that move together: `conditional` holds the session's tokens, `unconditional` the same
    tokens with every STYLE token of the prefix replaced by STYLE_unknown. Implements the Cache protocol."""

    def __init__(self, conditional: Cache, unconditional: Cache):
        self.conditional, self.unconditional = conditional, unconditional

    @property
    def capacity(self) -> int:
        return self.conditional.capacity

    @property
    def length(self) -> int:
        return self.conditional.length

    def truncate(self, n: int) -> None:
        self.conditional.truncate(n)
        self.unconditional.truncate(n)

    def slide(self, keep: int, drop: int) -> None:
        self.conditional.slide(keep, drop)
        self.unconditional.slide(keep, drop)

    def plan_slides(self, keep: int, drop: int) -> None:
        self.conditional.plan_slides(keep, drop)
        self.unconditional.plan_slides(keep, drop)

    def prepare(self) -> bool:
        a = self.conditional.prepare()
        return self.unconditional.prepare() or a


def without_style(tokens: Sequence[int], start: int) -> list[int]:
    """`tokens` placed at cache positions start.. with a STYLE token at position 1 (the prefix's, after BOS)
    replaced by STYLE_unknown. Events never sit at position 1, so the rest is left as it is."""
    out = list(tokens)
    i = 1 - start
    if 0 <= i < len(out) and V.token_kind(out[i])[0] == "style":
        out[i] = UNKNOWN_STYLE
    return out


class StyleGuidance:
    """A Backend over another one whose caches are GuidedCache pairs and whose logits are guided by `scale`
    (see the module docstring). Requests for plain caches pass through unchanged."""

    def __init__(self, backend: Backend, scale: float):
        if not 1.0 <= scale <= MAX_SCALE:
            raise EngineError(f"style guidance must be between 1 and {MAX_SCALE:g}, got {scale:g}")
        self.backend, self.scale = backend, float(scale)

    def new_cache(self, capacity: int | None = None) -> GuidedCache:
        return GuidedCache(self.backend.new_cache(capacity), self.backend.new_cache(capacity))

    def logits(self, requests: Sequence[LogitsRequest]) -> list[np.ndarray]:
        """One row per request: a guided row for a GuidedCache, the backend's own row otherwise."""
        inner: list[LogitsRequest] = []
        for cache, tokens in requests:
            if isinstance(cache, GuidedCache):
                inner.append(LogitsRequest(cache.conditional, tokens))
                inner.append(LogitsRequest(cache.unconditional, without_style(tokens, cache.unconditional.length)))
            else:
                inner.append(LogitsRequest(cache, tokens))
        rows = self.backend.logits(inner)
        out, k = [], 0
        for cache, _ in requests:
            if isinstance(cache, GuidedCache):
                conditional, unconditional = rows[k], rows[k + 1]
                out.append(unconditional + self.scale * (conditional - unconditional))
                k += 2
            else:
                out.append(rows[k])
                k += 1
        return out
