"""Soak: one long harmonize session through a real `musebridge serve`; does memory or latency drift?

    .venv/bin/python bench/soak.py [--minutes 60] [--model MODEL.onnx] [--notes-per-s 4] [--json]

One `musebridge serve` (ZeroMQ TCP, its Unix socket and its direct port, as bench/server_overhead.py) and one
client on the Unix socket (the path `musebridge play` uses) that plays as harmonize mode does (bridge/modes.py):
a session like play's (strings over a piano player, context 256); for each player note-on one `generate` with
`feed` and `now` for the first voice, a second for two more voices; at the note's end a `feed` of the player's
note-off and the voices' ends (`"engine": true`). The player's notes are a random walk at `--notes-per-s` (held
0.1-0.6 s, a pedal now and then, a pause of 1-3 s every 30 notes), in real time. Every minute: the server's RSS,
and over that minute the per-token time the engine reports (its `telemetry` events: ms / tokens per `generate`)
and the round trip note-on -> first voice, p50/p99, and any error reply. Prints the first and last minute side by
side, with RSS growth from the end of the first minute (warm-up) to the end.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.server.client import Client, ClientConfig, ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server_overhead import _one_server  # noqa: E402

PARAMS = {"style": "bach", "instruments": ["strings"], "player_instrument": "piano", "mode": "harmonize",
          "context": 256, "seed": 11}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--minutes", type=float, default=60.0, help="how long to play (default 60)")
    parser.add_argument("--notes-per-s", type=float, default=4.0, help="player note-ons a second (default 4)")
    parser.add_argument("--window-s", type=float, default=60.0, help="seconds per reported window (default 60)")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object with every figure")


def rss_mb(pid: int) -> float:
    """Resident set size of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(samples: list[float]) -> dict:
    if not samples:
        return {"p50_ms": None, "p99_ms": None, "n": 0}
    a = np.asarray(samples)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3),
            "n": len(a)}


