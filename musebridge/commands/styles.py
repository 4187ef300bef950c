"""`musebridge styles`: the model's styles and instrument classes, with the training data behind each.

    musebridge styles [--model MODEL.onnx] [--json]

Styles with no training pieces are listed apart: generate, play and the server refuse them
(engine/inference/catalog.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from musebridge.engine.errors import EngineError
from musebridge.engine.inference.catalog import NO_STYLE, Catalog
from musebridge.engine.inference.model_file import choose_providers, open_session


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODEL.onnx", help="model file (default: the bundled model)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _table(title: str, unit: str, counts: dict[str, int]) -> list[str]:
    total = sum(counts.values()) or 1
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    lines = [f"{title:12} {unit:>10}  share"]
    lines += [f"{name:12} {n:>10,}  {n / total:6.1%}" for name, n in rows if n > 0]
    empty = [name for name, n in rows if n == 0]
    if empty:
        lines.append(f"no data: {', '.join(empty)}")
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        _, info = open_session(args.model, choose_providers("cpu"))
    except EngineError as exc:
        print(f"musebridge styles: {exc}", file=sys.stderr)
        return 2
    catalog = Catalog.from_data(info.data)
    if args.json:
        print(json.dumps({"model": info.path, "styles": catalog.styles, "instruments": catalog.instruments,
                          "styles_accepted": catalog.styles_with_data()}))
        return 0
    print(f"model: {info.path}")
    if catalog.styles is None:
        print("styles: this model does not record its training data; every style of the vocabulary is accepted")
    else:
        print("\n".join(_table("style", "pieces", {s: n for s, n in catalog.styles.items() if s != NO_STYLE})))
        print(f"{NO_STYLE!r} (no style: the model chooses) is always accepted; names are case-insensitive")
    print()
    if catalog.instruments is None:
        print("instrument classes: this model file does not record note-ons per class (models trained now do); "
              "`musebridge corpus stats` shows a corpus's")
    else:
        print("\n".join(_table("instrument", "note-ons", catalog.instruments)))
    return 0
