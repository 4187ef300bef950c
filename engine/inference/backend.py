"""The inference backend: what a session asks of the model, and nothing else.

A session never runs the model itself. Its timeline (engine/sessions/timeline.py) owns one cache from the backend
(`new_cache`) and, when it needs the next token's logits, hands the backend a request: that cache and the tokens
on the timeline the cache has not seen yet. The backend runs them, appends their keys and values to the cache,
and answers with the logits of the request's last token. Everything else a cache does (truncate for a rollback,
slide the window, prepare the next slide) the timeline asks of the cache directly: it is bookkeeping of one
sequence, not a forward pass.

    backend = Model.load(path)                       # engine/inference/runtime.py: onnxruntime on the CPU
    cache = backend.new_cache(1024)                  # 1024 tokens of context
    row, = backend.logits([LogitsRequest(cache, prefix_tokens)])   # (vocab,) float32

Only numpy here; the runtime that implements it imports onnxruntime.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Cache(Protocol):
    """One sequence's keys and values, kept between requests. `length` tokens are cached (positions
    0..length-1) out of `capacity`. engine/inference/runtime.py `KVCache` is the CPU one."""

    capacity: int
    length: int

    def truncate(self, n: int) -> None:
        """Forget every token from position n on (a rollback; nothing is recomputed)."""

    def slide(self, keep: int, drop: int) -> None:
        """Drop entries keep..keep+drop-1 (keep: the conditioning prefix); the later ones move down."""

    def plan_slides(self, keep: int, drop: int) -> None:
        """Every future slide is slide(keep, drop): it may be prepared ahead, a little at a time."""

    def prepare(self) -> bool:
        """Idle-time work toward the next planned slide; True when there was any."""


class LogitsRequest(NamedTuple):
    """Run `tokens` (ids, at least one) at the end of `cache`; the answer is the logits after the last one."""

    cache: Cache
    tokens: Sequence[int]


@runtime_checkable
class Backend(Protocol):
    """Answers "logits for these sessions": each request is one session's cache and the tokens to run on it.

    `logits(requests)` returns one row per request, in order: the (vocab,) float32 logits after the request's
    last token, owned by the caller (valid after later requests). Running a request appends its tokens to its
    cache (`cache.length` grows by len(tokens)); requests for different caches are independent, so the answer
    for a session is the same whether it is asked alone or with others.

    The CPU backend (engine/inference/runtime.py `Model`, onnxruntime with a batch-1 graph) serves the requests one
    after the other: one forward pass per request, each cache bound once as both the past and the present of
    GroupQueryAttention so keys and values are written in place.

    A GPU backend would serve them together, one forward pass for many sessions. It needs:
    - a graph exported with a batch dimension: input_ids (B, T), seqlens_k (B,) and past/present keys and values
      (B, H, W, D); GroupQueryAttention already takes a length per row, so rows of different lengths share a pass
      (one-token steps, the common case, pad nothing; a multi-token request runs in a pass of its own or pads);
    - a cache pool: one (n_layer, B_max, H, W, D) key and value buffer on the device, a cache being a row index
      into it (`new_cache` hands out a free row and a finalizer returns it; `truncate` sets the row's length;
      `slide` moves that row's entries, rotating the keys as the CPU cache does);
    - `logits(requests)`: gather the requests' rows (or bind the pool with a row map), write input_ids and the
      lengths, run once, copy the last position's logits of each row back to the host, bump each cache's length.
    A server would collect the requests of every session whose timeline needs logits (`Timeline.request()`) and
    ask once per tick; sessions stay unaware of the batching, since each still gets its own row.
    """

    def new_cache(self, capacity: int | None = None) -> Cache:
        """An empty cache of `capacity` tokens (None: the model's block size)."""

    def logits(self, requests: Sequence[LogitsRequest]) -> list[np.ndarray]:
        """One (vocab,) float32 logits row per request, in order (see the class docstring)."""
