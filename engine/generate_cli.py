"""`musebridge generate`: offline generation through the engine, file to file.

    musebridge generate OUT.mid --style bach --instruments strings organ --seconds 30 --seed 1
    musebridge generate OUT.mid --prompt IN.mid --seconds 20          (continue IN.mid)
    musebridge generate OUT.mid --melody IN.mid --instruments strings  (accompany IN.mid's melody)
    ... [--png ROLL.png] [--wav OUT.wav] [--model MODEL.onnx] [--quiet]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import generate as G
from . import pianoroll
from . import vocab as V
from .errors import EngineError
from .instruments import INSTRUMENT_NAMES, instrument_index
from .midifile import notes_from_events, read_midi, write_midi
from .sampler import SamplingConfig
from .session import Engine

SOUNDFONTS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2",
              "/usr/share/soundfonts/default.sf2", "/opt/homebrew/share/soundfonts/default.sf2")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT.mid", help="MIDI file to write")
    form = parser.add_mutually_exclusive_group()
    form.add_argument("--prompt", metavar="IN.mid", help="continue this file")
    form.add_argument("--melody", metavar="IN.mid", help="accompany this file's melody")
    parser.add_argument("--style", default="unknown", help=f"one of: {', '.join(V.STYLES)}")
    parser.add_argument("--instruments", nargs="+", metavar="NAME", help=f"from: {', '.join(INSTRUMENT_NAMES)}")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds to generate (scratch, continue)")
    parser.add_argument("--seed", type=int, help="same seed, same music")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=0.98)
    parser.add_argument("--model", metavar="MODEL.onnx", help="model file (default: the bundled model)")
    parser.add_argument("--png", metavar="ROLL.png", help="also draw a piano roll")
    parser.add_argument("--wav", metavar="OUT.wav", help="also render audio (needs fluidsynth + a GM soundfont)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args) -> G.GenerateConfig:
    if args.style not in V.STYLES:
        raise EngineError(f"unknown style {args.style!r}; choose from: {', '.join(V.STYLES)}")
    try:
        instruments = tuple(instrument_index(n) for n in args.instruments) if args.instruments else None
        sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p, seed=args.seed)
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    if not 0 < args.seconds <= 3600:
        raise EngineError(f"--seconds must be within 0..3600, got {args.seconds}")
    return G.GenerateConfig(style=args.style, instruments=instruments, seconds=args.seconds, sampling=sampling)


def _check_writable(*paths: str | None) -> None:
    for path in filter(None, paths):
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


def _wav(mid: str, wav: str) -> str:
    synth = shutil.which("fluidsynth")
    font = next((f for f in SOUNDFONTS if Path(f).is_file()), None)
    if not synth or not font:
        return ("no audio: --wav needs fluidsynth and a General MIDI soundfont (Debian/Ubuntu: sudo apt-get "
                "install fluidsynth fluid-soundfont-gm; macOS: brew install fluid-synth and a .sf2 file)")
    tmp = f"{wav}.tmp.wav"
    try:
        subprocess.run([synth, "-ni", "-g", "0.8", "-F", tmp, "-r", "44100", font, mid], check=True,
                       capture_output=True, timeout=600)
        os.replace(tmp, wav)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"no audio: fluidsynth failed ({exc})"
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return f"wrote {wav}"


def run(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        _check_writable(args.out, args.png, args.wav)
        source = args.prompt or args.melody
        events = list(read_midi(source).events) if source else None
        if args.png:
            pianoroll.matplotlib_or_error()
        engine = Engine.load(args.model)
        if args.melody:
            total = max((e.time for e in events), default=1.0)
            result = G.accompaniment(engine, events, config, _progress(total, args.quiet))
        elif args.prompt:
            result = G.continuation(engine, events, config, _progress(args.seconds, args.quiet))
        else:
            result = G.from_scratch(engine, config, _progress(args.seconds, args.quiet))
        if not args.quiet:
            print(file=sys.stderr)
        write_midi(result.events(), args.out)
        parts = {name: notes_from_events(ev) for name, ev in result.parts.items()}
        if args.png:
            pianoroll.draw(parts, args.png, title=f"{Path(args.out).name}  (style {args.style})")
    except EngineError as exc:
        print(f"\nmusebridge generate: {exc}" if not args.quiet else f"musebridge generate: {exc}",
              file=sys.stderr)
        return 2
    summary = ", ".join(f"{name} {len(notes)} notes" for name, notes in parts.items())
    print(f"wrote {args.out}: {summary}" + (f"; piano roll {args.png}" if args.png else ""))
    if args.wav:
        print(_wav(args.out, args.wav))
    return 0
