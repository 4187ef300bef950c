"""The model runtime: an onnxruntime session and KV caches that live across calls.

A `KVCache` owns preallocated key/value buffers of `capacity` (= block_size) tokens per layer, shaped
(1, H, capacity, D). They are bound once to the session's IO binding as both the `past_*` inputs and the
`present_*` outputs, so GroupQueryAttention writes each new token's keys/values in place: a decoding step copies
nothing but one token's logits. Rollback is `truncate(n)` (the next step simply overwrites from n); an unbounded
session uses `slide(keep, drop)`: entries keep..keep+drop-1 are dropped, the later ones move down and their keys
are rotated back by `drop` positions (RoPE composes), so no projection is ever recomputed.

Only numpy and onnxruntime are used here, never torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import EngineBug, EngineError, ModelError
from . import graph as G
from .backend import LogitsRequest
from .graph import rope_frequencies
from .model_file import ModelInfo, choose_providers, open_session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimeOptions:
    """How the engine runs the model.

    threads: onnxruntime intra-op threads (1 or 2 on a small CPU; see docs/benchmarks.md).
    provider: "auto" (CUDA when onnxruntime-gpu and a GPU are present, else CPU), "cpu" or "cuda".
    optimization: onnxruntime graph optimization level ("disable", "basic", "extended", "all").
    profile: write an onnxruntime profile (JSON, in the current folder) until end_profiling().
    spinning: idle intra-op threads spin-wait for work (only matters with threads > 1).
    """

    threads: int = 1
    provider: str = "auto"
    optimization: str = "all"
    profile: bool = False
    spinning: bool = True


class Model:
    """A loaded model: the onnxruntime session and its metadata. Create caches with `new_cache()`. It is the
    engine's inference backend (engine/inference/backend.py `Backend`): `logits()` runs sessions' requests."""

    def __init__(self, session, info: ModelInfo, options: RuntimeOptions):
        self.session = session
        self.info = info
        self.options = options

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, options: RuntimeOptions | None = None) -> Model:
        """Open a model file (None: the bundled default). Raises ModelError with a one-line message."""
        options = options or RuntimeOptions()
        if options.threads < 1:
            raise ModelError(f"threads must be >= 1, got {options.threads}")
        session, info = open_session(path, choose_providers(options.provider), options.threads,
                                     options.optimization, options.profile, options.spinning)
        return cls(session, info, options)

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def new_cache(self, capacity: int | None = None) -> KVCache:
        """A cache of `capacity` tokens (default: the model's block size; smaller is a shorter context)."""
        return KVCache(self, capacity)

    def logits(self, requests: Sequence[LogitsRequest]) -> list[np.ndarray]:
        """The inference backend (engine/inference/backend.py): one (vocab,) float32 logits row per request, the
        logits after its last token, a copy the caller owns. The graph has batch 1: one forward pass per
        request."""
        return [request.cache.forward(request.tokens)[-1].copy() for request in requests]

    def end_profiling(self) -> str:
        """Stop profiling; returns the profile file name ('' when profiling is off)."""
        return self.session.end_profiling() if self.options.profile else ""


class _Buffers:
    """One set of key and value buffers for every layer, (n_layer, 1, H, capacity, D) each, so a slide moves all
    layers in one numpy call; and an IO binding with each layer's slice bound as both its past_* input and its
    present_* output (onnxruntime writes the new token's keys and values in place)."""

    def __init__(self, model: Model, capacity: int):
        import onnxruntime as ort

        info = model.info
        shape = (info.n_layer, 1, info.n_head, capacity, info.head_size)
        self.keys, self.values = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        self.binding = model.session.io_binding()
        self._ort = []  # the OrtValues (views of the arrays above) must live as long as the binding
        for i in range(info.n_layer):
            k, v = ort.OrtValue.ortvalue_from_numpy(self.keys[i]), ort.OrtValue.ortvalue_from_numpy(self.values[i])
            self._ort += [k, v]
            self.binding.bind_ortvalue_input(G.past("key", i), k)
            self.binding.bind_ortvalue_output(G.present("key", i), k)
            self.binding.bind_ortvalue_input(G.past("value", i), v)
            self.binding.bind_ortvalue_output(G.present("value", i), v)


def _rotate(dst: np.ndarray, src: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """dst = src (..., D) rotated by the angles whose cos/sin (D/2,) are given (RoPE on halves)."""
    h = cos.shape[0]
    x1, x2 = src[..., :h], src[..., h:]
    r1, r2 = x1 * cos - x2 * sin, x1 * sin + x2 * cos  # temporaries: src and dst may overlap
    dst[..., :h], dst[..., h:] = r1, r2


class KVCache:
    """One sequence's keys and values, kept between calls. `length` tokens are cached (positions 0..length-1).

    With `plan_slides(keep, drop)` the next slide is prepared in the background: after each step at most
    `chunk` entries that the slide will keep are copied, rotated, into a second set of buffers, and in the last
    `chunk` positions before the slide every step copies its own, so `slide` only swaps the sets (no latency
    spike; twice the cache memory). An owner with idle moments (the server, between requests) calls `prepare()`
    there instead: it copies what is waiting, and from then until the slide the steps leave their own entries
    to it, so a step on a live request copies nothing (at most a chunk, every `chunk` steps)."""

    def __init__(self, model: Model, capacity: int | None = None):
        self.model = model
        info = model.info
        self.capacity = info.block_size if capacity is None else capacity
        if not 1 <= self.capacity <= info.block_size:
            raise EngineError(f"a cache holds 1-{info.block_size} tokens with this model, not {capacity}")
        self.length = 0
        self._shadow: _Buffers | None = None
        self._plan: tuple[int, int] | None = None
        self._chunk = 32
        self._copied = 0  # entries keep+drop .. keep+drop+copied-1 are in the shadow, rotated
        self._idle = False  # prepare() was called since the last slide: steps leave their own entries to it
        self._seqlens = np.zeros(1, np.int32)  # P + T - 1
        self._total = np.zeros((), np.int32)  # P + T
        self._ids1 = np.zeros((1, 1), np.int64)  # one-token steps reuse these buffers: no allocation per step
        self._logits1 = np.zeros((1, 1, info.vocab_size), np.float32)
        self._bound_t = 0
        d = info.head_size
        self._inv_freq = rope_frequencies(d, info.rope_base)
        self._use(_Buffers(model, self.capacity))

    def _use(self, buffers: _Buffers) -> None:
        """Run on this buffer set from now on: its binding already holds the cache; the lengths are bound here, the
        token ids and logits on the next step."""
        self._buffers, self.keys, self.values = buffers, buffers.keys, buffers.values
        self._binding = buffers.binding
        self._binding.bind_cpu_input(G.SEQLENS, self._seqlens)
        self._binding.bind_cpu_input(G.TOTAL_LENGTH, self._total)
        self._bound_t = 0  # the next step binds its token ids and logits

    def _angles(self, drop: int) -> tuple[np.ndarray, np.ndarray]:
        angle = -drop * self._inv_freq
        return np.cos(angle).astype(np.float32), np.sin(angle).astype(np.float32)

    def _bind_tokens(self, tokens: Sequence[int]) -> np.ndarray:
        t = len(tokens)
        if t == 1:
            self._ids1[0, 0] = tokens[0]
            if self._bound_t != 1:
                self._binding.bind_cpu_input(G.INPUT_IDS, self._ids1)
                self._bind_logits(self._logits1)
            self._bound_t = 1
            return self._logits1
        ids = np.asarray(tokens, dtype=np.int64).reshape(1, t)
        logits = np.empty((1, t, self.model.info.vocab_size), np.float32)
        self._binding.bind_cpu_input(G.INPUT_IDS, ids)
        self._bind_logits(logits)
        self._bound_t = t
        self._ids_keepalive = ids  # the binding points at this memory until the next call
        return logits

    def _bind_logits(self, logits: np.ndarray) -> None:
        self._binding.bind_output(G.LOGITS, "cpu", 0, np.float32, logits.shape, logits.ctypes.data)
        self._logits_keepalive = logits

    def forward(self, tokens: Sequence[int]) -> np.ndarray:
        """Append tokens (ids) at positions length..length+T-1; returns their logits, (T, vocab) float32.

        The one-token result is a view of a reused buffer: valid until the next forward()."""
        t = len(tokens)
        if t == 0:
            raise EngineBug("forward() needs at least one token")
        if self.length + t > self.capacity:
            raise EngineBug(f"cache overflow: {self.length} + {t} tokens > capacity {self.capacity}")
        logits = self._bind_tokens(tokens)
        self._seqlens[0] = self.length + t - 1
        self._total[...] = self.length + t
        self.model.session.run_with_iobinding(self._binding)
        self.length += t
        if self._plan is not None:  # near the end, each step copies its own entries, unless prepare() does
            near = self.length >= self.capacity - self._chunk
            self._prepare(None if near and not self._idle else self._chunk)
        return logits[0]

    def prepare(self) -> bool:
        """Copy every entry the next planned slide keeps that is not copied yet (work for an idle moment, off
        the next step's path). True when there was any."""
        if self._plan is None:
            return False
        self._idle = True
        return self._prepare(None)

    def truncate(self, n: int) -> None:
        """Forget every token from position n on (rollback). O(1): nothing is copied or recomputed."""
        if not 0 <= n <= self.length:
            raise EngineBug(f"cannot truncate a cache of {self.length} tokens to {n}")
        self.length = n
        if self._plan is not None:
            self._copied = max(0, min(self._copied, n - sum(self._plan)))

    def plan_slides(self, keep: int, drop: int, chunk: int = 32) -> None:
        """Prepare every future slide(keep, drop) in the background, `chunk` entries per step at most."""
        if not (0 <= keep and 0 < drop and keep + drop < self.capacity and chunk > 0):
            raise EngineError(f"cannot plan slides dropping {drop} tokens after {keep} in {self.capacity}")
        self._plan, self._chunk, self._copied = (keep, drop), chunk, 0
        self._plan_angles = self._angles(drop)
        if self._shadow is None:
            self._shadow = _Buffers(self.model, self.capacity)

    def _prepare(self, budget: int | None) -> bool:
        """Copy `budget` more kept entries (None: all), rotated back by `drop`, into the shadow set, when that
        many are waiting. True when anything was copied."""
        keep, drop = self._plan
        start = keep + drop + self._copied
        n = self.length - start
        if n <= 0 or (budget is not None and n < budget):
            return False
        n = n if budget is None else budget
        cos, sin = self._plan_angles
        dst = start - drop
        shadow = self._shadow  # every layer at once: (n_layer, 1, H, n, D)
        _rotate(shadow.keys[:, :, :, dst : dst + n], self.keys[:, :, :, start : start + n], cos, sin)
        shadow.values[:, :, :, dst : dst + n] = self.values[:, :, :, start : start + n]
        self._copied += n
        return True

    def slide(self, keep: int, drop: int) -> None:
        """Drop entries keep..keep+drop-1 (keeping the first `keep`, the conditioning prefix); the later entries
        move down by `drop` and their keys are rotated back by `drop` positions; no projection is recomputed.
        Cost: with a matching plan_slides(), a swap (and the entries added since the last prepare(), if any);
        else one pass over the cache."""
        n = self.length
        if not (0 <= keep and 0 < drop and keep + drop <= n):
            raise EngineBug(f"cannot drop {drop} tokens after {keep} from a cache of {n}")
        if self._plan == (keep, drop):
            self._prepare(None)  # the last few entries
            shadow = self._shadow
            shadow.keys[:, :, :, :keep], shadow.values[:, :, :, :keep] = self.keys[:, :, :, :keep], \
                self.values[:, :, :, :keep]
            self._shadow = self._buffers
            self._use(shadow)  # a swap: both sets keep their bindings
            self._copied = 0
        else:
            m = n - keep - drop
            cos, sin = self._angles(drop)
            k, v = self.keys, self.values
            _rotate(k[:, :, :, keep : keep + m], k[:, :, :, keep + drop : n], cos, sin)
            v[:, :, :, keep : keep + m] = v[:, :, :, keep + drop : n]
            self._copied = 0
        self.length = n - drop
        self._idle = False  # the next window's steps copy their own entries until prepare() is called

    def copy_from(self, other: KVCache) -> None:
        """Make this cache a copy of another one of the same model (for best-of-N candidates)."""
        n = other.length
        self.keys[:, :, :, :n], self.values[:, :, :, :n] = other.keys[:, :, :, :n], other.values[:, :, :, :n]
        self.length = other.length
        self._copied = 0
