"""`musebridge judge`: generate from held-out prompts in each mode and compare the model with the real music.

    musebridge judge                                   the bundled model on the corpus test split (data/corpus)
    musebridge judge songs/ --style pop                any MIDI files or folders as prompts
    musebridge judge --model mine.onnx --prompts 8 --modes continue accompany --json out.json --png out.png

Needs no torch: numpy, onnxruntime, mido and matplotlib (for the PNG). See docs/quality.md for the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from musebridge.engine.errors import EngineError, MidiFileError
from musebridge.engine.files import atomic_write
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.follow_config import FOLLOW_PARTS, FollowConfig
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.midifile import read_midi
from musebridge.export.errors import ExportError
from musebridge.export.quality.judge import MODES, JudgeConfig
from musebridge.export.quality.prompts import RENDERINGS

ROWS = {  # figure -> label in the printed table
    "in_key": "in-key share", "dissonance": "dissonance (own notes)", "polyphony": "polyphony (notes at once)",
    "polyphony_ratio": "polyphony / prompt's",
    "long_share": "notes over 4 s", "never_released": "never released", "ioi_overlap": "IOI overlap with prompt",
    "silence": "silence share", "density_ratio": "density / prompt's", "centre_distance": "pitch centre distance",
    "pedal_per_min": "pedal presses per minute", "density_follow": "density follows (r)",
    "register_follow": "register follows (r)", "dynamics_follow": "dynamics follow (r)",
    "consonance": "consonance with melody", "onset_alignment": "onsets within 50 ms",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="*", metavar="MIDI", help="MIDI files or folders as prompts "
                        "(default: the corpus test split)")
    parser.add_argument("--data", default="data/corpus", help="corpus folder: test split prompts, train split "
                        "for the style classifier (default: %(default)s)")
    parser.add_argument("--model", metavar="MODEL.onnx", help="model file (default: the bundled model)")
    parser.add_argument("--style", default="unknown", help="style token for MIDI files given (default: unknown)")
    parser.add_argument("--prompts", type=int, default=JudgeConfig.prompts,
                        help="prompts per mode and rendering (default: %(default)s)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="modes to judge (default: all)")
    parser.add_argument("--renderings", nargs="+", choices=RENDERINGS, default=list(RENDERINGS),
                        help="prompts as notated and/or played live-like on piano (default: both)")
    parser.add_argument("--no-follow", action="store_true", help="the engine does not follow the player at all")
    parser.add_argument("--follow-off", nargs="+", default=[], choices=FOLLOW_PARTS, metavar="PART",
                        help=f"switch these parts of following off: {', '.join(FOLLOW_PARTS)}")
    parser.add_argument("--best-of", type=int, default=1, metavar="N",
                        help="continue, respond and accompany plan each chunk as the likeliest of N candidates "
                        "under the engine's constraints and following (default: %(default)s, at most 16)")
    parser.add_argument("--style-guidance", type=float, default=JudgeConfig.style_guidance, metavar="S",
                        help="the style mode's pieces with this style guidance (1: none; above 1 needs a model "
                        "trained with --style-drop; default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="same seed, same figures (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=SamplingConfig.temperature,
                        help="sampling temperature (default: %(default)s)")
    parser.add_argument("--top-p", type=float, default=SamplingConfig.top_p,
                        help=f"nucleus sampling mass (default: {SamplingConfig.top_p}: off, as in play)")
    parser.add_argument("--json", metavar="OUT.json", default="judge.json", help="write every figure here "
                        "(default: %(default)s)")
    parser.add_argument("--png", metavar="OUT.png", default="judge.png", help="write the picture here "
                        "(default: %(default)s; '' for none)")
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _config(args) -> JudgeConfig:
    if args.prompts < 2:
        raise ExportError(f"--prompts {args.prompts}: give at least 2 (chance pairs each prompt with another)")
    try:
        sampling = SamplingConfig(temperature=args.temperature, top_p=args.top_p)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    if not 1 <= args.best_of <= 16:
        raise ExportError(f"--best-of {args.best_of}: give 1 to 16")
    if args.style not in V.STYLES:
        raise ExportError(f"unknown style {args.style!r}; choose from: {', '.join(V.STYLES)}")
    follow = FollowConfig(enabled=not args.no_follow,
                          **{part: (False if part != "key" else "off") for part in args.follow_off})
    return JudgeConfig(prompts=args.prompts, modes=tuple(args.modes), renderings=tuple(args.renderings),
                       sampling=sampling, follow=follow, best_of=args.best_of, seed=args.seed,
                       style_guidance=args.style_guidance)


def _sources(args):
    from musebridge.export.quality import prompts as P  # noqa: PLC0415

    corpus = Path(args.data)
    train = P.corpus_sources(corpus, "train", args.seed) if (corpus / "midi").is_dir() else None
    if args.inputs:
        usable = []
        for source in P.file_sources(args.inputs, args.style):
            try:
                read_midi(source.path)
                usable.append(source)
            except MidiFileError as exc:
                print(f"musebridge judge: skipped {exc}", file=sys.stderr)
        if len(usable) < 2:
            raise ExportError(f"{len(usable)} usable MIDI file(s) in {' '.join(args.inputs)}; give at least 2")
        return {"files": usable}, train
    return P.corpus_sources(corpus, "test", args.seed), train


def _progress(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(stage: str, done: int, total: int) -> None:
        print(f"\rjudge: {stage:<26} {done + 1:>3}/{total:<3}", end="", file=sys.stderr, flush=True)

    return show


def _fmt(value) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def tables(result: dict) -> str:
    """The judge's figures as text: one table per mode and rendering, then instruments and style."""
    lines = []
    for mode, runs in result["modes"].items():
        for rendering, run in runs.items():
            title = f"{mode}, {rendering} ({len(run['pieces'])} prompts)"
            lines.append(f"\n{title:<40}{'real':>9}{'model':>9}{'chance':>9}")
            for name, row in run["table"].items():
                lines.append(f"  {ROWS.get(name, name):<38}" + "".join(f"{_fmt(row.get(k)):>9}"
                                                                        for k in ("real", "model", "chance")))
    for entry in result.get("instruments", []):
        shares = ", ".join(f"{n} {s:.2f}" for n, s in entry["note_shares"].items())
        lines.append(f"instruments {'+'.join(entry['set']):<22} playing {entry['playing_share']:.2f}; "
                     f"note shares: {shares}")
    style = result.get("style", {})
    for name, row in style.get("per_style", {}).items():
        named = ", ".join(f"{other} {count}" for other, count in row.get("model_named", {}).items())
        lines.append(f"style {name:<14} recognised: real {_fmt(row['real'])} (train, cross-validated "
                     f"{_fmt(row.get('real_cv'))})  model {_fmt(row['model'])}  chance {_fmt(row['chance'])}; "
                     f"the model's pieces named: {named}")
        if row.get("furthest"):
            lines.append("  furthest from the real pieces: " + ", ".join(
                f"{f['feature']} {f['real']:.2f} -> {f['model']:.2f} ({f['z']:+.1f} sd)" for f in row["furthest"]))
    lines.append(f"\njudged in {result['seconds']:.0f} s")
    return "\n".join(lines)


