"""`musebridge generate`: offline generation through the engine, file to file.

    musebridge generate OUT.mid --style bach --instruments strings organ --seconds 30 --seed 1
    musebridge generate OUT.mid --prompt IN.mid --seconds 20          (continue IN.mid)
    musebridge generate OUT.mid --melody IN.mid --instruments strings  (accompany IN.mid's melody)
    musebridge generate TAKES --num-outputs 8 --seed 1 --key "D minor" --top-k 40 --polyphony 4
    ... [--prompt-start S --prompt-seconds S] [--bpm B] [--png ROLL.png] [--wav OUT.wav] [--model MODEL.onnx]

The file keeps the prompt's or melody's tempo map, metre, channels, programs and track names, and gives the model's
part tracks of its own (engine/sessions/generate.py); from scratch it is written at --bpm in --metre (120, 4/4).
With
--num-outputs N > 1, OUT is a folder that gets take-1.mid .. take-N.mid, seeded --seed, --seed + 1, ... Session
parameters (sampling, key, range, following) are checked against the protocol's table
(musebridge/commands/limits.py), the same as `play` and `ctl set`.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from dataclasses import replace
from pathlib import Path

from musebridge.engine.errors import EngineError
from musebridge.engine.files import target_path
from musebridge.engine.inference.catalog import style_of
from musebridge.engine.render import audio, pianoroll
from musebridge.engine.sessions import generate as G
from musebridge.engine.sessions.session import Engine
from musebridge.engine.tokens.midifile import Conductor, MidiEvents, notes_from_events, read_midi
from musebridge.engine.tokens.retime import at_tempo, crop

from .generate_args import add_arguments, build_config, make_folder, outputs

__all__ = ["add_arguments", "run"]

def _source(args) -> MidiEvents | None:
    """The --prompt or --melody file (None: neither), cropped to --prompt-start / --prompt-seconds and played
    at --bpm when given."""
    path = args.prompt or args.melody
    if not path:
        return None
    midi = read_midi(path)
    events, conductor = list(midi.events), midi.conductor
    if args.prompt_start or args.prompt_seconds is not None:
        events, conductor = crop(events, conductor, args.prompt_start, args.prompt_seconds)
        if not notes_from_events(events):
            raise EngineError(f"{path} has no note from --prompt-start {args.prompt_start:g} s on (it ends at "
                              f"{midi.end_time:.1f} s); choose an earlier start")
    if args.bpm is not None:
        events, conductor = at_tempo(events, conductor, args.bpm)
    end = max((e.time for e in events), default=0.0)
    return MidiEvents(tuple(events), end, conductor, dict(midi.track_names))


def _take(engine: Engine, source: MidiEvents | None, args, config: G.GenerateConfig,
          scratch: Conductor | None) -> G.Generated:
    """One output: from scratch (written with the `scratch` tempo map), continuing the prompt, or under the
    melody."""
    if source is None:
        return G.from_scratch(engine, config, _progress(config.seconds, args.quiet), conductor=scratch)
    events = list(source.events)
    kept = {"conductor": source.conductor, "track_names": source.track_names}
    if args.melody:
        return G.accompaniment(engine, events, config, _progress(max(source.end_time, 1.0), args.quiet), **kept)
    return G.continuation(engine, events, config, _progress(config.seconds, args.quiet), **kept)


def _check_writable(*paths: str | None) -> None:
    for path in filter(None, paths):
        target_path(path)  # not over a device node, folder or pipe (engine/files.py)
        folder = Path(path).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise EngineError(f"{path}: cannot write there (folder {folder} is missing or read-only); "
                              "choose another output path")


def _progress(total: float, quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(done: float) -> None:
        filled = int(30 * min(done / total, 1.0))
        print(f"\rgenerating [{'#' * filled}{' ' * (30 - filled)}] {done:6.1f}/{total:.1f} s", end="",
              file=sys.stderr, flush=True)

    return show


def _seeds(args, count: int) -> list[int | None]:
    """--seed, --seed + 1, ... for each output; several outputs without --seed start at a random seed (printed,
    so that a take can be made again)."""
    if args.seed is None and count == 1:
        return [None]
    base = secrets.randbelow(1_000_000) if args.seed is None else args.seed
    return [base + i for i in range(count)]


def _write_takes(args, config: G.GenerateConfig, scratch: Conductor | None, paths: list[Path]) -> list[str]:
    """Generate and write each output (atomically, as soon as it is done); one line per file written."""
    source = _source(args)
    engine = Engine.load(args.model)
    style_of(config.style, engine.model.info.data)  # a style the model has no data for is refused here
    make_folder(paths)
    lines = []
    for path, seed in zip(paths, _seeds(args, len(paths)), strict=True):
        seeded = replace(config, sampling=replace(config.sampling, seed=seed))
        result = _take(engine, source, args, seeded, scratch)
        if not args.quiet:
            print(file=sys.stderr)
        result.write(path)
        parts = {name: notes_from_events(ev) for name, ev in result.parts.items()}
        named = f" (seed {seed})" if len(paths) > 1 else ""
        lines.append(f"wrote {path}{named}: " + ", ".join(f"{name} {len(n)} notes" for name, n in parts.items()))
        if args.png:
            pianoroll.draw(parts, args.png, title=f"{Path(path).name}  (style {args.style})")
            lines[-1] += f"; piano roll {args.png}"
        if len(paths) > 1:
            print(lines[-1], flush=True)
    return lines


def run(args: argparse.Namespace) -> int:
    try:
        config, scratch = build_config(args)
        paths = outputs(args)
        _check_writable(*(paths if len(paths) == 1 else ()), args.png)
        if args.wav:  # before the work: a WAV that cannot be made is known now, not after generating
            audio.check_writable(args.wav)
            audio.check_tools()
        if args.png:
            pianoroll.matplotlib_or_error()
        lines = _write_takes(args, config, scratch, paths)
        if args.wav:
            lines[-1] += f"; audio {audio.render_wav(paths[0], args.wav)}"
    except EngineError as exc:
        print(f"\nmusebridge generate: {exc}" if not args.quiet else f"musebridge generate: {exc}",
              file=sys.stderr)
        return 2
    if len(lines) == 1:
        print(lines[0])
    return 0