class Telemetry:
    """A thread on the events socket: per-token ms of every `generate` of session `sid` (each weighted by its
    tokens, as the server's own `status` latency)."""

    def __init__(self, events_endpoint: str):
        self.config = ClientConfig(events_endpoint=events_endpoint)
        self.sid: str | None = None
        self.samples: list[float] = []
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()
        time.sleep(0.5)  # the subscription reaches the server

    def take(self) -> list[float]:
        with self.lock:
            out, self.samples = self.samples, []
        return out

    def _loop(self) -> None:
        with Client(self.config) as client:
            while not self._stop.is_set():
                for event in client.events(("telemetry",), timeout=0.2):
                    tokens = event.data.get("tokens", 0)
                    if tokens and event.session == self.sid:
                        with self.lock:
                            self.samples += [event.data["ms"] / tokens] * tokens
                    if self._stop.is_set():
                        return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def play(client: Client, sid: str, seconds: float, rate: float, window_s: float, pid: int, tel: Telemetry,
         seed: int, log) -> list[dict]:
    """Play harmonize for `seconds`; one report per window."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    pitch, count, pedal = 60, 0, False
    held: list[tuple[float, int, list[dict]]] = []  # (release time, pitch, voices' note-ons)
    windows, trips, errors = [], [], []
    next_note, next_window = 0.0, window_s
    tel.take()

    def feed_ends(now: float, note: int, voices: list[dict]) -> None:
        ends = [{"t": now, "type": "note_off", "channel": 0, "note": note, "velocity": 0}]
        ends += [{"t": now, "type": "note_off", "channel": v["channel"], "note": v["note"], "velocity": 0,
                  "engine": True} for v in voices]
        client.call("feed", session=sid, events=ends)

    while True:
        now = time.perf_counter() - t0
        try:
            for release in [h for h in held if h[0] <= now]:
                held.remove(release)
                feed_ends(now, release[1], release[2])
            if now >= next_note:
                pitch = min(84, max(48, pitch + rng.choice((-4, -3, -2, -1, 1, 2, 3, 4, 5, 7, -5, -7))))
                on = {"t": now, "type": "note_on", "channel": 0, "note": pitch, "velocity": rng.randrange(40, 110)}
                feed = [on]
                if rng.random() < 0.05:
                    pedal = not pedal
                    feed.insert(0, {"t": now, "type": "control_change", "channel": 0, "control": 64,
                                    "value": 127 if pedal else 0})
                t1 = time.perf_counter()
                first = client.call("generate", session=sid, notes=1, max_tokens=16, now=True, feed=feed)
                trips.append((time.perf_counter() - t1) * 1000)
                more = client.call("generate", session=sid, notes=2, max_tokens=24, now=True)
                voices = [n for n in first["notes"] + more["notes"] if n["type"] == "note_on"]
                if any(h[1] == pitch for h in held):  # the same key again: release the old one first
                    old = next(h for h in held if h[1] == pitch)
                    held.remove(old)
                    feed_ends(now, old[1], old[2])
                held.append((now + rng.uniform(0.1, 0.6), pitch, voices))
                count += 1
                gap = 1 / rate * rng.uniform(0.5, 1.5)
                if count % 30 == 0:
                    gap += rng.uniform(1.0, 3.0)
                next_note = now + gap
        except ClientError as exc:
            errors.append(f"{exc.code}: {exc}")
        if now >= next_window or now >= seconds:
            per_token = tel.take()
            windows.append({"end_s": round(now, 1), "rss_mb": round(rss_mb(pid), 1),
                            "token": pct(per_token), "note_on_to_first_voice": pct(trips),
                            "notes": count, "errors": len(errors)})
            log(json.dumps(windows[-1]))
            trips = []
            next_window += window_s
            if now >= seconds:
                break
        wake = min([next_note, next_window, seconds] + [h[0] for h in held])
        time.sleep(max(0.0, wake - (time.perf_counter() - t0)))
    for release in held:
        feed_ends(time.perf_counter() - t0, release[1], release[2])
    return windows, errors


def run(args: argparse.Namespace) -> int:
    if not Path(args.model).is_file():
        print(f"soak: no model at {args.model}; pass --model", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        proc, endpoints, events = _one_server(args.model, tmp)
        try:
            rss_start = rss_mb(proc.pid)
            tel = Telemetry(events)
            tel.start()
            with Client(ClientConfig(endpoint=endpoints["unix"], events_endpoint=events, timeout=10.0)) as client:
                sid = client.call("session.create", **PARAMS)["session"]
                tel.sid = sid
                windows, errors = play(client, sid, args.minutes * 60, args.notes_per_s, args.window_s,
                                       proc.pid, tel, args.seed, lambda s: print(s, file=sys.stderr, flush=True))
                client.call("session.close", session=sid)
            tel.stop()
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    first, last = windows[0], windows[-1]
    result = {"minutes": args.minutes, "notes_per_s": args.notes_per_s, "notes": last["notes"],
              "rss_mb_at_start": round(rss_start, 1), "rss_mb_after_first_window": first["rss_mb"],
              "rss_mb_at_end": last["rss_mb"],
              "rss_growth_pct": round(100 * (last["rss_mb"] / first["rss_mb"] - 1), 2),
              "first": first, "last": last, "errors": len(errors), "error_samples": errors[:5],
              "server_alive": alive, "windows": windows}
    print(f"soak: {args.minutes} min of harmonize, {last['notes']} player notes, {len(errors)} errors, server "
          f"alive at the end: {alive}")
    print(f"server RSS: {rss_start:.1f} MB at start, {first['rss_mb']:.1f} MB after the first window, "
          f"{last['rss_mb']:.1f} MB at the end ({result['rss_growth_pct']:+.2f}%)")
    for name, key in (("per token (engine)", "token"), ("note-on -> first voice", "note_on_to_first_voice")):
        print(f"{name:<24} first window p50 {first[key]['p50_ms']} / p99 {first[key]['p99_ms']} ms; "
              f"last window p50 {last[key]['p50_ms']} / p99 {last[key]['p99_ms']} ms")
    if args.json:
        print(json.dumps(result))
    return 0 if alive and not errors else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
