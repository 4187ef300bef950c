"""`musebridge eval`: negative log-likelihood of a model and of an n-gram baseline on a corpus split.

Both models score the same targets: every token of every piece except its first (BOS), in nats. Figures are
nats per token (total NLL / targets) and nats per note (total NLL of the pieces / their note-ons), overall and
per style.

The transformer reads pieces longer than its block_size in sliding windows that keep the conditioning prefix:
the first window is the piece's first block_size tokens; each next window is the prefix followed by the most
recent tokens, and scores only the `stride` tokens it adds (default block_size / 2), so every scored token sees
at least block_size - stride - prefix tokens of context — what the engine does when its window slides.
`--context N` scores with windows of N tokens instead of block_size (stride N / 2 by default): what an engine
session created with that `context` sees, so the cost of a shorter, quicker context can be read off.

The n-gram baseline (export/ngram.py) is fitted on the corpus's train split, its order (2..5) chosen on the
valid split.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass

import numpy as np
from musebridge.engine import vocab as V
from musebridge.engine.protocol import MIN_CONTEXT

from .dataset import TokenData, load_split
from .errors import ExportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chunk:
    """One model input: `tokens` to run, and which of its outputs score which piece token.
    positions[j] is the input index whose logits predict tokens[positions[j] + 1]."""

    piece: int
    tokens: np.ndarray
    positions: np.ndarray


def piece_chunks(index: int, piece: np.ndarray, prefix_len: int, block: int, stride: int) -> list[Chunk]:
    """Windows covering targets 1..len-1 of a piece exactly once (see the module docstring)."""
    piece = np.asarray(piece, dtype=np.int64)
    first = piece[:block]
    chunks = [Chunk(index, first, np.arange(len(first) - 1))] if len(first) > 1 else []
    done = len(first)  # targets 1..done-1 are scored
    prefix = piece[:prefix_len]
    keep = block - prefix_len
    while done < len(piece):
        end = min(len(piece), done + stride)
        start = max(prefix_len, end - keep)
        tokens = np.concatenate((prefix, piece[start:end]))
        positions = np.arange(done, end) - start + prefix_len - 1
        chunks.append(Chunk(index, tokens, positions))
        done = end
    return chunks


def model_nll(model, data: TokenData, stride: int | None = None, batch_tokens: int = 16384,
              device: str = "cpu", progress: bool = False, context: int | None = None) -> np.ndarray:
    """Total NLL (nats) of each piece's tokens 1..len-1 under a GPT, in prefix-keeping sliding windows of
    `context` tokens (default: the model's block size). progress: show a tqdm bar over the batches on stderr."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    block = context or model.config.block_size
    if not MIN_CONTEXT <= block <= model.config.block_size:
        raise ExportError(f"context {block}: give {MIN_CONTEXT} to {model.config.block_size} tokens "
                          "(the model's block size)")
    stride = stride or max(1, block // 2)
    prefix_lens = data.prefix_lengths()
    chunks = [c for i in range(len(data))
              for c in piece_chunks(i, data.piece(i), int(prefix_lens[i]), block, stride)]
    chunks.sort(key=lambda c: len(c.tokens))
    out = np.zeros(len(data))
    model.to(device).eval()
    with torch.no_grad():
        batches = list(_batches(chunks, batch_tokens))
        for group in tqdm(batches, desc="eval", unit="batch", disable=not progress, mininterval=1.0):
            x = np.full((len(group), len(group[-1].tokens)), V.PAD, dtype=np.int64)
            y = np.full_like(x, -1)  # -1: not scored
            for row, c in enumerate(group):
                x[row, : len(c.tokens)] = c.tokens
                y[row, c.positions] = c.tokens[c.positions + 1]
            logits, _ = model(torch.from_numpy(x).to(device))
            flat = logits.float().reshape(-1, logits.shape[-1])
            ce = F.cross_entropy(flat, torch.from_numpy(y).to(device).view(-1), ignore_index=-1, reduction="none")
            ce = ce.view(y.shape)
            np.add.at(out, [c.piece for c in group], ce.sum(dim=1).double().cpu().numpy())
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


def summarize(data: TokenData, nll: np.ndarray) -> dict:
    """Nats per token and per note, overall and per style, from per-piece NLL totals."""
    targets = np.diff(data.offsets) - 1
    notes = data.notes()
    styles = np.array(data.styles)

    def figures(mask: np.ndarray) -> dict:
        t, n = int(targets[mask].sum()), int(notes[mask].sum())
        return {"pieces": int(mask.sum()), "tokens": t, "notes": n,
                "nll_per_token": float(nll[mask].sum() / max(t, 1)),
                "nll_per_note": float(nll[mask].sum() / max(n, 1))}

    return {"all": figures(np.ones(len(data), bool)),
            "per_style": {s: figures(styles == s) for s in sorted(set(data.styles))}}


def subset(data: TokenData, limit: int | None) -> TokenData:
    """The first `limit` pieces of a split (all when limit is None)."""
    if limit is None or limit >= len(data):
        return data
    end = int(data.offsets[limit])
    return TokenData(data.tokens[:end], data.offsets[: limit + 1], data.ids[:limit], data.styles[:limit])


def evaluate(ckpt: str, root: str, split: str, limit: int | None = None, stride: int | None = None,
             orders=(2, 3, 4, 5), device: str = "cpu", progress: bool = False, context: int | None = None) -> dict:
    """Model and n-gram figures on one split, as the JSON object `musebridge eval --json` prints."""
    from . import ngram
    from .checkpoint import load_checkpoint

    data = subset(load_split(root, split), limit)
    valid = subset(load_split(root, "valid"), limit)
    t0 = time.monotonic()
    baseline, order_scores = ngram.choose_order(np.asarray(load_split(root, "train").tokens),
                                                [valid.piece(i) for i in range(len(valid))], orders)
    ngram_fig = summarize(data, ngram.nll(baseline, [data.piece(i) for i in range(len(data))]))
    log.info("n-gram (order %d) fitted and scored in %.1f s", baseline.order, time.monotonic() - t0)
    model, state = load_checkpoint(ckpt)
    window = context or model.config.block_size
    t0 = time.monotonic()
    model_fig = summarize(data, model_nll(model, data, stride=stride, device=device, progress=progress,
                                          context=window))
    log.info("model scored in %.1f s", time.monotonic() - t0)
    m, n = model_fig["all"]["nll_per_token"], ngram_fig["all"]["nll_per_token"]
    return {
        "split": split, "ckpt": str(ckpt), "params": model.num_params(), "config": model.config.to_dict(),
        "context": window, "stride": stride or window // 2,
        "model_nll": m, "ngram_nll": n, "improvement": 1.0 - m / n,
        "model_nll_per_note": model_fig["all"]["nll_per_note"],
        "ngram_nll_per_note": ngram_fig["all"]["nll_per_note"],
        "ngram_order": baseline.order, "ngram_valid_nll_by_order": order_scores,
        "pieces": model_fig["all"]["pieces"], "tokens": model_fig["all"]["tokens"],
        "notes": model_fig["all"]["notes"],
        "per_style": {s: {"pieces": f["pieces"], "tokens": f["tokens"], "notes": f["notes"],
                          "model_nll": f["nll_per_token"], "ngram_nll": ngram_fig["per_style"][s]["nll_per_token"],
                          "model_nll_per_note": f["nll_per_note"],
                          "ngram_nll_per_note": ngram_fig["per_style"][s]["nll_per_note"]}
                      for s, f in model_fig["per_style"].items()},
        "train_step": state.get("train", {}).get("state", {}).get("step"),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", default="runs/default/best.pt", help="checkpoint to evaluate")
    parser.add_argument("--data", default="data/corpus", help="corpus folder (tokens/train, valid, SPLIT)")
    parser.add_argument("--split", default="test", help="split to score (train, valid, test)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N pieces (quick look)")
    parser.add_argument("--stride", type=int, default=None, help="tokens scored per sliding window")
    parser.add_argument("--context", type=int, default=None, metavar="TOKENS",
                        help="window length (default: the model's block size), as `play --context`")
    parser.add_argument("--orders", default="2,3,4,5", help="n-gram orders to try on the valid split")
    parser.add_argument("--device", default="cpu", help="torch device for the model")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="end with one JSON line holding every figure")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _table(result: dict) -> str:
    lines = [f"{'style':<14}{'pieces':>7}{'tokens':>10}{'model/tok':>11}{'ngram/tok':>11}"
             f"{'model/note':>12}{'ngram/note':>12}"]
    rows = list(result["per_style"].items()) + [("all", {
        "pieces": result["pieces"], "tokens": result["tokens"], "model_nll": result["model_nll"],
        "ngram_nll": result["ngram_nll"], "model_nll_per_note": result["model_nll_per_note"],
        "ngram_nll_per_note": result["ngram_nll_per_note"]})]
    for style, f in rows:
        lines.append(f"{style:<14}{f['pieces']:>7}{f['tokens']:>10}{f['model_nll']:>11.4f}{f['ngram_nll']:>11.4f}"
                     f"{f['model_nll_per_note']:>12.4f}{f['ngram_nll_per_note']:>12.4f}")
    gain = 100 * result["improvement"]
    side = "below" if gain >= 0 else "above"
    lines.append(f"model is {abs(gain):.1f}% {side} the order-{result['ngram_order']} n-gram per token on "
                 f"{result['split']} (nats; lower is better)")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    try:
        orders = tuple(int(o) for o in args.orders.split(","))
        result = evaluate(args.ckpt, args.data, args.split, args.limit, args.stride, orders, args.device,
                          progress=not args.quiet, context=args.context)
    except (ExportError, ValueError) as exc:
        print(f"musebridge eval: {exc}", file=sys.stderr)
        return 1
    print(_table(result))
    if args.json:
        print(json.dumps(result))
    return 0
