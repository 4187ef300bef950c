"""Decode latency: the engine vs torch eager with a KV cache vs Hugging Face generate() vs full recomputation.

    musebridge bench decode [--checkpoint CKPT | --model MODEL.onnx] [--int8] [--threads T] [--json]
    musebridge bench decode --long 200000 [--json]      # one long session: slides, p99, RSS over time
    python bench/decode.py ...                          # the same, from a source checkout

Per-token latency at a context of C tokens (128, 512, 1024): the cache holds C - 1 tokens and one token is
decoded, `--steps` times (the engine and torch truncate back after each step; HF generate() decodes --steps
tokens from a prompt of C - steps/2 tokens, timed per token by a stopping criterion; recompute runs the whole
C-token forward per token; guided is the engine with style guidance, engine/inference/guidance.py: two
streams, the session's and its style-free twin, per token). Prefill: one forward of 1024 tokens into an empty
cache. All runs use the same weights (the checkpoint, or one random model of the default size), except HF (a
GPT-2 of the same width, depth and vocabulary, random weights), on the same machine with the same thread count.
Needs the bench extra.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

CONTEXTS = (128, 512, 1024)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", metavar="CKPT", help="torch checkpoint (exported for the engine)")
    parser.add_argument("--model", metavar="MODEL.onnx", help="engine model file (timing only; torch and HF "
                        "then use random weights of its size)")
    parser.add_argument("--int8", action="store_true", help="export the engine model with int8 weights")
    parser.add_argument("--threads", type=int, default=1, help="threads for every runtime (default 1)")
    parser.add_argument("--steps", type=int, default=200, help="timed tokens per context (default 200)")
    parser.add_argument("--skip", default="", help="comma-separated runtimes to skip: guided,torch,hf,recompute")
    parser.add_argument("--long", type=int, default=0, metavar="TOKENS",
                        help="instead: one session of this many generated tokens (window slides included)")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object with every figure")


def stats(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 4), "p99_ms": round(float(np.percentile(ms, 99)), 4)}


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; falls back to the peak)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def prepare(args, folder: Path):
    """(torch GPT, path of the engine's ONNX file) with the same weights."""
    from musebridge.engine.tokens import vocab as V
    from musebridge.export.checkpoint import load_checkpoint
    from musebridge.export.model import GPT, GPTConfig
    from musebridge.export.onnx_export import export_model, quantize_int8

    if args.checkpoint:
        model, state = load_checkpoint(args.checkpoint)
    else:
        import torch

        if args.model:
            from musebridge.engine.inference.runtime import Model

            info = Model.load(args.model).info
            cfg = GPTConfig(n_layer=info.n_layer, n_head=info.n_head, n_embd=info.n_embd,
                            block_size=info.block_size)
        else:
            cfg = GPTConfig()
        torch.manual_seed(0)
        model = GPT(cfg).eval()
        state = {"config": cfg.to_dict(), "vocab": asdict(V.vocab_info()), "train": {}, "data": {"random": True}}
    if args.model:
        return model, Path(args.model)
    path = folder / "bench.onnx"
    export_model(model, state, path)
    if args.int8:
        quantize_int8(path, folder / "bench_int8.onnx")
        path = folder / "bench_int8.onnx"
    return model, path


def bench_engine(path: Path, threads: int, steps: int, rng) -> dict:
    from musebridge.engine.inference.runtime import Model, RuntimeOptions

    model = Model.load(path, RuntimeOptions(threads=threads, provider="cpu"))
    cache = model.new_cache()
    out = _per_context(cache, cache.forward, steps, rng)
    prompt = rng.integers(0, 3000, 1024).tolist()
    out["prefill_1024_ms"] = _median_ms(lambda: (cache.truncate(0), cache.forward(prompt)), 5)
    return out


def bench_guided(path: Path, threads: int, steps: int, rng) -> dict:
    """The engine's step with style guidance: both streams of a GuidedCache through StyleGuidance.logits."""
    from musebridge.engine.inference.backend import LogitsRequest
    from musebridge.engine.inference.guidance import StyleGuidance
    from musebridge.engine.inference.runtime import Model, RuntimeOptions
    from musebridge.engine.tokens import vocab as V

    guided = StyleGuidance(Model.load(path, RuntimeOptions(threads=threads, provider="cpu")), 2.0)
    cache = guided.new_cache()
    return _per_context(cache, lambda tokens: guided.logits([LogitsRequest(cache, tokens)]), steps, rng,
                        V.conditioning("jazz", (0,)))


def _per_context(cache, run, steps: int, rng, prefix=()) -> dict:
    """Per-token stats at each of CONTEXTS: the cache filled with C - 1 tokens (`prefix`, then random ones) by
    `run(tokens)`, then one token run and truncated back, `steps` times after 10 untimed."""
    out = {}
    for ctx in CONTEXTS:
        cache.truncate(0)
        run(list(prefix) + rng.integers(0, 3000, ctx - 1 - len(prefix)).tolist())
        times = []
        for i in range(steps + 10):
            t0 = time.perf_counter()
            run([int(i % 3000)])
            times.append(time.perf_counter() - t0)
            cache.truncate(ctx - 1)
        out[str(ctx)] = stats(times[10:])
    return out


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 3)


