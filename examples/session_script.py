"""Script a session over ZeroMQ: feed a MIDI file as the player, let the engine answer, switch style halfway, save.

    musebridge serve &                       # or pass --spawn to start one for this script
    python examples/session_script.py IN.mid OUT.mid --instruments strings --style bach --then folk

The player's part is fed in windows of --window seconds; after each window the engine plans up to its end. The
result holds both parts (the player on its own channel, the engine on its instruments' channels).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from musebridge.engine.errors import EngineError
from musebridge.engine.server.client import Client, ClientConfig, ClientError
from musebridge.engine.server.wire import from_wire, to_wire
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import read_midi, write_midi

NOTE_TYPES = ("note_on", "note_off", "control_change")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("midi_in")
    p.add_argument("midi_out")
    p.add_argument("--instruments", nargs="+", default=["strings"])
    p.add_argument("--player", default="piano", help="the player's instrument class")
    p.add_argument("--style", default="bach")
    p.add_argument("--then", default="folk", help="style after the halfway point")
    p.add_argument("--window", type=float, default=2.0, help="seconds fed before each answer")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--model", help="model for --spawn (default: the bundled one)")
    p.add_argument("--spawn", action="store_true", help="start `musebridge serve` for this script")
    p.add_argument("--port", type=int, default=5555, help="the server's command port")
    p.add_argument("--pub-port", type=int, default=5556, help="the server's event port")
    return p.parse_args(argv)


def run_session(client: Client, player: list[Timed], args) -> list[dict]:
    sid = client.call("session.create", style=args.style, instruments=args.instruments,
                      player_instrument=args.player, seed=args.seed)["session"]
    end = max((e.time for e in player), default=0.0)
    engine_notes, switched, t = [], False, 0.0
    while t < end:
        window = [to_wire(*e) for e in player if t <= e.time < t + args.window]
        if window:
            client.call("feed", session=sid, events=window)
        if not switched and t + args.window >= end / 2:
            client.call("set", session=sid, style=args.then)
            switched = True
        t += args.window
        engine_notes += client.call("generate", session=sid, until=t, timeout=30.0)["notes"]
    client.call("session.close", session=sid)
    return engine_notes


def main(argv=None) -> int:
    args = parse_args(argv)
    server = None
    if args.spawn:
        cmd = [sys.executable, "-m", "musebridge", "serve", "--port", str(args.port),
               "--pub-port", str(args.pub_port)]
        cmd += ["--model", args.model] if args.model else []
        server = subprocess.Popen(cmd)
    try:
        player = [e for e in read_midi(args.midi_in).events if e.msg.type in NOTE_TYPES]
        config = ClientConfig(endpoint=f"tcp://127.0.0.1:{args.port}", timeout=5.0)
        with Client(config) as client:
            for _ in range(100 if args.spawn else 1):
                if client.ping(timeout=0.5):
                    break
                time.sleep(0.1)
            engine = [from_wire(n)[0] for n in run_session(client, player, args)]
        write_midi(sorted(player + engine, key=lambda e: e.time), args.midi_out)
        print(f"{len(player)} player events, {len(engine)} engine events -> {args.midi_out}")
        return 0
    except (ClientError, EngineError) as exc:
        print(f"session_script: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
