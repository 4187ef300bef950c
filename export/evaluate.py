"""`musebridge eval`: how well a model predicts music, in nats, beside an n-gram baseline and a uniform guess.

Model (export/scoring.py): the engine's bundled model by default, any .onnx file through the engine's runtime
(`--model`), or a .pt checkpoint through torch. Pieces longer than the window are read in prefix-keeping sliding
windows of `--context` tokens (default: the model's block size), each scoring `--stride` new tokens (default half
the window), as the engine reads a session whose window slides.

Input (export/eval_inputs.py): a corpus split (`--data data/corpus --split test`), or MIDI files and folders
(`--style` for their conditioning); `--live-like` plays each piece on piano with the rule-based performer first.

Targets are every token of every piece except its first (BOS). Figures are nats per token (total NLL / targets)
and nats per note (total NLL / note-ons), overall, per style and per token kind (KINDS: vocabulary segments
grouped). A kind's per-note figure is its share of the total, so the kinds' per-note figures add up to the
overall one. Three columns:
- model: the model under test;
- ngram: an interpolated Kneser-Ney n-gram (export/ngram.py) fitted once on the corpus's train split, its order
  chosen on the valid split, cached in <corpus>/cache/; left out when there is no corpus;
- uniform: a guess that knows each token's kind and picks uniformly among that kind's ids (log of the kind's
  size in nats; 0 for EOS, the only id of its kind): for orientation.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from musebridge.engine.errors import EngineError
from musebridge.engine.tokens import vocab as V

from . import ngram
from .dataset import SOURCES, TokenData
from .errors import ExportError
from .eval_inputs import NoInput, corpus_pieces, file_pieces, of_sources
from .scoring import flat_targets, load_scorer, target_starts

log = logging.getLogger(__name__)

# Token kinds as the table reports them: vocabulary segments (engine/tokens/vocab.py SEGMENTS) grouped.
# Conditioning tokens are scored wherever they are targets: the prefix after BOS (style, instrument set).
KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("time", ("time",)),
    ("velocity", ("velocity",)),
    ("note_on", ("note_on",)),
    ("note_off", ("note_off",)),
    ("pedal", ("pedal_on", "pedal_off")),
    ("conditioning", ("bos", "style", "set")),
    ("eos", ("eos",)),
    ("pad", ("pad",)),
)
COLUMNS = ("model", "ngram", "uniform")


@dataclass(frozen=True)
class EvalConfig:
    """What `musebridge eval` scores and how. model: a model file (None: the bundled model); inputs: MIDI files
    and folders (empty: the corpus split); limit: at most this many pieces; stride, context: tokens."""

    model: str | None = None
    data: str = "data/corpus"
    split: str = "test"
    inputs: tuple[str, ...] = ()
    style: str = "unknown"
    live_like: bool = False
    sources: tuple[str, ...] = ()  # corpus pieces of these sources only (dataset.SOURCES; empty: all)
    limit: int | None = None
    stride: int | None = None
    context: int | None = None
    orders: tuple[int, ...] = (2, 3, 4, 5)
    device: str = "cpu"
    threads: int | None = None
    progress: bool = False


@lru_cache(maxsize=1)
def token_kinds() -> tuple[np.ndarray, np.ndarray]:
    """(kind index of every token id, number of ids of every kind), read from the segment table."""
    of_segment = {segment: k for k, (_, segments) in enumerate(KINDS) for segment in segments}
    kind = np.concatenate([np.full(count, of_segment[name], np.int64) for name, count, _ in V.SEGMENTS])
    return kind, np.bincount(kind, minlength=len(KINDS))


def _figures(mask: np.ndarray, notes: int, columns: dict[str, np.ndarray]) -> dict:
    tokens = int(mask.sum())
    out: dict = {"tokens": tokens, "notes": notes}
    for name, nll in columns.items():
        total = float(nll[mask].sum())
        out[f"{name}_nll"] = total / max(tokens, 1)
        out[f"{name}_nll_per_note"] = total / max(notes, 1)
    return out


def summarize(data: TokenData, columns: dict[str, np.ndarray]) -> dict:
    """Figures (nats) of each column of per-target NLL (flat layout, export/scoring.py), with the uniform guess
    added: overall, per style and per token kind. A kind's per-note figure is its share of the overall one."""
    targets = flat_targets(data)
    kind_of, sizes = token_kinds()
    kinds = kind_of[targets]
    columns = {**columns, "uniform": np.log(sizes[kinds].astype(np.float64))}
    styles = np.array(data.styles)
    target_style = np.repeat(styles, np.diff(target_starts(data)))
    notes = data.notes()
    total_notes = int(notes.sum())
    result = {"pieces": len(data), **_figures(np.ones(len(targets), bool), total_notes, columns)}
    result["per_style"] = {s: {"pieces": int((styles == s).sum()),
                               **_figures(target_style == s, int(notes[styles == s].sum()), columns)}
                           for s in sorted(set(data.styles))}
    result["per_kind"] = {name: {"ids": int(sizes[k]), **_figures(kinds == k, total_notes, columns)}
                          for k, (name, _) in enumerate(KINDS) if (kinds == k).any()}
    return result