def strict(value):
    """The value with every NaN or infinity replaced by None, so the JSON is strict (RFC 8259)."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_json(result: dict, path: str) -> None:
    """Write atomically: the file appears complete or not at all."""
    text = json.dumps(strict(result), indent=1, allow_nan=False)
    atomic_write(path, lambda tmp: tmp.write_text(text), ExportError)

def run(args: argparse.Namespace) -> int:
    from musebridge.engine.sessions.session import Engine  # noqa: PLC0415
    from musebridge.export.quality.judge import judge  # noqa: PLC0415

    try:
        config = _config(args)
        if args.png:
            from musebridge.engine.render.pianoroll import matplotlib_or_error  # noqa: PLC0415

            matplotlib_or_error()
        test, train = _sources(args)
        engine = Engine.load(args.model)
        result = judge(engine, test, config, train, cache_dir=Path(args.data) / "cache" if train else None,
                       progress=_progress(args.quiet))
        result["model"] = args.model or "bundled"
        if not args.quiet and sys.stderr.isatty():
            print(file=sys.stderr)
        print(tables(result))
        if args.json:
            _write_json(result, args.json)
            print(f"wrote {args.json}")
        if args.png:
            from musebridge.export.quality.plots import draw  # noqa: PLC0415

            draw(result, args.png)
            print(f"wrote {args.png}")
    except (ExportError, EngineError, OSError) as exc:
        print(f"musebridge judge: {exc}", file=sys.stderr)
        return 2
    return 0

