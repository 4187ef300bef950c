"""`musebridge tokens IN.mid [--roundtrip OUT.mid] [--json]`: look at how a MIDI file tokenizes."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter

from musebridge.engine.errors import EngineError
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES
from musebridge.engine.tokens.midifile import decode_to_file, encode_file, notes_from_events, read_midi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("midi", metavar="IN.mid", help="MIDI file to tokenize")
    parser.add_argument("--roundtrip", metavar="OUT.mid", help="decode the tokens again and write them here")
    parser.add_argument("--style", default="unknown", help=f"style token of the prefix ({', '.join(V.STYLES)})")
    parser.add_argument("--show", type=int, default=40, metavar="N", help="print the first N tokens (0: none)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")


def summarize(path: str, style: str) -> dict:
    """Statistics of a file's tokenization (what `musebridge tokens` prints)."""
    encoded = encode_file(path, style)
    kinds = Counter(V.token_kind(t)[0] for t in encoded.tokens)
    return {
        "file": str(path),
        "notes": encoded.notes,
        "tokens": len(encoded.tokens),
        "tokens_per_note": round(len(encoded.tokens) / encoded.notes, 3) if encoded.notes else None,
        "duration_s": round(encoded.duration, 3),
        "instruments": [INSTRUMENT_NAMES[i] for i in encoded.instruments],
        "token_kinds": dict(sorted(kinds.items())),
        "vocab": {"version": V.VOCAB_VERSION, "size": V.VOCAB_SIZE, "sha256": V.vocab_info().sha256},
        "_tokens": list(encoded.tokens),
    }


def _roundtrip(tokens: list[int], out: str) -> dict:
    events = decode_to_file(tokens, out)
    back = read_midi(out)
    return {"file": out, "notes": len(notes_from_events(back.events, back.end_time)), "messages": len(events)}


def run(args: argparse.Namespace) -> int:
    try:
        if args.style not in V.STYLES:
            raise EngineError(f"unknown style {args.style!r}; choose from: {', '.join(V.STYLES)}")
        info = summarize(args.midi, args.style)
        tokens = info.pop("_tokens")
        if args.roundtrip:
            info["roundtrip"] = _roundtrip(tokens, args.roundtrip)
    except EngineError as exc:
        print(f"musebridge tokens: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info))
        return 0
    print(f"file         {info['file']}")
    print(f"duration     {info['duration_s']:.2f} s")
    print(f"notes        {info['notes']}")
    per_note = f"{info['tokens_per_note']} per note" if info["notes"] else "no notes"
    print(f"tokens       {info['tokens']}  ({per_note})")
    print(f"instruments  {', '.join(info['instruments']) or '(none)'}")
    print("token kinds  " + ", ".join(f"{k} {n}" for k, n in info["token_kinds"].items()))
    print(f"vocabulary   v{V.VOCAB_VERSION}, {V.VOCAB_SIZE} tokens, sha256 {info['vocab']['sha256'][:12]}")
    if args.show:
        print("first tokens " + " ".join(V.describe(t) for t in tokens[: args.show]))
    if args.roundtrip:
        rt = info["roundtrip"]
        print(f"round trip   wrote {rt['file']}: {rt['notes']} notes")
    return 0
