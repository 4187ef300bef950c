"""The design steps of the engine's decode path, measured one after the other (docs/benchmarks.md, Decode).

    python bench/decode_steps.py [--checkpoint CKPT] [--steps 300] [--json]

Each variant decodes one token at a context of 1024 (cache of 1023 tokens), `--steps` times, on one random model
of the default size (or the checkpoint's weights):
  naive        past k/v fed as inputs, present k/v returned as new arrays (the graph concatenates: ~8 MB copied
               per token) and fed back
  inplace      past and present bound to one preallocated buffer per layer (IO binding): nothing copied
  +opt=basic   the same with onnxruntime's basic graph optimizations only (no fusions)
  +int8        int8 MatMul weights (dynamic quantization)
  +int4        block-wise int4 MatMul weights (MatMulNBits, int8 compute)
  +threads=2   two intra-op threads (fp32 and int8; int8 also without spin-waiting threads)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np

CTX = 1024


def stats(seconds) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def naive(path: Path, steps: int) -> dict:
    import onnxruntime as ort
    from musebridge.engine.inference.model_file import open_session

    session, info = open_session(path, ["CPUExecutionProvider"], threads=1)
    shape = (1, info.n_head, CTX - 1, info.head_size)
    past = {f"past_{k}_{i}": np.random.default_rng(i).normal(size=shape).astype(np.float32)
            for i in range(info.n_layer) for k in ("key", "value")}
    names = [o.name for o in session.get_outputs()]
    times = []
    for i in range(steps + 10):
        feeds = {"input_ids": np.array([[i % 3000]], np.int64), "seqlens_k": np.array([CTX - 1], np.int32),
                 "total_sequence_length": np.array(CTX, np.int32), **past}
        t0 = time.perf_counter()
        outs = session.run(names, feeds)
        times.append(time.perf_counter() - t0)
        assert outs[1].shape[2] == CTX  # a fresh (1, H, 1024, D) copy per layer
    del ort
    return stats(times[10:])


def engine(path: Path, steps: int, threads: int, optimization: str = "all", spinning: bool = True) -> dict:
    from musebridge.engine.inference.runtime import Model, RuntimeOptions

    options = RuntimeOptions(threads=threads, provider="cpu", optimization=optimization, spinning=spinning)
    model = Model.load(path, options)
    cache = model.new_cache()
    cache.forward(np.random.default_rng(0).integers(0, 3000, CTX - 1).tolist())
    times = []
    for i in range(steps + 10):
        t0 = time.perf_counter()
        cache.forward([i % 3000])
        times.append(time.perf_counter() - t0)
        cache.truncate(CTX - 1)
    return stats(times[10:])


def op_profile(path: Path, steps: int) -> dict:
    """onnxruntime profile of one-token steps at 1024 context: microseconds per step spent in each op type."""
    import os

    from musebridge.engine.inference.runtime import Model, RuntimeOptions

    model = Model.load(path, RuntimeOptions(provider="cpu", profile=True))
    cache = model.new_cache()
    cache.forward(np.random.default_rng(0).integers(0, 3000, CTX - 1).tolist())
    for i in range(steps):
        cache.forward([i % 3000])
        cache.truncate(CTX - 1)
    profile = model.end_profiling()
    with open(profile) as f:
        events = json.load(f)
    os.unlink(profile)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    per_op: Counter = Counter()
    for e in events:  # the steps only: node events after the first run (the prefill)
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > runs[0][1]:
            per_op[e["args"]["op_name"]] += e["dur"]
    per_op["(model_run)"] = sum(end - start for start, end in runs[1:])
    return {op: round(us / steps, 1) for op, us in per_op.most_common()}


def node_counts(path: Path, optimization: str) -> dict:
    """Nodes of the graph after onnxruntime's optimizations, by op type."""
    import onnx
    import onnxruntime as ort

    opt = ort.GraphOptimizationLevel
    levels = {"basic": opt.ORT_ENABLE_BASIC, "all": opt.ORT_ENABLE_ALL}
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = levels[optimization]
        options.optimized_model_filepath = str(Path(tmp) / "opt.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        nodes = onnx.load(options.optimized_model_filepath).graph.node
    return dict(Counter(n.op_type for n in nodes).most_common()) | {"total": len(nodes)}


def main() -> int:
    parser = argparse.ArgumentParser(description="engine decode design steps at 1024 tokens of context")
    parser.add_argument("--checkpoint", metavar="CKPT")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", action="store_true", help="also: time per op type (onnxruntime profiling)")
    args = parser.parse_args()

    import torch
    from musebridge.engine.tokens import vocab as V
    from musebridge.export.checkpoint import load_checkpoint
    from musebridge.export.model import GPT, GPTConfig
    from musebridge.export.onnx_export import export_model, quantize_int4, quantize_int8

    if args.checkpoint:
        model, state = load_checkpoint(args.checkpoint)
    else:
        torch.manual_seed(0)
        model = GPT(GPTConfig()).eval()
        state = {"config": model.config.to_dict(), "vocab": asdict(V.vocab_info()), "train": {}, "data": {}}
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8, int4 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx", Path(tmp) / "int4.onnx"
        export_model(model, state, fp32)
        quantize_int8(fp32, int8)
        quantize_int4(fp32, int4)
        result = {
            "naive fp32": naive(fp32, args.steps),
            "inplace fp32 opt=basic": engine(fp32, args.steps, 1, "basic"),
            "inplace fp32": engine(fp32, args.steps, 1),
            "inplace int8": engine(int8, args.steps, 1),
            "inplace int4": engine(int4, args.steps, 1),
            "inplace fp32 threads=2": engine(fp32, args.steps, 2),
            "inplace int8 threads=2": engine(int8, args.steps, 2),
            "inplace int8 threads=2 no-spin": engine(int8, args.steps, 2, spinning=False),
            "inplace int4 threads=2": engine(int4, args.steps, 2),
            "nodes fp32 basic": node_counts(fp32, "basic"),
            "nodes fp32 all": node_counts(fp32, "all"),
            "nodes int8 all": node_counts(int8, "all"),
            "nodes int4 all": node_counts(int4, "all"),
        }
        if args.profile:
            result["profile fp32 us/step"] = op_profile(fp32, args.steps)
            result["profile int8 us/step"] = op_profile(int8, args.steps)
            result["profile int4 us/step"] = op_profile(int4, args.steps)
    for name, figures in result.items():
        print(f"{name:24} {figures}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
