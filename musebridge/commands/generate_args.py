"""`musebridge generate`'s options, and the GenerateConfig, tempo map and output paths built from them.

Session parameters (sampling, key, pitch range, polyphony, following) come from the protocol's table through
musebridge/commands/limits.py, so they take the same values as in `play` and `ctl set`; the SessionConfig they make
is built by the server's own code (service.session_config). Every refusal is an EngineError of one line (exit 2).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from musebridge.engine.errors import EngineError
from musebridge.engine.inference.catalog import style_of
from musebridge.engine.server.protocol import PARAMS, ProtocolError
from musebridge.engine.server.service import session_config
from musebridge.engine.sessions import generate as G
from musebridge.engine.sessions.follow_config import FOLLOW_PARTS
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, instrument_index
from musebridge.engine.tokens.midifile import Conductor, MetreChange, TempoChange

from .limits import add_param

# Session parameters `generate` offers as options, and the defaults it uses where they differ from the engine's.
SAMPLING = ("temperature", "top_k", "top_p", "min_p", "seed", "best_of")
SHAPE = ("key", "pitch_low", "pitch_high", "polyphony")
FOLLOWING = ("follow_key", "key_strength")
DEFAULTS = {"temperature": G.GenerateConfig.sampling.temperature, "top_p": G.GenerateConfig.sampling.top_p,
            "top_k": 0, "min_p": 0.0, "best_of": 1}
MAX_OUTPUTS = 1000
TAKE_NAME = "take-{}.mid"  # the files in OUT when --num-outputs is above 1, numbered from 1 (padded: take-01)
BPM_RANGE = (10.0, 400.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="the MIDI file to write; with --num-outputs N above 1, a "
                        f"folder (made when missing) that gets {TAKE_NAME.format(1)} .. {TAKE_NAME.format('N')}")
    _add_source(parser.add_argument_group("what to start from (default: nothing, generate from scratch)"))
    music = parser.add_argument_group("the music")
    music.add_argument("--style", default="unknown", help="a style the model has data for, any case "
                       "(`musebridge styles` lists them; default %(default)s: the model chooses)")
    music.add_argument("--instruments", nargs="+", metavar="NAME", help=f"what the model plays, from: "
                       f"{', '.join(INSTRUMENT_NAMES)} (default: piano; with --prompt, the prompt's instruments)")
    music.add_argument("--seconds", type=float, default=20.0, help="seconds to generate from scratch or after the "
                       "prompt (default %(default)s; under a --melody, the melody's length)")
    music.add_argument("--bpm", type=float, help="the output's tempo, quarter notes per minute "
                       f"({BPM_RANGE[0]:g}..{BPM_RANGE[1]:g}): from scratch the file's tempo (default 120); with "
                       "--prompt or --melody, the source is played at this tempo from its start, its tempo "
                       "changes kept in proportion (default: its own tempo)")
    music.add_argument("--metre", metavar="N/D", help="from scratch: the file's time signature (default 4/4; a "
                       "prompt or melody keeps its own)")
    add_param(music, "context")
    add_param(music, "style_guidance")
    sampling = parser.add_argument_group("sampling (the same ranges as `play` and `ctl set`)")
    for name in SAMPLING:
        add_param(sampling, name, DEFAULTS.get(name))
    shape = parser.add_argument_group("constraints (guaranteed: the model cannot break them)")
    for name in SHAPE:
        add_param(shape, name, metavar="KEY" if name == "key" else None)
    following = parser.add_argument_group(
        "following the prompt or melody (engine/sessions/follow.py; on by default)")
    following.add_argument("--no-follow", action="store_true", help="do not follow the source at all")
    for name in FOLLOWING:
        add_param(following, name, metavar="KEY" if name == "follow_key" else None)
    following.add_argument("--follow-off", nargs="+", metavar="PART", choices=FOLLOW_PARTS,
                           help=f"parts of following to switch off: {', '.join(FOLLOW_PARTS)} (default: none)")
    _add_output(parser.add_argument_group("output"))


def _add_source(group) -> None:
    form = group.add_mutually_exclusive_group()
    form.add_argument("--prompt", metavar="IN.mid", help="continue this file")
    form.add_argument("--melody", metavar="IN.mid", help="accompany this file's melody")
    group.add_argument("--prompt-start", type=float, default=0.0, metavar="SECONDS", help="use --prompt or "
                       "--melody from this many seconds in; the tempo and metre there, and the programs set "
                       "before, are kept (default %(default)s; start on a bar line to keep the bars)")
    group.add_argument("--prompt-seconds", type=float, metavar="SECONDS", help="use only this many seconds of "
                       "--prompt or --melody; notes still sounding there end there (default: to its end)")


def _add_output(group) -> None:
    group.add_argument("--num-outputs", type=int, default=1, metavar="N", help="how many different outputs, "
                       f"seeded --seed, --seed + 1, ... (1..{MAX_OUTPUTS}; default %(default)s; above 1 without "
                       "--seed, the first seed is random and printed)")
    group.add_argument("--model", metavar="MODEL.onnx", help="model file (default: the bundled model)")
    group.add_argument("--png", metavar="ROLL.png", help="also draw a piano roll (one output only)")
    group.add_argument("--wav", metavar="OUT.wav", help="also render audio (needs fluidsynth + a GM soundfont; "
                       "one output only)")
    group.add_argument("--quiet", action="store_true", help="no progress bar")


def _params(args) -> dict:
    """The session parameters given on the command line, by their protocol names."""
    params = {name: getattr(args, name) for name in (*SAMPLING, *SHAPE, *FOLLOWING, "context", "style_guidance")
              if getattr(args, name) is not None and name != "best_of"}
    if args.no_follow:
        params["follow"] = False
    if args.follow_off:
        params["follow_off"] = list(args.follow_off)
    return {"style": args.style, **params}


def build_config(args) -> tuple[G.GenerateConfig, Conductor | None]:
    """The GenerateConfig of the command line, and the tempo map a file from scratch is written with (None: 120
    bpm, 4/4). EngineError (one line) on values that do not fit together."""
    style = style_of(args.style, None)  # any case; checked against the model's data once it is loaded
    if args.pitch_low is not None and args.pitch_high is not None and args.pitch_low > args.pitch_high:
        raise EngineError(f"--pitch-low {args.pitch_low} is above --pitch-high {args.pitch_high}; swap them")
    if not 0 < args.seconds <= 3600:
        raise EngineError(f"--seconds must be within 0..3600, got {args.seconds:g}")
    _check_source_options(args)
    try:
        instruments = tuple(instrument_index(n) for n in args.instruments) if args.instruments else None
        session = session_config(_params(args))
    except (ValueError, ProtocolError) as exc:
        raise EngineError(str(exc)) from None
    ranged = args.pitch_low is not None or args.pitch_high is not None
    pitch_range = (args.pitch_low or 0, 127 if args.pitch_high is None else args.pitch_high) if ranged else None
    config = G.GenerateConfig(style=style, instruments=instruments, seconds=args.seconds,
                              sampling=session.sampling,
                              scale=session.scale, pitch_range=pitch_range, max_polyphony=session.max_polyphony,
                              follow=session.follow, best_of=args.best_of, context=session.context,
                              style_guidance=session.style_guidance)
    return config, _conductor(args)


def _check_source_options(args) -> None:
    if args.bpm is not None and not BPM_RANGE[0] <= args.bpm <= BPM_RANGE[1]:
        raise EngineError(f"--bpm must be within {BPM_RANGE[0]:g}..{BPM_RANGE[1]:g}, got {args.bpm:g}")
    if (args.prompt or args.melody) and args.metre is not None:
        raise EngineError("--metre applies from scratch; a --prompt or --melody keeps its own metre")
    cropped = args.prompt_start != 0.0 or args.prompt_seconds is not None
    if cropped and not (args.prompt or args.melody):
        raise EngineError("--prompt-start and --prompt-seconds crop a --prompt or --melody; give one")
    if args.prompt_start < 0:
        raise EngineError(f"--prompt-start must be 0 or more seconds, got {args.prompt_start:g}")
    if args.prompt_seconds is not None and not args.prompt_seconds > 0:
        raise EngineError(f"--prompt-seconds must be above 0 seconds, got {args.prompt_seconds:g}")


def _conductor(args) -> Conductor | None:
    """The tempo and metre a file from scratch is written with, from --bpm and --metre (None: neither given,
    or a source whose own map is kept)."""
    if args.prompt or args.melody or args.bpm is None and args.metre is None:
        return None
    bpm = 120.0 if args.bpm is None else args.bpm
    numerator, _, denominator = (args.metre or "4/4").partition("/")
    if not (numerator.isdigit() and denominator.isdigit() and 1 <= int(numerator) <= 32
            and int(denominator) in (1, 2, 4, 8, 16, 32)):
        raise EngineError(f"--metre must look like 3/4 or 6/8 (1-32 over 1, 2, 4 .. 32), got {args.metre!r}")
    tempo = round(60e6 / bpm)
    return Conductor((TempoChange(0.0, tempo),), (MetreChange(0.0, int(numerator), int(denominator)),))


def outputs(args) -> list[Path]:
    """The files to write: OUT, or with --num-outputs N above 1, N takes in the folder OUT (make_folder makes
    it when missing). EngineError when they cannot be written."""
    count = args.num_outputs
    if not 1 <= count <= MAX_OUTPUTS:
        raise EngineError(f"--num-outputs must be within 1..{MAX_OUTPUTS}, got {count}")
    if count == 1:
        return [Path(args.out)]
    if args.png or args.wav:
        raise EngineError("--png and --wav make one file; with --num-outputs above 1, pick a take and make it "
                          "again with its --seed and --png / --wav")
    if args.seed is not None and args.seed + count - 1 > PARAMS["seed"].high:
        raise EngineError(f"--seed {args.seed} + --num-outputs {count} passes the largest seed; choose a smaller")
    folder = Path(args.out)
    if folder.suffix.lower() in (".mid", ".midi") or folder.is_file():
        raise EngineError(f"with --num-outputs {count}, OUT is a folder for the takes, got {args.out!r}; "
                          "give a folder name")
    _check_folder(folder if folder.is_dir() else folder.parent or Path("."), args.out)
    width = len(str(count))
    return [folder / TAKE_NAME.format(f"{i + 1:0{width}d}") for i in range(count)]


def _check_folder(folder: Path, out: str) -> None:
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise EngineError(f"{out}: cannot write there (folder {folder} is missing or read-only); choose another "
                          "output path")


def make_folder(paths: list[Path]) -> None:
    """Make the folder of the output files when it is missing (its parent exists: outputs() checked)."""
    try:
        paths[0].parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise EngineError(f"{paths[0].parent}: cannot make the folder ({exc.strerror}); choose another") from None
