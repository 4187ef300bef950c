"""`musebridge bench NAME ...`: run a benchmark script from the repository's bench/ folder.

Benchmarks are scripts (bench/<name>.py, each with add_arguments(parser) and run(args) -> int, also runnable as
`python bench/<name>.py`). They need the bench extra (torch, transformers) and a source checkout: bench/ is not
part of the installed package, so this command finds it next to the musebridge package.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
BENCHMARKS = {"decode": "per-token decode latency: engine vs torch eager vs HF generate vs recompute"}


def _load(name: str):
    path = BENCH_DIR / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: benchmark script not found; run benchmarks from a source checkout")
    spec = importlib.util.spec_from_file_location(f"musebridge_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="NAME", required=True)
    for name, help_ in BENCHMARKS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            _load(name).add_arguments(p)
        except FileNotFoundError:
            pass  # reported by run()


def run(args: argparse.Namespace) -> int:
    try:
        module = _load(args.bench)
    except FileNotFoundError as exc:
        print(f"musebridge bench: {exc}", file=sys.stderr)
        return 1
    return module.run(args)
