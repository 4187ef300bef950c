"""`musebridge corpus build|stats`: build the training corpus from the music21 corpus (and MIDI folders), and
summarize it. See docs/corpus.md."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from musebridge.engine.tokens import vocab as V
from musebridge.export.band import MMA_HELP, BandConfig, mma_available
from musebridge.export.corpus import CorpusError, build, default_root, stale_tokens, stats
from musebridge.export.corpus_build import BuildConfig
from musebridge.export.live_corpus import build_live


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="convert the music21 corpus (and --midi folders) into MIDI + token files")
    _root(b)
    b.add_argument("--styles", nargs="+", metavar="STYLE", help="only these styles (default: all)")
    b.add_argument(
        "--midi",
        action="append",
        default=[],
        metavar="DIR",
        help="add a folder of MIDI files; style from each file's sub-folder (repeatable)",
    )
    b.add_argument("--no-music21", action="store_true", help="leave the music21 corpus out (only --midi)")
    b.add_argument("--limit", type=int, metavar="N", help="at most N pieces per style (quick builds, tests)")
    b.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes (default: %(default)s, the number of CPUs)",
    )
    b.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds of work allowed per piece (default: %(default)s)",
    )
    b.add_argument(
        "--max-minutes",
        type=float,
        default=20.0,
        metavar="M",
        help="skip pieces longer than M minutes of music (default: %(default)s)",
    )
    _material(b)
    b.add_argument("--retry-failed", action="store_true", help="try pieces that failed before again")
    b.add_argument("--force", action="store_true", help="convert every piece again, even if its .mid exists")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    s = sub.add_parser("stats", help="pieces, notes, hours and tokens per style and split")
    _root(s)
    s.add_argument("--json", action="store_true", help="print one JSON object")


def _material(b: argparse.ArgumentParser) -> None:
    """The build's optional material: band parts over the melodies, live-like piano renderings."""
    b.add_argument("--band", action="store_true",
                   help="add band parts (bass, drums, chords rendered by mma) over the melodies; needs mma")
    b.add_argument("--band-limit", type=int, default=BandConfig.limit, metavar="N",
                   help="at most N melodies get band parts (default: %(default)s; 0: every melody)")
    b.add_argument("--band-per-piece", type=int, default=BandConfig.per_piece, metavar="K",
                   help="band versions per melody, each in another style (default: %(default)s, at most 5)")
    b.add_argument("--perform", type=int, default=2, metavar="K",
                   help="play every notated train and valid piece K times on piano with the performer, as "
                   "live-like training material (default: %(default)s; 0: none; docs/corpus.md)")


def _root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        default=None,
        metavar="DIR",
        help="corpus folder (default: $MUSEBRIDGE_DATA/corpus, else data/corpus)",
    )


def _config(args: argparse.Namespace) -> BuildConfig:
    styles = tuple(args.styles or ())
    bad = [s for s in styles if s not in V.STYLES]
    if bad:
        raise CorpusError(f"unknown style {bad[0]!r}; choose from: {', '.join(V.STYLES)}")
    if args.limit is not None and args.limit < 1:
        raise CorpusError("--limit must be at least 1")
    return BuildConfig(
        band=_band(args),
        root=str(args.root or default_root()),
        styles=styles,
        midi_dirs=tuple(args.midi),
        limit=args.limit,
        jobs=max(1, args.jobs),
        timeout_s=args.timeout,
        max_seconds=args.max_minutes * 60.0,
        retry_failed=args.retry_failed,
        force=args.force,
        music21=not args.no_music21,
        quiet=args.quiet,
    )


def _band(args: argparse.Namespace) -> BandConfig | None:
    """The band step's config with --band, else None; CorpusError (how to get mma) when mma is missing."""
    if not args.band:
        return None
    if args.band_limit < 0 or args.band_per_piece < 1:
        raise CorpusError("--band-limit must be at least 0 and --band-per-piece at least 1")
    if not mma_available():
        raise CorpusError(MMA_HELP)
    return BandConfig(limit=args.band_limit or None, per_piece=args.band_per_piece)


def format_stats(info: dict) -> str:
    """The stats as a text table."""
    head = f"{'':<14}{'pieces':>8}{'notes':>11}{'hours':>9}{'tokens':>12}"
    row = lambda name, t: f"{name:<14}{t['pieces']:>8}{t['notes']:>11}{t['hours']:>9.2f}{t['tokens']:>12}"  # noqa: E731
    lines = [f"corpus {info['root']}", head]
    for style, t in info["styles"].items():
        lines.append(row(style, t))
        lines += [row(f"  {sp}", st) for sp, st in t["splits"].items()]
    lines.append(row("total", info["total"]))
    lines += [row(f"  {sp}", st) for sp, st in info["splits"].items()]
    if info.get("band"):
        lines.append("band pieces (included above, by style):")
        lines += [row(f"  {style}", t) for style, t in info["band"].items()]
    if info.get("live"):
        lines.append("live-like piano renderings (not included above): " + "; ".join(
            f"{split} {c['pieces']} pieces, {c['tokens']:,} tokens" for split, c in info["live"].items()))
    if info["skipped"]:
        lines.append(
            "skipped: "
            + "; ".join(
                f"{style} " + ", ".join(f"{n} {reason}" for reason, n in sorted(r.items()))
                for style, r in info["skipped"].items()
            )
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        if args.corpus_command == "build":
            config = _config(args)
            report = build(config)
            live = build_live(config.root, args.perform, config.jobs, config.quiet)
            skipped = ", ".join(f"{n} {r}" for r, n in sorted(report.skipped.items())) or "none"
            print(
                f"corpus {config.root}: {report.pieces} pieces ({report.converted} converted now), "
                f"skipped: {skipped}; {report.seconds:.0f} s"
            )
            if live:
                print("live-like renderings: " + ", ".join(f"{n} in {split}" for split, n in live.items()))
            return 0
        root = args.root or default_root()
        info = stats(root)
        info["stale"] = stale_tokens(root)
        print(json.dumps(info) if args.json else format_stats(info))
        if info["stale"] and not args.json:
            print(f"warning: {info['stale']}", file=sys.stderr)
        return 0
    except ImportError as exc:
        missing = exc.name or exc
        print(f"musebridge corpus: {missing} is not installed; pip install 'musebridge[train]'", file=sys.stderr)
        return 2
    except (CorpusError, FileNotFoundError) as exc:
        logging.getLogger(__name__).debug("corpus failed", exc_info=True)
        print(f"musebridge corpus: {exc}", file=sys.stderr)
        return 2