def bench_torch(model, steps: int, rng) -> dict:
    import torch

    out = {}
    with torch.inference_mode():
        for ctx in CONTEXTS:
            k, v = model.empty_cache()
            _, k, v = model.forward_cached(torch.tensor([rng.integers(0, 3000, ctx - 1).tolist()]), k, v)
            times = []
            for i in range(steps + 10):
                tok = torch.tensor([[i % 3000]])
                t0 = time.perf_counter()
                model.forward_cached(tok, k, v)  # present k/v dropped: the cache stays at ctx - 1
                times.append(time.perf_counter() - t0)
            out[str(ctx)] = stats(times[10:])
        prompt = torch.tensor([rng.integers(0, 3000, 1024).tolist()])
        out["prefill_1024_ms"] = _median_ms(lambda: model.forward_cached(prompt, *model.empty_cache()), 5)
    return out


def bench_recompute(model, rng, repeats: int = 20) -> dict:
    import torch

    out = {}
    with torch.inference_mode():
        for ctx in CONTEXTS:
            idx = torch.tensor([rng.integers(0, 3000, ctx).tolist()])
            model(idx)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(idx)  # the whole context again for one new token
                times.append(time.perf_counter() - t0)
            out[str(ctx)] = stats(times)
        prompt = torch.tensor([rng.integers(0, 3000, 1024).tolist()])
        out["prefill_1024_ms"] = _median_ms(lambda: model(prompt), 5)
    return out


