"""The `musebridge` command: a table of subcommands, each a module with add_arguments(parser) and run(args).

Subcommand modules are imported only when chosen, so `musebridge --help` is fast and never imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from musebridge import __version__

# name -> (module, one-line help). Only subcommands that work are listed here.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("musebridge.commands.demo", "hear it: a call-and-response exchange on the bundled model"),
    "tokens": ("musebridge.commands.tokens", "tokenize a MIDI file: statistics, tokens, round trip"),
    "generate": ("musebridge.commands.generate", "generate offline: from scratch, --prompt, --melody"),
    "styles": ("musebridge.commands.styles", "the model's styles and instruments, with the data behind each"),
    "serve": ("musebridge.commands.serve", "run the engine server (ZeroMQ commands and events)"),
    "ctl": ("musebridge.commands.ctl", "talk to a running server: status, set, watch, call"),
    "keys": ("musebridge.commands.keys", "make CURVE keys for a server listening beyond loopback"),
    "corpus": ("musebridge.commands.corpus", "build the training corpus (music21 corpus, MIDI folders); stats"),
    "perform": ("musebridge.commands.perform", "play a notated MIDI file as a pianist would (seeded)"),
    "train": ("musebridge.commands.train", "train a model on a token corpus (one device or torchrun DDP)"),
    "judge": ("musebridge.commands.judge", "generate from held-out prompts in each mode: model vs real music"),
    "eval": ("musebridge.export.evaluate", "NLL per token and per note of a model vs an n-gram baseline"),
    "export": ("musebridge.commands.export", "export a checkpoint to the engine's ONNX model (optional int8)"),
    "play": ("musebridge.commands.play", "live through MIDI ports: respond, accompany, harmonize, generate"),
    "ports": ("musebridge.commands.ports", "list MIDI input and output ports for --in / --out"),
    "bench": ("musebridge.commands.bench", "benchmarks from bench/ (decode: engine vs torch vs HF latency)"),
}

# Top-level modules of the optional extras (pyproject.toml) -> the extra that brings them.
EXTRAS: dict[str, str] = {
    "torch": "train", "music21": "train", "onnx": "train", "onnxscript": "train", "tqdm": "train",
    "transformers": "bench", "miditok": "bench", "matplotlib": "viz",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The extra whose module `exc` failed to import, or None when the missing module is not an extra's."""
    return EXTRAS.get((exc.name or "").partition(".")[0])


def _needs_extra(command: str, exc: ModuleNotFoundError, extra: str) -> int:
    print(f"musebridge {command}: needs {exc.name}, from the {extra} extra: pip install -e '.[{extra}]' in the "
          "checkout (README, Training: the CPU-only and the GPU build of torch)", file=sys.stderr)
    return 2


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and one (still empty) parser per subcommand."""
    parser = argparse.ArgumentParser(
        prog="musebridge", description="Real-time AI accompaniment over MIDI ports."
    )
    parser.add_argument("--version", action="version", version=f"musebridge {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more to stderr: -v what happens (INFO), -vv debugging detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers = {
        name: sub.add_parser(name, help=help_, description=help_)
        for name, (_, help_) in SUBCOMMANDS.items()
    }
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, subparsers = build_parser()
    # Find the subcommand first (the first word naming one), so its module adds its own arguments before
    # anything is parsed: `musebridge play --help` then lists play's options.
    command = next((word for word in argv if word in SUBCOMMANDS), None)
    if command is None:
        parser.parse_known_args(argv)  # --help / --version at the top level
        parser.print_help()
        return 2
    try:
        module = importlib.import_module(SUBCOMMANDS[command][0])
        module.add_arguments(subparsers[command])
        args = parser.parse_args(argv)
        logging.basicConfig(
            level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
            format="%(levelname)s %(name)s: %(message)s",
        )
        return module.run(args)
    except ModuleNotFoundError as exc:
        extra = "bench" if command == "bench" else missing_extra(exc)  # the bench extra brings torch too
        if extra is None:
            raise
        return _needs_extra(command, exc, extra)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`musebridge styles | head`): nothing left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python's docs: no error at exit
        return 0
