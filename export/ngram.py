"""An interpolated Kneser-Ney n-gram model of token sequences: the baseline the transformer must beat.

numpy only. An n-gram of k tokens is packed into one int64 key, 12 bits per token (so k <= 5 and token ids
< 4096), and every table is a sorted key array looked up with searchsorted, so fitting on tens of millions of
tokens takes seconds.

    P_k(w | h) = max(c_k(h w) - D_k, 0) / c_k(h .)  +  D_k * N1+(h .) / c_k(h .) * P_{k-1}(w | h')

h' is h without its oldest token; c_n are raw counts at the highest order n and continuation counts
N1+(. g) below it (Kneser-Ney); P_0 is uniform over the vocabulary, so no token has probability zero. A context
never seen at order k passes P_{k-1} through. D_k = n1 / (n1 + 2 n2) from the count-of-counts of order k.
Before the first token of a piece the context is filled with EOS (what precedes BOS in the training stream).

`baseline(root)` fits a corpus's baseline once (on its train split, order chosen on its valid split) and keeps it
in <root>/cache/ngram-<hash>.npz, the hash covering the train and valid token files, the orders tried, the fitting
code's format and the vocabulary, so a later evaluation of the same corpus reads it instead of fitting again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from musebridge.engine.files import atomic_write
from musebridge.engine.tokens import vocab as V

from .dataset import load_split, split_paths
from .errors import ExportError

log = logging.getLogger(__name__)

BITS = 12
BASE = 1 << BITS
MAX_ORDER = 63 // BITS  # 5
CACHE_FORMAT = "kneser-ney-1"  # bump when fit() or the cache file's layout changes: older cache files are ignored
_FIELDS = ("keys", "counts", "ctx_keys", "ctx_total", "ctx_types")


@dataclass(frozen=True)
class _Order:
    """Tables of one order: sorted n-gram keys and their counts; sorted context keys, totals and types."""

    keys: np.ndarray
    counts: np.ndarray
    ctx_keys: np.ndarray
    ctx_total: np.ndarray
    ctx_types: np.ndarray
    discount: float


@dataclass(frozen=True)
class NgramModel:
    """An order-n interpolated Kneser-Ney model over `vocab_size` token ids. orders[k-1] holds order k."""

    order: int
    vocab_size: int
    orders: tuple[_Order, ...]


def _keys(tokens: np.ndarray, k: int) -> np.ndarray:
    """Packed keys of every k-gram of `tokens` (length len - k + 1), oldest token in the high bits."""
    t = tokens.astype(np.int64)
    key = t[: len(t) - k + 1].copy()
    for j in range(1, k):
        key = key * BASE + t[j : len(t) - k + 1 + j]
    return key


def _discount(counts: np.ndarray) -> float:
    n1, n2 = int(np.sum(counts == 1)), int(np.sum(counts == 2))
    if n1 == 0:
        return 0.5
    return float(min(0.95, max(0.05, n1 / (n1 + 2 * n2))))


def _order_table(keys: np.ndarray, counts: np.ndarray) -> _Order:
    ctx = keys >> BITS
    ctx_keys, start = np.unique(ctx, return_index=True)  # keys are sorted, so contexts are contiguous
    ctx_total = np.add.reduceat(counts, start).astype(np.float64)
    ctx_types = np.diff(np.append(start, len(keys))).astype(np.float64)
    return _Order(keys, counts.astype(np.float64), ctx_keys, ctx_total, ctx_types, _discount(counts))


def fit(tokens: np.ndarray, order: int, vocab_size: int = V.VOCAB_SIZE) -> NgramModel:
    """Fit an order-`order` model (1..5) on one token stream (pieces concatenated)."""
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"n-gram order must be 1..{MAX_ORDER}, got {order}")
    if vocab_size > BASE:
        raise ValueError(f"vocabulary of {vocab_size} tokens does not fit {BITS}-bit keys")
    tokens = np.asarray(tokens)
    keys, counts = np.unique(_keys(tokens, order), return_counts=True)
    tables = [_order_table(keys, counts)]
    for k in range(order - 1, 0, -1):  # continuation counts: distinct left neighbours of each k-gram
        keys, counts = np.unique(keys % (BASE**k), return_counts=True)
        tables.append(_order_table(keys, counts))
    return NgramModel(order, vocab_size, tuple(reversed(tables)))


def _lookup(sorted_keys: np.ndarray, query: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found mask, index) of each query key in a sorted key array."""
    idx = np.searchsorted(sorted_keys, query)
    idx = np.minimum(idx, len(sorted_keys) - 1)
    found = sorted_keys[idx] == query if len(sorted_keys) else np.zeros(len(query), bool)
    return found, idx


def _prob(model: NgramModel, grams: np.ndarray) -> np.ndarray:
    """P(last token | the others) for rows of `grams` (m, order) int64."""
    p = np.full(len(grams), 1.0 / model.vocab_size)
    key = np.zeros(len(grams), dtype=np.int64)
    for k in range(1, model.order + 1):
        key = grams[:, -k] * BASE**(k - 1) + key  # the last k tokens: context of k-1 tokens and the target
        table = model.orders[k - 1]
        has_ctx, ci = _lookup(table.ctx_keys, key >> BITS)
        found, gi = _lookup(table.keys, key)
        count = np.where(found, table.counts[gi], 0.0)
        total, types = table.ctx_total[ci], table.ctx_types[ci]
        d = table.discount
        interp = np.maximum(count - d, 0.0) / total + d * types / total * p
        p = np.where(has_ctx, interp, p)
    return p