def bench_hf(config, steps: int, rng) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, StoppingCriteria, StoppingCriteriaList

    hf = GPT2LMHeadModel(GPT2Config(vocab_size=config.vocab_size, n_positions=2048, n_embd=config.n_embd,
                                    n_layer=config.n_layer, n_head=config.n_head, bos_token_id=0,
                                    eos_token_id=0)).eval()

    class Clock(StoppingCriteria):
        def __init__(self):
            self.stamps = []

        def __call__(self, input_ids, scores, **kwargs):
            self.stamps.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    out = {}
    with torch.inference_mode():
        for ctx in CONTEXTS:
            prompt = torch.tensor([rng.integers(0, 3000, ctx - steps // 2).tolist()])
            clock = Clock()
            hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=steps + 1,
                        min_new_tokens=steps + 1, do_sample=False, pad_token_id=0, eos_token_id=None,
                        stopping_criteria=StoppingCriteriaList([clock]))
            out[str(ctx)] = stats(list(np.diff(clock.stamps)))  # first stamp follows the prefill
        prompt = torch.tensor([rng.integers(0, 3000, 1024).tolist()])
        out["prefill_1024_ms"] = _median_ms(lambda: hf(prompt, use_cache=True), 5)
    out["params"] = sum(p.numel() for p in hf.parameters())
    return out


def bench_long(path: Path, threads: int, tokens: int) -> dict:
    """One session of `tokens` generated tokens: per-token time (sampling and slides included) and RSS."""
    from musebridge.engine.inference.runtime import Model, RuntimeOptions
    from musebridge.engine.inference.sampler import SamplingConfig
    from musebridge.engine.sessions.session import Session
    from musebridge.engine.sessions.session_config import SessionConfig

    model = Model.load(path, RuntimeOptions(threads=threads, provider="cpu"))
    session = Session(model, SessionConfig(style="bach", instruments=(0, 5), player_instrument=0,
                                           sampling=SamplingConfig(seed=0, top_p=0.95), max_polyphony=6))
    times = np.zeros(tokens)  # touched now, so that RSS below measures the session, not this array
    slides, rss = [], [rss_mb()]
    for i in range(tokens):
        dropped = session.dropped
        t0 = time.perf_counter()
        session.step()
        times[i] = time.perf_counter() - t0
        if session.dropped != dropped:
            slides.append(times[i])
        if (i + 1) % max(1, tokens // 10) == 0:
            rss.append(rss_mb())
            session.commit(session.time)
    return {"tokens": tokens, "per_token": stats(list(times)), "max_ms": round(float(times.max()) * 1e3, 3),
            "slides": len(slides), "slide_steps": stats(slides or [0.0]),
            "slide_step_max_ms": round(float(max(slides, default=0.0)) * 1e3, 3),
            "cache_capacity": session.cache.capacity, "cache_length": session.cache.length,
            "rss_mb": [round(r, 1) for r in rss],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)}


def run(args: argparse.Namespace) -> int:
    from musebridge.engine.errors import EngineError
    from musebridge.export.errors import ExportError

    if not 1 <= args.steps <= 2 * (min(CONTEXTS) - 1):
        print(f"bench decode: --steps must be 1-{2 * (min(CONTEXTS) - 1)} (the timed tokens are centred on each "
              f"context length, the shortest being {min(CONTEXTS)})", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except (EngineError, ExportError, OSError) as exc:
        print(f"bench decode: {exc}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    import torch

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as tmp:
        model, path = prepare(args, Path(tmp))
        if args.long:
            result = {"long": bench_long(path, args.threads, args.long), "threads": args.threads,
                      "model": str(args.checkpoint or args.model or "random default-size model")}
            _report(result, args.json)
            return 0
        result = {"engine": bench_engine(path, args.threads, args.steps, rng)}
        if "guided" not in skip:
            result["guided"] = bench_guided(path, args.threads, args.steps, rng)
        if "torch" not in skip:
            result["torch"] = bench_torch(model, args.steps, rng)
        if "hf" not in skip:
            result["hf"] = bench_hf(model.config, args.steps, rng)
        if "recompute" not in skip:
            result["recompute"] = bench_recompute(model, rng)
    result.update(params=model.num_params(), threads=args.threads, engine_model=str(path) if args.model else
                  ("int8 export" if args.int8 else "fp32 export"),
                  model=str(args.checkpoint or args.model or "random default-size model"))
    _report(result, args.json)
    return 0


def _report(result: dict, as_json: bool) -> None:
    for name, figures in result.items():
        print(f"{name:10} {figures}")
    if "engine" in result:
        e = result["engine"]["1024"]["p50_ms"]
        if "guided" in result:
            print(f"guided vs engine   : {result['guided']['1024']['p50_ms'] / e:.1f}x the time per token at 1024 "
                  "(style guidance: two streams)")
        for other in ("torch", "hf", "recompute"):
            if other in result:
                print(f"engine vs {other:9}: {result[other]['1024']['p50_ms'] / e:.1f}x faster per token at 1024")
    if as_json:
        print(json.dumps(result))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    sys.exit(run(parser.parse_args()))
