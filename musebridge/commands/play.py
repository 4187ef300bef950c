"""`musebridge play`: the live bridge between MIDI ports and the engine (docs/live.md).

    musebridge play --mode respond                       # virtual ports "MuseBridge In" / "MuseBridge Out"
    musebridge play --mode accompany --in Keystation --out FluidSynth --instruments strings bass
    musebridge play --mode generate --api jack --quantize 1/16 --record take.mid

Checks every value (the engine's session parameters against the protocol's table, musebridge/commands/limits.py)
and the
--in / --out ports first, then starts `musebridge serve` when no engine answers, shows one live status line, and
silences every note on exit, on Ctrl-C and on SIGTERM. --record is written (atomically) on exit.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from dataclasses import replace

from musebridge.bridge.config import BridgeConfig, load_toml
from musebridge.bridge.engine_link import LIVE_CONTEXT
from musebridge.bridge.errors import BridgeError
from musebridge.bridge.launcher import EngineTarget, ensure_engine
from musebridge.bridge.live import LiveSession
from musebridge.bridge.midiclock import GRIDS
from musebridge.bridge.ports import check_ports
from musebridge.bridge.rtmidi_ports import API_NAMES, open_backend
from musebridge.bridge.status import StatusLine
from musebridge.commands.limits import ParamError, add_param, check_param, check_params
from musebridge.engine.errors import EngineError
from musebridge.engine.inference.catalog import style_of
from musebridge.engine.server.client import DEFAULT_PORT, DEFAULT_PUB_PORT
from musebridge.engine.server.protocol import MODES, ProtocolError
from musebridge.engine.server.service import session_config
from musebridge.engine.sessions.follow_config import FOLLOW_PARTS
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, instrument_index

# Session parameters `play` offers as options, checked against the protocol's table
# (musebridge/commands/limits.py).
ENGINE_PARAMS = ("temperature", "top_k", "top_p", "min_p", "seed", "best_of", "key", "pitch_low", "pitch_high",
                 "polyphony", "context", "style_guidance", "follow_key", "key_strength")
SHOWN = {"context": f"{LIVE_CONTEXT}, or the model's block size when smaller"}  # play's own defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=MODES, help="respond (default), accompany, harmonize, generate, thru")
    parser.add_argument("--in", dest="in_port", metavar="NAME", help="existing input port (name or part of "
                        "it; see `musebridge ports`); default: a virtual port 'MuseBridge In'")
    parser.add_argument("--out", dest="out_port", metavar="NAME", help="existing output port; default: a "
                        "virtual port 'MuseBridge Out'")
    parser.add_argument("--api", choices=tuple(API_NAMES), help="MIDI API (default: automatic)")
    parser.add_argument("--style", help="a style the model has data for, any case (`musebridge styles` lists "
                        "them; default unknown: the model chooses)")
    parser.add_argument("--instruments", nargs="+", metavar="NAME", help=f"engine instruments: "
                        f"{', '.join(INSTRUMENT_NAMES)} (default strings)")
    parser.add_argument("--player-instrument", metavar="NAME", help="what the player plays (default piano)")
    engine = parser.add_argument_group("the engine's session (the same ranges as `generate` and `ctl set`)")
    for name in ENGINE_PARAMS:
        add_param(engine, name, metavar="KEY" if "key" in name and name != "key_strength" else None,
                  shown=SHOWN.get(name))
    engine.add_argument("--follow-off", nargs="+", metavar="PART", help="parts of following the player to switch "
                        f"off: {', '.join(FOLLOW_PARTS)} (default: none)")
    engine.add_argument("--no-follow", action="store_true", default=None, help="do not follow the player at all")
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
    """Defaults, then --config, then the command line. BridgeError (ConfigError) on bad values, the engine's
    session parameters included: all is checked before a port opens or an engine starts."""
    config = load_toml(args.config) if args.config else BridgeConfig()
    top = {k: v for k, v in {"mode": args.mode, "in_port": args.in_port, "out_port": args.out_port,
                             "api": args.api, "thru": args.thru, "record": args.record}.items() if v is not None}
    if args.channel is not None:
        if not 1 <= args.channel <= 16:
            raise BridgeError(f"--channel must be 1-16, got {args.channel}")
        top["channel"] = args.channel - 1
    try:  # names in any case, as the engine reads them; the engine refuses a style its model has no data for
        style = None if args.style is None else style_of(args.style, None)
        instruments = None if args.instruments is None else [_instrument(n) for n in args.instruments]
        player = None if args.player_instrument is None else _instrument(args.player_instrument)
    except (EngineError, ValueError) as exc:
        raise BridgeError(str(exc)) from None
    given = {"style": style, "instruments": instruments, "player_instrument": player,
             "follow_off": args.follow_off, "follow": False if args.no_follow else None,
             **{name: getattr(args, name) for name in ENGINE_PARAMS}}
    engine = {k: v for k, v in given.items() if v is not None}
    clock = {k: v for k, v in {"bpm": args.bpm, "quantize": args.quantize}.items() if v is not None}
    config = replace(config, **top, engine={**config.engine, **engine},
                     clock=replace(config.clock, **clock) if clock else config.clock)
    check_engine(config.engine, set(engine), args.config)
    return config


def _instrument(name: str) -> str:
    return INSTRUMENT_NAMES[instrument_index(name)]


def check_engine(params: dict, from_command_line: set[str], config_path: str | None) -> None:
    """BridgeError (one line) unless the engine will take these session parameters: each within the protocol's
    table, and together as the engine builds a session from them (service.session_config). The name of the
    settings file is given when a value came from it."""
    for name, value in params.items():
        where = f"config {config_path} [engine]: " if config_path and name not in from_command_line else ""
        try:
            check_param(name, value)
        except ParamError as exc:
            raise BridgeError(f"{where}{exc}") from None
    try:
        check_params(params)
        session_config(params)
    except (ParamError, ProtocolError) as exc:
        raise BridgeError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    try:
        config = build_config(args)
        backend = open_backend(config.api)
        check_ports(backend, config.in_port, config.out_port)  # before an engine starts
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
        return _play(config, backend, target, quiet=args.no_status, engine=server)
    finally:
        if server is not None:
            server.stop()


def _play(config: BridgeConfig, backend, target: EngineTarget, quiet: bool, engine=None) -> int:
    live = LiveSession(config, backend, target, engine=engine)
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
