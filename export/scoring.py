"""Scoring pieces with a model: the negative log-likelihood (nats) of every target token.

A piece's targets are its tokens 1..len-1 (BOS is given, not predicted). Scores come back as one flat float64
array over all pieces' targets in order: piece i's targets are flat[target_starts(data)[i] : ...[i + 1]].

Pieces longer than the window are read in sliding windows that keep the conditioning prefix (`piece_chunks`):
the first window is the piece's first `block` tokens; each next window is the prefix followed by the most recent
tokens, and scores only the `stride` tokens it adds (default block / 2), so every scored token sees at least
block - stride - prefix tokens of context: what the engine does when its window slides.

Two scorers give the same figures on the same weights:
- `OnnxScorer`: any model file the engine loads, through engine.runtime (numpy and onnxruntime only). Each
  window's tokens go through a fresh (truncated) KV cache in one forward call; log-softmax is read at the
  scored positions.
- `TorchScorer`: a torch GPT from a .pt checkpoint, windows batched and padded (torch is imported on use).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from musebridge.engine.server.protocol import MIN_CONTEXT
from musebridge.engine.tokens import vocab as V

from .dataset import TokenData
from .errors import ExportError

log = logging.getLogger(__name__)

TORCH_HINT = "pip install 'musebridge[train]'"


@dataclass(frozen=True)
class Chunk:
    """One model input: `tokens` to run, and which of its outputs score which piece token.
    positions[j] is the input index whose logits predict tokens[positions[j] + 1], which is token
    start + j of piece `piece`."""

    piece: int
    tokens: np.ndarray
    positions: np.ndarray
    start: int = 1


def piece_chunks(index: int, piece: np.ndarray, prefix_len: int, block: int, stride: int) -> list[Chunk]:
    """Windows covering targets 1..len-1 of a piece exactly once, in order (see the module docstring)."""
    piece = np.asarray(piece, dtype=np.int64)
    first = piece[:block]
    chunks = [Chunk(index, first, np.arange(len(first) - 1), 1)] if len(first) > 1 else []
    done = len(first)  # targets 1..done-1 are scored
    prefix = piece[:prefix_len]
    keep = block - prefix_len
    while done < len(piece):
        end = min(len(piece), done + stride)
        start = max(prefix_len, end - keep)
        tokens = np.concatenate((prefix, piece[start:end]))
        positions = np.arange(done, end) - start + prefix_len - 1
        chunks.append(Chunk(index, tokens, positions, done))
        done = end
    return chunks


def data_chunks(data: TokenData, block: int, stride: int) -> list[Chunk]:
    """Every piece's windows, pieces in order."""
    prefix_lens = data.prefix_lengths()
    return [c for i in range(len(data))
            for c in piece_chunks(i, data.piece(i), int(prefix_lens[i]), block, stride)]


def target_starts(data: TokenData) -> np.ndarray:
    """Where each piece's targets begin in the flat score array (pieces + 1 entries, the last is the total)."""
    lengths = np.maximum(np.diff(data.offsets) - 1, 0)
    return np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)


def flat_targets(data: TokenData) -> np.ndarray:
    """The target tokens of every piece (tokens 1..len-1), in the flat score layout."""
    return np.concatenate([np.asarray(data.piece(i)[1:], np.int64) for i in range(len(data))] or [np.zeros(0)])


def piece_totals(data: TokenData, flat: np.ndarray) -> np.ndarray:
    """Total NLL of each piece from flat per-target scores."""
    owner = np.repeat(np.arange(len(data)), np.diff(target_starts(data)))
    return np.bincount(owner, weights=flat, minlength=len(data))


def check_window(context: int | None, block_size: int) -> int:
    """The window length: `context` (default block_size), checked against what the model can hold."""
    block = context or block_size
    if not MIN_CONTEXT <= block <= block_size:
        raise ExportError(f"context {block}: give {MIN_CONTEXT} to {block_size} tokens (the model's block size)")
    return block


class Progress:
    """A progress bar on stderr: tqdm where it is installed, else a plain line rewritten at most once a second."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total, self.desc, self.enabled, self.done, self._shown = total, desc, enabled, 0, 0.0
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=desc, unit="window", mininterval=1.0)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.enabled and (time.monotonic() - self._shown >= 1.0 or self.done == self.total):
            self._shown = time.monotonic()
            print(f"\r{self.desc}: {self.done}/{self.total} windows", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.total:
            print(file=sys.stderr, flush=True)


def _nll_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] of each row (nats), computed in float64."""
    rows = logits.astype(np.float64)
    top = rows.max(axis=1)
    lse = top + np.log(np.exp(rows - top[:, None]).sum(axis=1))
    return lse - rows[np.arange(len(rows)), targets]