def _read_inputs(cfg: EvalConfig, skip) -> tuple[TokenData, dict]:
    played = " played live-like" if cfg.live_like else ""
    if cfg.inputs:
        data = file_pieces(cfg.inputs, cfg.style, cfg.limit, cfg.live_like, skip)
        return data, {"files": list(data.ids), "style": cfg.style, "live_like": cfg.live_like,
                      "input": f"{len(data)} MIDI file(s){played}"}
    data = of_sources(corpus_pieces(cfg.data, cfg.split, cfg.limit, cfg.live_like, skip), cfg.sources)
    chosen = f" ({', '.join(cfg.sources)} pieces)" if cfg.sources else ""
    return data, {"data": str(cfg.data), "split": cfg.split, "live_like": cfg.live_like, "sources": cfg.sources,
                  "input": f"split {cfg.split} of {cfg.data}{chosen}{played}"}


def _ngram_column(cfg: EvalConfig, data: TokenData) -> tuple[np.ndarray | None, dict]:
    """Per-target NLL of the corpus's n-gram baseline, and what to report about it; None without a corpus."""
    tokens = Path(cfg.data) / "tokens"
    if not ((tokens / "train.npy").is_file() and (tokens / "valid.npy").is_file()):
        return None, {"ngram_missing": f"n-gram baseline left out: no corpus in {cfg.data} (build one with "
                                       "`musebridge corpus build`, or pass --data DIR)"}
    model, scores = ngram.baseline(cfg.data, cfg.orders)
    nll = ngram.token_nll(model, [data.piece(i) for i in range(len(data))])
    return nll, {"ngram_order": model.order, "ngram_valid_nll_by_order": scores,
                 "ngram_cache": str(ngram.cache_path(cfg.data, cfg.orders))}


