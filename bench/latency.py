"""Live latency through JACK (48 kHz, 32-frame period, dummy driver), with wall-clock timestamps.

    .venv/bin/python bench/latency.py [--model MODEL.onnx] [--notes 300] [--json]

In one run, on one private `jackd -d dummy -r 48000 -p 32`:
  floor      a trivial pass-through JACK client (python-rtmidi callback -> send), in its own process:
             note-on in -> the same note-on out;
  harmonize  `musebridge play --mode harmonize` (its own process, the real engine server behind it):
             player note-on in -> first harmonizing note-on out. Notes alternate with the floor's, so both see
             the same machine load;
  respond    the same bridge switched to respond by CC: trigger CC in -> first answer note-on out;
  scheduler  a Scheduler on a JACK out port, in this process: send time - due time, and arrival at a JACK peer
             - due time (the arrival includes JACK's period quantization).
The dummy driver's frame clock does not follow wall time, so every figure is time.perf_counter() on this machine.
Needs jackd (Debian jackd2). Without --model: the bundled model, else a small random model (needs torch).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mido
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musebridge.bridge.clock import MonotonicClock  # noqa: E402
from musebridge.bridge.config import ModeConfig  # noqa: E402
from musebridge.bridge.engine_link import LIVE_CONTEXT  # noqa: E402
from musebridge.bridge.rtmidi_ports import RtmidiBackend  # noqa: E402
from musebridge.bridge.scheduler import Scheduler  # noqa: E402
from musebridge.engine.inference.runtime import Model  # noqa: E402

from tests.jack import JackPeer, JackServer  # noqa: E402
from tests.net import free_port  # noqa: E402

STRINGS = 5
FLOOR = """
import rtmidi, sys
i = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "floor in")
o = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "floor out")
o.open_virtual_port("floor out")
i.set_callback(lambda event, data: o.send_message(event[0]))
i.open_virtual_port("floor in")
print("ready", flush=True)
sys.stdin.read()
"""
CONFIG = """
[modes]
pause_ms = 60000
answer_s = 0.3
voices = 3
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model file (default: bundled model, else a small random one)")
    parser.add_argument("--notes", type=int, default=300, help="harmonized notes (and as many floor notes)")
    parser.add_argument("--triggers", type=int, default=40, help="respond triggers")
    parser.add_argument("--events", type=int, default=1000, help="scheduled events for the timing error")
    parser.add_argument("--context", type=int, help=f"the engine sessions' context in tokens (default: as "
                        f"`play`: {LIVE_CONTEXT}, or the model's block size when smaller)")
    parser.add_argument("--anticipate-s", type=float, default=ModeConfig().anticipate_s,
                        help="harmonize: [modes] anticipate_s of the bridge (default: as `play`; 0: off)")
    parser.add_argument("--vary-velocity", action="store_true",
                        help="harmonized notes at random velocities 20-120 (default: all at 80)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _model(path: str | None, folder: Path) -> tuple[str, str]:
    if path:
        return path, path
    from musebridge.engine.inference.model_file import default_model_path

    default = default_model_path()
    if Path(default).is_file():
        return str(default), "bundled default model"
    from tests.model_fixtures import SMALL, export_small

    return str(export_small(folder)[1]), f"random test model {SMALL}"


def _first(peer: JackPeer, after: float, channel: int | None, timeout: float = 2.0) -> float | None:
    """The time of the first note-on (on `channel`, None: any) that `peer` heard at or after `after`, waiting up
    to `timeout` s. The times are taken in the peer's callback; this only checks every millisecond (JackPeer
    reads only the newest messages): a benchmark that polled faster would take the CPU time of the processes it
    measures."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        hits = peer.note_ons(channel, after=after)
        if hits:
            return hits[0][0]
        time.sleep(0.001)
    return None


def _stats(ms: list[float]) -> dict:
    a = np.array(ms)
    return {"n": len(ms), "p50_ms": round(float(np.percentile(a, 50)), 3),
            "p99_ms": round(float(np.percentile(a, 99)), 3), "max_ms": round(float(a.max()), 3)}


def measure_notes(floor: JackPeer, bridge: JackPeer, n: int, rng: random.Random,
                  vary: bool = False) -> tuple[list, list, int]:
    """Alternate a note through the floor client and one through the bridge; latencies in ms. vary: random
    velocities (20-120, as a player's; the engine then usually also runs a velocity token), else all 80."""
    lat_floor, lat_bridge, missed = [], [], 0
    for i in range(n):
        note = 48 + i % 24
        t = floor.send(mido.Message("note_on", note=note, velocity=80))
        got = _first(floor, t, None)
        floor.send(mido.Message("note_off", note=note))
        if got is not None:
            lat_floor.append((got - t) * 1000)
        time.sleep(rng.uniform(0.02, 0.04))
        t = bridge.send(mido.Message("note_on", note=note, velocity=rng.randint(20, 120) if vary else 80))
        got = _first(bridge, t, STRINGS)
        if got is None:
            missed += 1
        else:
            lat_bridge.append((got - t) * 1000)
        time.sleep(rng.uniform(0.03, 0.06))
        bridge.send(mido.Message("note_off", note=note))
        time.sleep(rng.uniform(0.02, 0.04))
    return lat_floor, lat_bridge, missed


def measure_triggers(bridge: JackPeer, n: int) -> tuple[list, int]:
    """Respond mode: a short phrase, then the trigger CC; trigger -> first answer note-on, ms."""
    bridge.send(mido.Message("control_change", control=102, value=127))  # switch to respond
    time.sleep(0.3)
    lat, missed = [], 0
    for i in range(n):
        for note in (60 + i % 5, 64):
            bridge.send(mido.Message("note_on", note=note, velocity=80))
            time.sleep(0.04)
            bridge.send(mido.Message("note_off", note=note))
        time.sleep(0.02)
        t = bridge.send(mido.Message("control_change", control=107, value=127))
        got = _first(bridge, t, STRINGS)
        if got is None:
            missed += 1
        else:
            lat.append((got - t) * 1000)
        time.sleep(0.4)  # the answer (0.3 s) ends
    return lat, missed


def measure_scheduler(n: int, rng: random.Random) -> tuple[list, list]:
    """Scheduler thread on a JACK out port: (send - due, arrival - due) in ms."""
    backend = RtmidiBackend("jack")
    out = backend.open_output(None, "bench sched")
    peer = JackPeer(None, "bench sched", client="bench sched peer")
    clock = MonotonicClock()
    sched = Scheduler(out.send, clock)
    sched.start()
    time.sleep(0.2)
    due: dict[tuple[int, int], float] = {}  # (channel, note) -> due time: unique per event
    t = clock.now() + 0.2
    events = []
    for i in range(min(n, 2048)):
        t += rng.uniform(0.002, 0.02)
        key = (i // 128, i % 128)
        due[key] = t
        events.append((t, mido.Message("note_on", channel=key[0], note=key[1], velocity=64)))
        events.append((t + 0.001, mido.Message("note_off", channel=key[0], note=key[1])))
    sched.schedule_events(events)
    time.sleep(t - clock.now() + 0.3)
    send_err = [e * 1000 for e in sched.errors_s]
    arrival_err = [(t_ - due[(m.channel, m.note)]) * 1000 for t_, m in list(peer.heard)
                   if m.type == "note_on" and m.velocity and (m.channel, m.note) in due]
    sched.stop()
    peer.close()
    out.close()
    return send_err, arrival_err


STAGES = ("JACK -> callback", "callback -> input thread", "input thread -> engine worker",
          "engine worker -> sent (engine request)", "sent -> peer", "total")


def measure_stages(port: int, pub_port: int, n: int, session: dict) -> dict:
    """An in-process bridge (harmonize, one voice) on the same engine, timestamped at each stage of one note:
    what the bridge's own threads add, apart from the engine request and JACK. Percentiles per stage, ms."""
    from dataclasses import replace

    from musebridge.bridge.config import BridgeConfig, ModeConfig
    from musebridge.bridge.launcher import EngineTarget
    from musebridge.bridge.live import LiveSession
    from musebridge.bridge.work import PlayerNote

    base = BridgeConfig(mode="harmonize", api="jack", in_name="stages In", out_name="stages Out")
    config = replace(base, modes=ModeConfig(voices=1), engine={**base.engine, **session})
    live = LiveSession(config, RtmidiBackend("jack"), EngineTarget(port=port, pub_port=pub_port))
    bridge = live.start()
    marks: dict[str, float] = {}
    handle, process = bridge.input.handle, bridge.worker.process

    def handle_input(t, data):
        marks.setdefault("callback", t)
        marks.setdefault("input", time.perf_counter())
        handle(t, data)

    def process_item(event):
        if isinstance(event, PlayerNote) and event.msg.type == "note_on":
            marks.setdefault("worker", time.perf_counter())
        process(event)

    bridge.input.handle, bridge.worker.process = handle_input, process_item
    bridge.scheduler.on_sent.append(
        lambda t, m, s: marks.setdefault("sent", time.perf_counter()) if m.type == "note_on" else None)
    peer = JackPeer("stages In", "stages Out", client="bench stages peer", wait_s=30)
    rows = []
    try:
        for i in range(n):
            marks.clear()
            t = peer.send(mido.Message("note_on", note=60 + i % 12, velocity=80))
            got = _first(peer, t, STRINGS)
            if got is not None and {"callback", "input", "worker", "sent"} <= set(marks):
                m = marks
                rows.append([m["callback"] - t, m["input"] - m["callback"], m["worker"] - m["input"],
                             m["sent"] - m["worker"], got - m["sent"], got - t])
            time.sleep(0.03)
            peer.send(mido.Message("note_off", note=60 + i % 12))
            time.sleep(0.04)
    finally:
        peer.close()
        live.stop()
    table = np.array(rows) * 1000
    return {name: _stats(list(table[:, k])) for k, name in enumerate(STAGES)}


def measure_engine(port: int, n: int, session: dict) -> tuple[list, list]:
    """Direct client round trips to the bridge's engine over TCP: status, and feed + generate(notes=1, now) sent
    as harmonize mode sends them (one `generate` request carrying the note in `feed`), ms."""
    from musebridge.engine.server.client import Client, ClientConfig

    rtt, work = [], []
    with Client(ClientConfig(endpoint=f"tcp://127.0.0.1:{port}", timeout=5.0)) as c:
        sid = c.call("session.create", instruments=["strings"], player_instrument="piano", seed=3,
                     **session)["session"]
        for i in range(n):
            t = time.perf_counter()
            c.call("status")
            rtt.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            c.call("generate", session=sid, notes=1, max_tokens=16, now=True,
                   feed=[{"t": 0.2 * i, "type": "note_on", "note": 60, "velocity": 80}])
            work.append((time.perf_counter() - t) * 1000)
            c.call("feed", session=sid, events=[{"t": 0.2 * i + 0.1, "type": "note_off", "note": 60}])
            time.sleep(0.01)
        c.call("session.close", session=sid)
    return rtt, work


def run(args: argparse.Namespace) -> int:
    rng = random.Random(0)
    jack = JackServer(48000, 32).start()
    procs: list[subprocess.Popen] = []
    peers: list[JackPeer] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model, model_name = _model(args.model, Path(tmp))
            context = args.context or min(LIVE_CONTEXT, Model.load(model).info.block_size)
            config = Path(tmp) / "bench.toml"
            config.write_text(CONFIG + f"anticipate_s = {args.anticipate_s}\n")
            floor = subprocess.Popen([sys.executable, "-c", FLOOR], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
            procs.append(floor)
            floor.stdout.readline()
            engine_port, engine_pub = free_port(), free_port()
            play = subprocess.Popen(
                [sys.executable, "-m", "musebridge", "play", "--api", "jack", "--mode", "harmonize",
                 "--model", model, "--port", str(engine_port), "--pub-port", str(engine_pub),
                 "--config", str(config), "--instruments", "strings", "--no-status", "--seed", "1",
                 "--context", str(context)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            procs.append(play)
            play.stdout.readline()  # "musebridge play: harmonize mode; ..."
            fp = JackPeer("floor in", "floor out", client="bench floor peer", wait_s=30)
            bp = JackPeer("MuseBridge In", "MuseBridge Out", client="bench bridge peer", wait_s=60)
            peers += [fp, bp]
            measure_notes(fp, bp, 20, rng)  # warm up both paths
            lat_floor, lat_bridge, missed = measure_notes(fp, bp, args.notes, rng, args.vary_velocity)
            lat_trigger, missed_trigger = measure_triggers(bp, args.triggers)
            send_err, arrival_err = measure_scheduler(args.events, rng)
            session = {"context": context}
            engine_rtt, engine_work = measure_engine(engine_port, min(args.notes, 200), session)
            stages = measure_stages(engine_port, engine_pub, min(args.notes, 200), session)
    finally:
        for peer in peers:
            peer.close()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
        jack.stop()
    floor_s, bridge_s = _stats(lat_floor), _stats(lat_bridge)
    result = {
        "machine": f"{platform.node()} {platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": __import__("os").cpu_count(), "python": platform.python_version(), "model": model_name,
        "context": context, "anticipate_s": args.anticipate_s, "vary_velocity": args.vary_velocity,
        "jack": "jackd -d dummy -r 48000 -p 32 (0.67 ms period)",
        "floor_passthrough": floor_s, "bridge_harmonize": bridge_s, "harmonize_missed": missed,
        "added_p50_ms": round(bridge_s["p50_ms"] - floor_s["p50_ms"], 3),
        "added_p99_ms": round(bridge_s["p99_ms"] - floor_s["p99_ms"], 3),
        "respond_trigger": _stats(lat_trigger) if lat_trigger else None, "respond_missed": missed_trigger,
        "engine_status_rtt": _stats(engine_rtt), "engine_feed_generate1": _stats(engine_work),
        "bridge_stages": stages,
        "scheduler_send_error": _stats([abs(e) for e in send_err]),
        "scheduler_arrival_error": _stats([abs(e) for e in arrival_err]) if arrival_err else None,
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        _print(result)
    return 0


def _print(r: dict) -> None:
    print(f"machine: {r['machine']}, {r['cpus']} CPUs, Python {r['python']}; {r['jack']}; model: {r['model']}; "
          f"context: {r['context']}; anticipate_s: {r['anticipate_s']}")
    print(f"{'path':<36}{'n':>6}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}")
    rows = [("floor: pass-through client", r["floor_passthrough"]),
            ("bridge: note-on -> harmony note-on", r["bridge_harmonize"]),
            ("bridge: respond trigger -> answer", r["respond_trigger"]),
            ("engine: status round trip", r["engine_status_rtt"]),
            ("engine: feed + generate(1 note, now)", r["engine_feed_generate1"]),
            ("scheduler: send - due", r["scheduler_send_error"]),
            ("scheduler: arrival - due", r["scheduler_arrival_error"])]
    for name, s in rows:
        if s:
            print(f"{name:<36}{s['n']:>6}{s['p50_ms']:>10.3f}{s['p99_ms']:>10.3f}{s['max_ms']:>10.3f}")
    print("one harmonized note, stage by stage (in-process bridge, same engine):")
    for name, s in r["bridge_stages"].items():
        print(f"  {name:<40}{s['n']:>6}{s['p50_ms']:>10.3f}{s['p99_ms']:>10.3f}{s['max_ms']:>10.3f}")
    print(f"bridge adds over the floor: p50 {r['added_p50_ms']:.3f} ms, p99 {r['added_p99_ms']:.3f} ms "
          f"(target: p99 <= 3 ms); missed harmonies {r['harmonize_missed']}, missed answers {r['respond_missed']}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
