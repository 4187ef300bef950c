"""Codec speed: files -> tokens in notes per second, and the live path in microseconds per message / token.

    .venv/bin/python bench/codec.py [--repeat N] [--json]

Files: every MIDI file shipped in the music21 package (midi/testPrimitive, omr) plus a few corpus scores that
music21 writes to MIDI once into a temporary folder. Each method tokenizes all files `--repeat` times; the best
pass counts (least disturbed by other processes). Notes are the note-ons the codec found, the same count for
every method. Methods, side by side in one run:

- musebridge encode_file: mido parsing + tempo map + EventEncoder (what the corpus builder runs).
- musebridge EventEncoder only: the same, with the files already read (the codec's own cost).
- musebridge read_midi only: mido parsing, track merge and tempo map, no tokens.
- mido MidiFile(path) only: parsing alone, the floor of any tokenizer built on mido.
- miditok REMI (if installed): `tokenizer.encode(path)`, parsing by symusic (C++) included.
- symusic Score only (if installed): miditok's parsing floor.

Live: every message of the files through EventEncoder.feed, and every token through EventDecoder.feed, one at a
time as a port or the model would deliver them; p50 / p99 of the per-call time (perf_counter_ns around each call,
which adds ~0.05 us). miditok has no streaming API, so it has no live figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import mido
import numpy as np
from musebridge.engine.tokens.codec import EventDecoder, EventEncoder
from musebridge.engine.tokens.midifile import encode_file, read_midi

CORPUS = {  # corpus score -> music21.corpus.parse keywords
    "bach/bwv66.6": {},
    "bach/bwv4.8": {},
    "palestrina/Agnus_02": {},
    "essenFolksong/altdeu10": {"number": 1},
}


def music21_files(folder: Path) -> list[Path]:
    """The MIDI files shipped in music21, plus corpus scores written to `folder`."""
    import music21

    root = Path(music21.__file__).parent
    files = sorted((root / "midi" / "testPrimitive").glob("*.mid")) + sorted(root.rglob("omr/*.mid"))
    for name, kw in CORPUS.items():
        path = folder / (name.replace("/", "_") + ".mid")
        music21.corpus.parse(name, **kw).write("midi", fp=str(path))
        files.append(path)
    return files


def best_pass(fn, files: list[Path], repeat: int) -> float:
    """Seconds of the fastest of `repeat` passes of fn over all files."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        for path in files:
            fn(path)
        times.append(time.perf_counter() - start)
    return min(times)


def encoder_only(midis):
    def run(index):
        midi = midis[index]
        encoder = EventEncoder()
        for time_s, msg in midi.events:
            encoder.feed(time_s, msg)
        encoder.finish(midi.end_time)

    return run


def miditok_methods() -> dict:
    """miditok REMI and symusic parsing, or {} when miditok is not installed."""
    try:
        import miditok
        import symusic
    except ImportError:
        return {}
    config = miditok.TokenizerConfig(num_velocities=32, use_programs=True, use_sustain_pedals=True)
    remi = miditok.REMI(config)
    return {"miditok REMI encode(path)": remi.encode, "symusic Score(path) only": symusic.Score}


def file_speeds(files: list[Path], notes: int, repeat: int) -> dict[str, float]:
    """Method -> notes per second over all files."""
    midis = [read_midi(p) for p in files]
    methods = {
        "musebridge encode_file": encode_file,
        "musebridge EventEncoder only": encoder_only(midis),
        "musebridge read_midi only": read_midi,
        "mido MidiFile(path) only (floor)": mido.MidiFile,
        **miditok_methods(),
    }
    out = {}
    for name, fn in methods.items():
        items = list(range(len(files))) if name.endswith("EventEncoder only") else files
        out[name] = round(notes / best_pass(fn, items, repeat))
    return out


def percentiles(ns: list[int]) -> dict[str, float]:
    us = np.asarray(ns) / 1e3
    return {"p50_us": round(float(np.percentile(us, 50)), 2), "p99_us": round(float(np.percentile(us, 99)), 2),
            "count": len(ns)}


def live_latency(files: list[Path]) -> dict[str, dict]:
    """Per-call time of EventEncoder.feed (per message) and EventDecoder.feed (per token)."""
    clock = time.perf_counter_ns
    encode_ns, decode_ns = [], []
    for path in files:
        encoder, tokens = EventEncoder(), []
        for time_s, msg in read_midi(path).events:
            start = clock()
            out = encoder.feed(time_s, msg)
            encode_ns.append(clock() - start)
            tokens += out
        decoder = EventDecoder()
        for token in tokens:
            start = clock()
            decoder.feed(token)
            decode_ns.append(clock() - start)
    return {"EventEncoder.feed per message": percentiles(encode_ns),
            "EventDecoder.feed per token": percentiles(decode_ns)}


def machine() -> dict:
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    versions = {}
    for package in ("mido", "miditok", "symusic"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), **versions}


def run(repeat: int) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        files = music21_files(Path(folder))
        notes = sum(encode_file(p).notes for p in files)
        return {
            "machine": machine(),
            "files": len(files),
            "notes": notes,
            "repeat": repeat,
            "notes_per_s": file_speeds(files, notes, repeat),
            "live": live_latency(files),
        }


def print_report(result: dict) -> None:
    m = result["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu']}, Python {m['python']}")
    print(f"packages: mido {m['mido']}, miditok {m['miditok']}, symusic {m['symusic']}")
    print(f"files: {result['files']} ({result['notes']} notes), best of {result['repeat']} passes")
    for name, speed in result["notes_per_s"].items():
        print(f"  {name:32s} {speed:>10,d} notes/s")
    if not any(name.startswith("miditok") for name in result["notes_per_s"]):
        print("  (miditok not installed: compare with the mido floor above)")
    for name, fig in result["live"].items():
        print(f"  {name:32s} p50 {fig['p50_us']:6.2f} us   p99 {fig['p99_us']:6.2f} us   ({fig['count']} calls)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/codec.py", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="passes over the files per method (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    result = run(max(1, args.repeat))
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