def evaluate(cfg: EvalConfig, skip=None) -> dict:
    """Every figure of one evaluation, as the JSON object `musebridge eval --json` prints. skip(message) is told
    of each input left out (default: a logged warning)."""
    scorer = load_scorer(cfg.model, cfg.context, cfg.device, cfg.threads)
    data, source = _read_inputs(cfg, skip or (lambda message: log.warning("%s", message)))
    stride = cfg.stride or max(1, scorer.block // 2)
    t0 = time.monotonic()
    columns = {"model": scorer.token_nll(data, stride, cfg.progress)}
    log.info("model scored %d tokens in %.1f s", len(columns["model"]), time.monotonic() - t0)
    ngram_nll, ngram_info = _ngram_column(cfg, data)
    if ngram_nll is not None:
        columns["ngram"] = ngram_nll
    result = {**scorer.describe, "context": scorer.block, "stride": stride, **source, **ngram_info,
              **summarize(data, columns)}
    if ngram_nll is None:
        result.update(ngram_nll=None, ngram_nll_per_note=None, improvement=None)
    else:
        result["improvement"] = 1.0 - result["model_nll"] / result["ngram_nll"]
    return result


def _row(label: str, lead: list, f: dict, columns: list[str]) -> str:
    cells = [f"{label:<14}"] + [f"{v:>9}" for v in lead]
    cells += [f"{f[f'{c}_nll']:>13.4f}" for c in columns] + [f"{f[f'{c}_nll_per_note']:>13.4f}" for c in columns]
    return "".join(cells)


def format_table(result: dict) -> str:
    """The figures as two tables (per style, per token kind) under a line saying what was scored."""
    columns = [c for c in COLUMNS if result.get(f"{c}_nll") is not None]
    head = "".join(f"{c + '/tok':>13}" for c in columns) + "".join(f"{c + '/note':>13}" for c in columns)
    lines = [f"{result.get('model', 'model')} ({result['format']}, context {result['context']}, stride "
             f"{result['stride']}) on {result['input']}: {result['pieces']} pieces, {result['tokens']} tokens, "
             f"{result['notes']} notes; nats, lower is better", "",
             f"{'style':<14}{'pieces':>9}{'tokens':>9}" + head]
    for style, f in [*result["per_style"].items(), ("all", result)]:
        lines.append(_row(style, [f["pieces"], f["tokens"]], f, columns))
    lines += ["", f"{'kind':<14}{'ids':>9}{'tokens':>9}" + head]
    for kind, f in result["per_kind"].items():
        lines.append(_row(kind, [f["ids"], f["tokens"]], f, columns))
    lines.append(_row("all", [V.VOCAB_SIZE, result["tokens"]], result, columns))
    if result.get("improvement") is not None:
        gain = 100 * result["improvement"]
        lines += ["", f"model is {abs(gain):.1f}% {'below' if gain >= 0 else 'above'} the order-"
                      f"{result['ngram_order']} n-gram per token"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="MIDI",
                        help="MIDI files or folders (searched recursively) to score instead of a corpus split")
    parser.add_argument("--model", "--ckpt", dest="model", default=None, metavar="PATH",
                        help="model to score: .onnx (engine runtime) or .pt (torch); default: the bundled model")
    parser.add_argument("--data", default="data/corpus", help="corpus folder (its split, and the n-gram's data)")
    parser.add_argument("--split", default="test", help="split to score (train, valid, test)")
    parser.add_argument("--style", default="unknown", help="conditioning style of the MIDI files given")
    parser.add_argument("--live-like", action="store_true",
                        help="play each piece live-like on piano (export/perform.py) before scoring it")
    parser.add_argument("--sources", nargs="+", choices=SOURCES, default=[], metavar="SOURCE",
                        help="score only the split's pieces from these sources: notated (the corpus as written), "
                        "band (band parts over melodies) (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N pieces (quick look)")
    parser.add_argument("--stride", type=int, default=None, help="tokens scored per sliding window")
    parser.add_argument("--context", type=int, default=None, metavar="TOKENS",
                        help="window length (default: the model's block size), as `play --context`")
    parser.add_argument("--orders", default="2,3,4,5", help="n-gram orders to try on the valid split")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (onnxruntime provider, or torch device)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (onnxruntime: default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object holding every figure")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    def skip(message: str) -> None:
        print(f"musebridge eval: skipped {message}", file=sys.stderr)

    try:
        orders = tuple(int(o) for o in args.orders.split(","))
        cfg = EvalConfig(args.model, args.data, args.split, tuple(args.inputs), args.style, args.live_like,
                         tuple(args.sources), args.limit, args.stride, args.context, orders, args.device,
                         args.threads, progress=not args.quiet)
        result = evaluate(cfg, skip)
    except NoInput as exc:
        print(f"musebridge eval: {exc}", file=sys.stderr)
        return 2
    except (ExportError, EngineError, ValueError) as exc:
        print(f"musebridge eval: {exc}", file=sys.stderr)
        return 1
    if result.get("ngram_missing"):
        print(f"musebridge eval: {result['ngram_missing']}", file=sys.stderr)
    print(json.dumps(result) if args.json else format_table(result))
    return 0