class OnnxScorer:
    """Scores with an ONNX model file through the engine's runtime (None: the bundled model)."""

    def __init__(self, path: str | Path | None = None, context: int | None = None, device: str = "cpu",
                 threads: int = 1):
        from musebridge.engine.inference.runtime import Model, RuntimeOptions

        provider = "cuda" if device.startswith("cuda") else "cpu" if device == "cpu" else "auto"
        self.model = Model.load(path, RuntimeOptions(threads=threads, provider=provider))
        info = self.model.info
        self.block = check_window(context, info.block_size)
        self.describe = {"model": info.path, "format": "onnx", "provider": self.model.provider,
                         "config": {"n_layer": info.n_layer, "n_head": info.n_head, "n_embd": info.n_embd,
                                    "block_size": info.block_size},
                         "train_step": info.train.get("step", info.train.get("state", {}).get("step"))}

    def token_nll(self, data: TokenData, stride: int | None = None, progress: bool = False) -> np.ndarray:
        """NLL (nats) of every target token of every piece, in the flat layout."""
        stride = stride or max(1, self.block // 2)
        starts = target_starts(data)
        out = np.zeros(int(starts[-1]))
        cache = self.model.new_cache(self.block)
        chunks = data_chunks(data, self.block, stride)
        bar = Progress(len(chunks), "eval", progress)
        for c in chunks:
            cache.truncate(0)
            logits = cache.forward(c.tokens.tolist())
            at = starts[c.piece] + c.start - 1
            out[at : at + len(c.positions)] = _nll_at(logits[c.positions], c.tokens[c.positions + 1])
            bar.update()
        bar.close()
        return out


class TorchScorer:
    """Scores with a torch GPT (from a .pt checkpoint, or a model in memory), windows batched on `device`."""

    def __init__(self, model, context: int | None = None, device: str = "cpu", batch_tokens: int = 16384,
                 describe: dict | None = None):
        self.model, self.device, self.batch_tokens = model, device, batch_tokens
        self.block = check_window(context, model.config.block_size)
        self.describe = describe or {"format": "torch", "config": model.config.to_dict()}

    @classmethod
    def load(cls, path: str | Path, context: int | None = None, device: str = "cpu") -> TorchScorer:
        """The model of a checkpoint; ExportError naming the install command where torch is missing."""
        try:
            import torch  # noqa: F401
        except ImportError:
            raise ExportError(f"{path}: reading a .pt checkpoint needs torch: {TORCH_HINT} "
                              "(or give an .onnx model with --model)") from None
        from .checkpoint import load_checkpoint

        model, state = load_checkpoint(path)
        step = state.get("train", {}).get("state", {}).get("step", state.get("train", {}).get("step"))
        describe = {"model": str(path), "format": "torch", "params": model.num_params(),
                    "config": model.config.to_dict(), "train_step": step}
        return cls(model, context, device, describe=describe)

    def token_nll(self, data: TokenData, stride: int | None = None, progress: bool = False) -> np.ndarray:
        """NLL (nats) of every target token of every piece, in the flat layout."""
        import torch
        import torch.nn.functional as F

        stride = stride or max(1, self.block // 2)
        starts = target_starts(data)
        out = np.zeros(int(starts[-1]))
        chunks = sorted(data_chunks(data, self.block, stride), key=lambda c: len(c.tokens))
        bar = Progress(len(chunks), "eval", progress)
        self.model.to(self.device).eval()
        with torch.no_grad():
            for group in _batches(chunks, self.batch_tokens):
                x = np.full((len(group), len(group[-1].tokens)), V.PAD, dtype=np.int64)
                y = np.full_like(x, -1)  # -1: not scored
                for row, c in enumerate(group):
                    x[row, : len(c.tokens)] = c.tokens
                    y[row, c.positions] = c.tokens[c.positions + 1]
                logits, _ = self.model(torch.from_numpy(x).to(self.device))
                flat = logits.float().reshape(-1, logits.shape[-1])
                ce = F.cross_entropy(flat, torch.from_numpy(y).to(self.device).view(-1), ignore_index=-1,
                                     reduction="none").view(y.shape).double().cpu().numpy()
                for row, c in enumerate(group):
                    at = starts[c.piece] + c.start - 1
                    out[at : at + len(c.positions)] = ce[row, c.positions]
                bar.update(len(group))
        bar.close()
        return out


def _batches(chunks: list[Chunk], batch_tokens: int):
    """Groups of chunks (sorted by length) whose padded size stays within batch_tokens."""
    group: list[Chunk] = []
    for c in chunks:
        if group and (len(group) + 1) * len(c.tokens) > batch_tokens:
            yield group
            group = []
        group.append(c)
    if group:
        yield group


def model_nll(model, data: TokenData, stride: int | None = None, batch_tokens: int = 16384,
              device: str = "cpu", progress: bool = False, context: int | None = None) -> np.ndarray:
    """Total NLL (nats) of each piece's tokens 1..len-1 under a torch GPT, in prefix-keeping sliding windows of
    `context` tokens (default: the model's block size)."""
    scorer = TorchScorer(model, context, device, batch_tokens)
    return piece_totals(data, scorer.token_nll(data, stride, progress))


def load_scorer(path: str | Path | None, context: int | None = None, device: str = "cpu",
                threads: int | None = None):
    """A scorer for a model file: .pt through torch, anything else (None: the bundled model) through the engine."""
    if path is not None and Path(path).suffix == ".pt":
        scorer = TorchScorer.load(path, context, device)
        if threads:
            import torch

            torch.set_num_threads(threads)
        return scorer
    return OnnxScorer(path, context, device, threads or 1)
