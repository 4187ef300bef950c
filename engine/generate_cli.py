"""`musebridge generate`: offline generation through the engine, file to file.

    musebridge generate OUT.mid --style bach --instruments strings organ --seconds 30 --seed 1
    musebridge generate OUT.mid --prompt IN.mid --seconds 20          (continue IN.mid)
    musebridge generate OUT.mid --melody IN.mid --instruments strings  (accompany IN.mid's melody)
    ... [--png ROLL.png] [--wav OUT.wav] [--model MODEL.onnx] [--quiet]

The file keeps the prompt's or melody's tempo map, metre, channels, programs and track names, and gives the model's
part tracks of its own (engine/generate.py); from scratch it is written at --bpm in --metre (120, 4/4).
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
from .midifile import Conductor, MetreChange, TempoChange, notes_from_events, read_midi
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
    parser.add_argument("--bpm", type=float, help="from scratch: the file's tempo (default 120)")
    parser.add_argument("--metre", metavar="N/D", help="from scratch: the file's time signature (default 4/4)")
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


def _conductor(args) -> Conductor | None:
    """The tempo and metre a file from scratch is written with, from --bpm and --metre (None: neither given)."""
    if args.bpm is None and args.metre is None:
        return None
    if args.prompt or args.melody:
        raise EngineError("--bpm and --metre apply from scratch; a --prompt or --melody keeps its own tempo map")
    bpm = 120.0 if args.bpm is None else args.bpm
    if not 10 <= bpm <= 400:
        raise EngineError(f"--bpm must be within 10..400, got {bpm:g}")
    numerator, _, denominator = (args.metre or "4/4").partition("/")
    if not (numerator.isdigit() and denominator.isdigit() and 1 <= int(numerator) <= 32
            and int(denominator) in (1, 2, 4, 8, 16, 32)):
        raise EngineError(f"--metre must look like 3/4 or 6/8 (1-32 over 1, 2, 4 .. 32), got {args.metre!r}")
    tempo = round(60e6 / bpm)
    return Conductor((TempoChange(0.0, tempo),), (MetreChange(0.0, int(numerator), int(denominator)),))


def _generate(args, config: G.GenerateConfig, conductor: Conductor | None) -> G.Generated:
    """Read the prompt or melody (with its tempo map and track names), load the model and generate."""
    source = read_midi(args.prompt or args.melody) if args.prompt or args.melody else None
    engine = Engine.load(args.model)
    if source is None:
        return G.from_scratch(engine, config, _progress(args.seconds, args.quiet), conductor=conductor)
    events = list(source.events)
    kept = {"conductor": source.conductor, "track_names": source.track_names}
    if args.melody:
        total = max((e.time for e in events), default=1.0)
        return G.accompaniment(engine, events, config, _progress(total, args.quiet), **kept)
    return G.continuation(engine, events, config, _progress(args.seconds, args.quiet), **kept)


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
        conductor = _conductor(args)
        _check_writable(args.out, args.png, args.wav)
        if args.png:
            pianoroll.matplotlib_or_error()
        result = _generate(args, config, conductor)
        if not args.quiet:
            print(file=sys.stderr)
        result.write(args.out)
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
