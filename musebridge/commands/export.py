"""`musebridge export CKPT -o MODEL.onnx [--int8]`: the engine's ONNX decode graph, with metadata inside.

The fp32 graph is checked against the checkpoint (logits of a prefill and of cached steps, max abs diff) and
scored on held-out tokens: the corpus's test split (export.corpus.load_split) when it exists, else the bundled
chorale. With --int8 (dynamic int8) or --int4 (block-wise int4, MatMulNBits) the MatMul weights are quantized and
the NLL change is reported.

`musebridge export --stamp MODEL.onnx` writes the checksum of an existing model file's graph into its metadata
(engine/inference/model_checksum.py; the file is rewritten atomically, every other byte kept), for a file exported
before files carried one.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from musebridge.engine.errors import EngineError
from musebridge.engine.files import atomic_write
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.engine.tokens import vocab as V
from musebridge.export.errors import CheckpointError, ExportError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", nargs="?", help="checkpoint written by `musebridge train`")
    parser.add_argument("-o", "--output", metavar="MODEL.onnx", help="ONNX file to write (required with CKPT)")
    parser.add_argument("--stamp", metavar="MODEL.onnx", help="instead of exporting: write the checksum of this "
                        "model file's weights into its metadata (the engine checks it at load)")
    quant = parser.add_mutually_exclusive_group()
    quant.add_argument("--int8", action="store_true", help="quantize MatMul weights to int8 (dynamic)")
    quant.add_argument("--int4", action="store_true", help="quantize MatMul weights to block-wise int4 "
                       "(MatMulNBits, 32 weights per scale)")
    parser.add_argument("--corpus", default=None, metavar="ROOT", help="corpus root for the held-out NLL "
                        "(default: data/corpus, or $MUSEBRIDGE_DATA/corpus)")
    parser.add_argument("--eval-tokens", type=int, default=20000, metavar="N",
                        help="held-out tokens to score (0: skip the NLL report)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary line")
    parser.add_argument("--card", metavar="CARD.json", help="also write the report with the checkpoint's "
                        "training and data summaries here (the bundled model's card: engine/models/default.json)")


def corpus_lifetimes(root: str | None) -> dict:
    """{"lifetimes": {class: seconds}} measured on the corpus's train split (and its live-like renderings), or {}
    without a corpus (the engine then keeps its default limits). See export/note_stats.py."""
    from musebridge.export.corpus import default_root
    from musebridge.export.dataset import load_training
    from musebridge.export.errors import DataError
    from musebridge.export.note_stats import note_lifetimes

    try:
        return {"lifetimes": note_lifetimes(load_training(root or default_root(), "train"))}
    except DataError as exc:
        log.info("no note lifetimes measured (%s); the engine keeps its defaults", exc)
        return {}


def heldout_pieces(root: str | None, max_tokens: int) -> tuple[list[np.ndarray], str]:
    """Held-out token sequences (about max_tokens in all) and where they came from."""
    from musebridge.export.corpus import CorpusError, default_root, load_split

    root = root or str(default_root())
    try:
        split = load_split(root, "test")
        pieces, total = [], 0
        for i in range(len(split)):
            if total >= max_tokens:
                break
            pieces.append(np.asarray(split.piece(i), dtype=np.int64))
            total += len(pieces[-1])
        if pieces:
            return pieces, f"{root} test split ({len(pieces)} pieces)"
    except CorpusError as exc:
        log.info("no corpus for the NLL report (%s); using the bundled chorale", exc)
    from importlib import resources

    from musebridge.engine.tokens.midifile import encode_file

    path = resources.files("musebridge.engine").joinpath("data/chorale.mid")
    return [np.asarray(encode_file(str(path), "bach").tokens, dtype=np.int64)], "bundled chorale.mid"


def onnx_nll(path: str | Path, pieces: list[np.ndarray]) -> float:
    """Mean NLL (nats per token) of the ONNX model on the pieces, each read in block_size windows."""
    model = Model.load(path, RuntimeOptions(provider="cpu"))
    block = model.info.block_size
    total, count = 0.0, 0
    for piece in pieces:
        for start in range(0, len(piece) - 1, block):
            chunk = piece[start : start + block + 1]
            if len(chunk) < 2:
                continue
            cache = model.new_cache()
            logits = cache.forward(chunk[:-1].tolist()).astype(np.float64)
            z = logits - logits.max(axis=1, keepdims=True)
            logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
            total -= float(logp[np.arange(len(chunk) - 1), chunk[1:]].sum())
            count += len(chunk) - 1
    return total / max(count, 1)


def _write_json(path: Path, obj: dict) -> None:
    """Write JSON atomically (engine/files.py)."""
    text = json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text), ExportError, make_folder=True)

def stamp(path: str) -> int:
    """`--stamp MODEL.onnx`: print the checksum written; 1 with one line on error."""
    from musebridge.engine.inference.model_checksum import stamp_file

    try:
        print(f"{path}: graph sha256 {stamp_file(path)}")
    except EngineError as exc:
        print(f"musebridge export: {exc}", file=sys.stderr)
        return 1
    return 0


def run(args: argparse.Namespace) -> int:
    if args.stamp:
        if args.checkpoint or args.output:
            print("musebridge export: --stamp MODEL.onnx takes no checkpoint or -o", file=sys.stderr)
            return 2
        return stamp(args.stamp)
    if not args.checkpoint or not args.output:
        print("musebridge export: give a checkpoint and -o MODEL.onnx (or --stamp MODEL.onnx)", file=sys.stderr)
        return 2
    # torch and onnx are imported here, not at the top: `musebridge export --help` works without the train extra.
    from musebridge.export.checkpoint import load_checkpoint
    from musebridge.export.onnx_export import export_model, parity, quantize_int4, quantize_int8

    try:
        model, state = load_checkpoint(args.checkpoint)
        state["data"] = {**(state.get("data") or {}), **corpus_lifetimes(args.corpus)}
        out = Path(args.output)
        with tempfile.TemporaryDirectory(dir=out.parent if out.parent.exists() else None) as tmp:
            quantized = "int8" if args.int8 else "int4" if args.int4 else None
            fp32 = Path(tmp) / "fp32.onnx" if quantized else out
            graph = export_model(model, state, fp32)
            pieces, source = heldout_pieces(args.corpus, max(args.eval_tokens, 64))
            tokens = [int(t) for t in np.concatenate(pieces)[: model.config.block_size]]
            report = {"output": str(out), "nodes": len(graph.graph.node), "params": model.num_params(),
                      "parity_max_abs": parity(model, fp32, tokens), "heldout": source,
                      "vocab": {"version": V.VOCAB_VERSION, "sha256": V.vocab_info().sha256[:12]}}
            if args.eval_tokens:
                report["nll_fp32"] = round(onnx_nll(fp32, pieces), 5)
            if quantized:
                (quantize_int8 if args.int8 else quantize_int4)(fp32, out)
                report["weights"] = quantized
                if args.eval_tokens:
                    report[f"nll_{quantized}"] = round(onnx_nll(out, pieces), 5)
                    report["nll_change"] = round(report[f"nll_{quantized}"] - report["nll_fp32"], 5)
        report["size_mb"] = round(out.stat().st_size / 1e6, 2)
        if args.card:
            card = {"export": report, "checkpoint": str(args.checkpoint), "config": state["config"],
                    "vocab": state["vocab"], "train": state.get("train"), "data": state.get("data")}
            _write_json(Path(args.card), card)
    except (CheckpointError, EngineError, OSError) as exc:
        print(f"musebridge export: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:16} {value}")
    return 0
