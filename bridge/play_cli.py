"""`musebridge play`: the live bridge between MIDI ports and the engine (docs/live.md).

    musebridge play --mode respond                       # virtual ports "MuseBridge In" / "MuseBridge Out"
    musebridge play --mode accompany --in Keystation --out FluidSynth --instruments strings bass
    musebridge play --mode generate --api jack --quantize 1/16 --record take.mid

Starts `musebridge serve` when no engine answers, shows one live status line, and silences every note on exit,
on Ctrl-C and on SIGTERM. --record is written (atomically) on exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace

from musebridge.engine.client import DEFAULT_PORT, DEFAULT_PUB_PORT
from musebridge.engine.follow import FOLLOW_PARTS
from musebridge.engine.instruments import INSTRUMENT_NAMES
from musebridge.engine.protocol import MODES
from musebridge.engine.tonality import parse_key
from musebridge.engine.vocab import STYLES

from .config import BridgeConfig, load_toml
from .errors import BridgeError
from .launcher import EngineTarget, ensure_engine
from .live import LiveSession
from .midiclock import GRIDS
from .rtmidi_ports import API_NAMES, open_backend
from .status import StatusLine


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, help="respond (default), accompany, harmonize, generate, thru")
    parser.add_argument("--in", dest="in_port", metavar="NAME", help="existing input port (name or part of "
                        "it; see `musebridge ports`); default: a virtual port 'MuseBridge In'")
    parser.add_argument("--out", dest="out_port", metavar="NAME", help="existing output port; default: a "
                        "virtual port 'MuseBridge Out'")
    parser.add_argument("--api", choices=tuple(API_NAMES), help="MIDI API (default: automatic)")
    parser.add_argument("--style", help=f"style: {', '.join(STYLES)}")
    parser.add_argument("--instruments", nargs="+", metavar="NAME", help=f"engine instruments: "
                        f"{', '.join(INSTRUMENT_NAMES)}")
    parser.add_argument("--player-instrument", metavar="NAME", help="what the player plays (default piano)")
    parser.add_argument("--temperature", type=float, help="sampling temperature (0.05-5)")
    parser.add_argument("--seed", type=int, help="sampling seed")
    parser.add_argument("--context", type=int, metavar="TOKENS", help="tokens of the past the model sees (from 32 "
                        "to its block size, 1024 for the bundled model; default: 256, or the block size when "
                        "smaller): shorter answers faster and remembers less")
    parser.add_argument("--follow-key", metavar="KEY", help="'auto' (the key heard, default), 'off', or a key to "
                        "lean toward, e.g. 'E minor'")
    parser.add_argument("--follow-off", nargs="+", metavar="PART", help="parts of following the player to switch "
                        f"off: {', '.join(FOLLOW_PARTS)}")
    parser.add_argument("--no-follow", action="store_true", default=None, help="do not follow the player at all")
    parser.add_argument("--channel", type=int, metavar="1-16", help="listen to this MIDI channel only")
    parser.add_argument("--thru", action="store_true", default=None, help="also pass the player's notes to --out")
    parser.add_argument("--bpm", type=float, help="internal clock tempo when no MIDI clock comes in (120)")
    parser.add_argument("--quantize", choices=("off", *GRIDS), help="snap engine notes to this grid")
    parser.add_argument("--record", metavar="FILE.mid", help="record both parts to FILE.mid on exit")
    parser.add_argument("--config", metavar="FILE.toml", help="settings file (see docs/live.md)")
    parser.add_argument("--model", metavar="MODEL.onnx", help="model for a started engine (default: bundled)")
    parser.add_argument("--host", default="127.0.0.1", help="engine server address")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="engine request port")
    parser.add_argument("--pub-port", type=int, default=DEFAULT_PUB_PORT, help="engine event port")
    parser.add_argument("--keys", metavar="DIR", help="CURVE keys for a remote engine")
    parser.add_argument("--no-status", action="store_true", help="no live status line")


def build_config(args: argparse.Namespace) -> BridgeConfig:
    """Defaults, then --config, then the command line. ConfigError on bad values."""
    config = load_toml(args.config) if args.config else BridgeConfig()
    top = {k: v for k, v in {"mode": args.mode, "in_port": args.in_port, "out_port": args.out_port,
                             "api": args.api, "thru": args.thru, "record": args.record}.items() if v is not None}
    if args.channel is not None:
        if not 1 <= args.channel <= 16:
            raise BridgeError(f"--channel must be 1-16, got {args.channel}")
        top["channel"] = args.channel - 1
    engine = {k: v for k, v in {"style": args.style, "instruments": args.instruments,
                                "player_instrument": args.player_instrument, "temperature": args.temperature,
                                "seed": args.seed, "context": args.context, "follow_key": args.follow_key,
                                "follow_off": args.follow_off,
                                "follow": False if args.no_follow else None}.items() if v is not None}
    _check_follow(engine)
    clock = {k: v for k, v in {"bpm": args.bpm, "quantize": args.quantize}.items() if v is not None}
    for name in [*(args.instruments or []), *([args.player_instrument] if args.player_instrument else [])]:
        if name not in INSTRUMENT_NAMES:
            raise BridgeError(f"unknown instrument {name!r}; choose from: {', '.join(INSTRUMENT_NAMES)}")
    if args.style is not None and args.style not in STYLES:
        raise BridgeError(f"unknown style {args.style!r}; choose from: {', '.join(STYLES)}")
    return replace(config, **top, engine={**config.engine, **engine},
                   clock=replace(config.clock, **clock) if clock else config.clock)


def _check_follow(engine: dict) -> None:
    """The engine refuses bad following values later; say so before the ports open."""
    unknown = [p for p in engine.get("follow_off", []) if p not in FOLLOW_PARTS]
    if unknown:
        raise BridgeError(f"unknown part of following {unknown[0]!r}; choose from: {', '.join(FOLLOW_PARTS)}")
    if engine.get("follow_key", "auto") not in ("auto", "off"):
        try:
            parse_key(engine["follow_key"])
        except ValueError as exc:
            raise BridgeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
        backend = open_backend(config.api)
    except BridgeError as exc:
        print(f"musebridge play: {exc}", file=sys.stderr)
        return 2
    target = EngineTarget(host=args.host, port=args.port, pub_port=args.pub_port, model=args.model,
                          keys=args.keys)
    try:
        server = ensure_engine(target)
    except BridgeError as exc:
        print(f"musebridge play: {exc}", file=sys.stderr)
        return 1
    if server is not None:
        target = replace(target, direct=server.direct)  # our own engine: the direct fast path
    try:
        return _play(config, backend, target, quiet=args.no_status)
    finally:
        if server is not None:
            server.stop()


def _play(config: BridgeConfig, backend, target: EngineTarget, quiet: bool) -> int:
    live = LiveSession(config, backend, target)
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        bridge = live.start()
        print(f"musebridge play: {config.mode} mode; in {bridge.in_port.name!r}, out {bridge.out_port.name!r} "
              f"({backend.name}); Ctrl-C to stop", flush=True)
        status = StatusLine(bridge, sys.stdout, enabled=not quiet)
        while not stop.wait(0.25):
            status.show()
        status.done()
    except BridgeError as exc:
        print(f"musebridge play: {exc}", file=sys.stderr)
        return 2
    finally:
        live.stop()  # silences every note, writes --record
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if config.record:
        print(f"musebridge play: recorded {config.record}", flush=True)
    return 0