def piece_grams(piece: np.ndarray, order: int) -> np.ndarray:
    """Rows (len - 1, order): for each target token 1..len-1 of a piece, its order-1 predecessors and itself,
    with EOS filling the context before the piece's first token."""
    padded = np.concatenate((np.full(order - 1, V.EOS, np.int64), np.asarray(piece, np.int64)))
    idx = np.arange(1, len(piece))[:, None] + np.arange(order)[None, :]
    return padded[idx]


def token_nll(model: NgramModel, pieces) -> np.ndarray:
    """Negative log-likelihood (nats) of every token 1..len-1 of every piece, pieces one after another."""
    batch = [piece_grams(piece, model.order) for piece in pieces if len(piece) > 1]
    if not batch:
        return np.zeros(0)
    return -np.log(_prob(model, np.concatenate(batch)))


def nll(model: NgramModel, pieces) -> np.ndarray:
    """Total negative log-likelihood (nats) of each piece's tokens 1..len-1 (BOS is given, not predicted)."""
    lengths = [max(len(p) - 1, 0) for p in pieces]
    owners = np.repeat(np.arange(len(pieces)), lengths)
    return np.bincount(owners, weights=token_nll(model, pieces), minlength=len(pieces))


def choose_order(train_tokens: np.ndarray, valid_pieces, orders=(2, 3, 4, 5)) -> tuple[NgramModel, dict]:
    """Fit one model per order on the training stream; keep the one with the lowest validation NLL per token.
    Returns the model and {order: validation nats per token}."""
    n_targets = sum(max(len(p) - 1, 0) for p in valid_pieces)
    scores, best = {}, None
    for order in orders:
        model = fit(train_tokens, order)
        scores[order] = float(nll(model, valid_pieces).sum() / max(n_targets, 1))
        log.info("n-gram order %d: validation %.4f nats/token", order, scores[order])
        if best is None or scores[order] < scores[best.order]:
            best = model
    return best, scores


def cache_path(root: str | os.PathLike, orders) -> Path:
    """Where a corpus's baseline for these orders is cached: <root>/cache/ngram-<16 hex digits>.npz."""
    h = hashlib.sha256(json.dumps({"format": CACHE_FORMAT, "orders": sorted(int(o) for o in orders),
                                   "vocab": asdict(V.vocab_info())}, sort_keys=True).encode())
    for split in ("train", "valid"):
        for path in split_paths(root, split)[:2]:  # the tokens and the piece offsets
            with open(path, "rb") as f:
                h.update(hashlib.file_digest(f, "sha256").digest())
    return Path(root) / "cache" / f"ngram-{h.hexdigest()[:16]}.npz"


def save(path: str | os.PathLike, model: NgramModel, scores: dict) -> None:
    """Write a model and its validation scores as one .npz, atomically (a temporary file renamed over `path`)."""
    path = Path(path)
    arrays = {"order": np.array(model.order), "vocab_size": np.array(model.vocab_size),
              "score_orders": np.array(list(scores), np.int64), "score_nll": np.array(list(scores.values()))}
    for k, table in enumerate(model.orders, start=1):
        arrays[f"o{k}_discount"] = np.array(table.discount)
        for name in _FIELDS:  # counts, totals and types are whole numbers below 2**32
            value = getattr(table, name)
            arrays[f"o{k}_{name}"] = value if name.endswith("keys") else value.astype(np.uint32)

    def make(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez adds ".npz" to a name without it
            np.savez(f, **arrays)

    atomic_write(path, make, ExportError, make_folder=True)


def load(path: str | os.PathLike) -> tuple[NgramModel, dict]:
    """A model and its validation scores written by save(); OSError, ValueError, KeyError or BadZipFile if the
    file is unreadable."""
    with np.load(path, allow_pickle=False) as f:
        order = int(f["order"])
        tables = []
        for k in range(1, order + 1):
            fields = {name: f[f"o{k}_{name}"] if name.endswith("keys") else f[f"o{k}_{name}"].astype(np.float64)
                      for name in _FIELDS}
            tables.append(_Order(**fields, discount=float(f[f"o{k}_discount"])))
        scores = dict(zip(f["score_orders"].tolist(), f["score_nll"].tolist(), strict=True))
        return NgramModel(order, int(f["vocab_size"]), tuple(tables)), scores


def baseline(root: str | os.PathLike, orders=(2, 3, 4, 5)) -> tuple[NgramModel, dict]:
    """A corpus's baseline: read from its cache file, else fitted on the train split with the order chosen on the
    whole valid split, and cached. Returns the model and {order: validation nats per token}."""
    path = cache_path(root, orders)
    if path.is_file():
        try:
            model, scores = load(path)
            log.info("n-gram (order %d) read from %s", model.order, path)
            return model, scores
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("%s: unreadable n-gram cache (%s); fitting again", path, exc)
    train, valid = load_split(root, "train"), load_split(root, "valid")
    t0 = time.monotonic()
    model, scores = choose_order(np.asarray(train.tokens), [valid.piece(i) for i in range(len(valid))], orders)
    log.info("n-gram (order %d) fitted in %.1f s", model.order, time.monotonic() - t0)
    try:
        save(path, model, scores)
        log.info("n-gram cached in %s", path)
    except OSError as exc:
        log.warning("%s: could not cache the n-gram (%s); the next eval fits it again", path, exc)
    return model, scores
