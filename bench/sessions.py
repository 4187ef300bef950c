"""16 concurrent sessions: many clients generating at once on one `musebridge serve`.

    .venv/bin/python bench/sessions.py [--clients 16] [--seconds 60] [--tokens 32] [--model MODEL.onnx] [--json]

One `musebridge serve` (ZeroMQ TCP, as scripts use it; default --max-sessions 16). First one client alone for
`--seconds` / 4 (the baseline), then `--clients` client processes at once, each with its own session (strings
over a piano player, context 256 as `play` asks, its own seed), each calling `generate` of `--tokens` tokens back
to back for `--seconds`, feeding a player's note every eighth call. Then one more `session.create` while they
are all open (refused `overloaded` at the default cap). Reports, for the baseline and the crowd: per-token time
the engine measured (its `telemetry` events: ms / tokens per `generate`, weighted by tokens), the client's round
trip per `generate` and per token (round trip / tokens: waiting behind the other sessions included), p50/p99,
tokens a second over all sessions, and errors by code.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.server.client import Client, ClientConfig, ClientError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server_overhead import _one_server  # noqa: E402
from bench.soak import Telemetry, rss_mb  # noqa: E402


def client_loop(endpoint: str, seed: int, seconds: float, tokens: int, start, results) -> None:
    """A child process: one session, `generate` back to back for `seconds` after `start` is set."""
    rts, per_token, errors, made = [], [], Counter(), 0
    with Client(ClientConfig(endpoint=endpoint, timeout=60.0)) as client:
        try:
            sid = client.call("session.create", instruments=["strings"], player_instrument="piano",
                              context=256, seed=seed)["session"]
        except ClientError as exc:
            results.put({"rts": [], "per_token": [], "errors": {exc.code: 1}, "tokens": 0, "sid": None})
            return
        start.wait()
        t0 = time.perf_counter()
        i, t_player = 0, 0.0
        while time.perf_counter() - t0 < seconds:
            extra = {}
            if i % 8 == 0:
                t_player += 0.5
                extra["feed"] = [{"t": t_player, "type": "note_on", "channel": 0, "note": 60 + i % 12,
                                  "velocity": 80},
                                 {"t": t_player + 0.3, "type": "note_off", "channel": 0, "note": 60 + i % 12,
                                  "velocity": 0}]
            t1 = time.perf_counter()
            try:
                reply = client.call("generate", session=sid, max_tokens=tokens, **extra)
            except ClientError as exc:
                errors[exc.code] += 1
                continue
            rt = time.perf_counter() - t1
            rts.append(rt * 1000)
            if reply["tokens"]:
                per_token += [rt * 1000 / reply["tokens"]] * reply["tokens"]
                made += reply["tokens"]
            t_player = max(t_player, reply["time"])
            i += 1
        results.put({"rts": rts, "per_token": per_token, "errors": dict(errors), "tokens": made, "sid": sid,
                     "seconds": time.perf_counter() - t0})
        client.call("session.close", session=sid)


def pct(samples) -> dict:
    if not len(samples):
        return {"p50_ms": None, "p99_ms": None}
    a = np.asarray(samples)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def crowd(endpoint: str, n: int, seconds: float, tokens: int, tel: Telemetry, extra_create: bool) -> dict:
    spawn = mp.get_context("spawn")
    start, results = spawn.Event(), spawn.Queue()
    procs = [spawn.Process(target=client_loop, args=(endpoint, 100 + k, seconds, tokens, start, results))
             for k in range(n)]
    for p in procs:
        p.start()
    with Client(ClientConfig(endpoint=endpoint, timeout=10.0)) as probe:
        deadline = time.monotonic() + 60
        while len(probe.call("session.list")["sessions"]) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        over = None
        if extra_create:
            try:
                probe.call("session.create", instruments=["strings"])
                over = "created"
            except ClientError as exc:
                over = exc.code
    tel.take()
    start.set()
    out = [results.get(timeout=seconds + 120) for _ in procs]
    engine_ms = tel.take()
    for p in procs:
        p.join(10)
    errors = Counter()
    for r in out:
        errors.update(r["errors"])
    wall = max(r.get("seconds", seconds) for r in out)
    return {"clients": n, "sessions_made": sum(r["sid"] is not None for r in out),
            "engine_per_token": pct(engine_ms),
            "round_trip_per_generate": pct([x for r in out for x in r["rts"]]),
            "round_trip_per_token": pct([x for r in out for x in r["per_token"]]),
            "generates": sum(len(r["rts"]) for r in out), "tokens": sum(r["tokens"] for r in out),
            "tokens_per_s": round(sum(r["tokens"] for r in out) / wall), "errors": dict(errors),
            "one_more_create": over}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--clients", type=int, default=16, help="clients, one session each (default 16)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long they generate (default 60)")
    parser.add_argument("--tokens", type=int, default=32, help="max_tokens per generate (default 32)")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object with every figure")


class _AnySession(Telemetry):
    """Telemetry of every session."""

    def _loop(self) -> None:
        with Client(self.config) as client:
            while not self._stop.is_set():
                for event in client.events(("telemetry",), timeout=0.2):
                    tokens = event.data.get("tokens", 0)
                    if tokens:
                        with self.lock:
                            self.samples += [event.data["ms"] / tokens] * tokens
                    if self._stop.is_set():
                        return


def run(args: argparse.Namespace) -> int:
    if not Path(args.model).is_file():
        print(f"sessions: no model at {args.model}; pass --model", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        proc, endpoints, events = _one_server(args.model, tmp)
        try:
            tel = _AnySession(events)
            tel.start()
            rss0 = rss_mb(proc.pid)
            alone = crowd(endpoints["tcp"], 1, args.seconds / 4, args.tokens, tel, False)
            many = crowd(endpoints["tcp"], args.clients, args.seconds, args.tokens, tel, True)
            rss1 = rss_mb(proc.pid)
            tel.stop()
            alive = proc.poll() is None
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    result = {"alone": alone, "crowd": many, "server_alive": alive, "rss_mb": [round(rss0, 1), round(rss1, 1)],
              "tokens_per_generate": args.tokens}
    for name, r in (("1 session", alone), (f"{args.clients} sessions", many)):
        print(f"{name:<12} engine per token p50 {r['engine_per_token']['p50_ms']} / p99 "
              f"{r['engine_per_token']['p99_ms']} ms; client round trip per token p50 "
              f"{r['round_trip_per_token']['p50_ms']} / p99 {r['round_trip_per_token']['p99_ms']} ms, "
              f"per generate ({args.tokens} tokens) p50 {r['round_trip_per_generate']['p50_ms']} / p99 "
              f"{r['round_trip_per_generate']['p99_ms']} ms; {r['tokens_per_s']} tokens/s in all; "
              f"{r['generates']} generates; errors {r['errors'] or 0}")
    print(f"sessions made {many['sessions_made']} of {args.clients}; one more session.create: "
          f"{many['one_more_create']}; server alive {alive}; RSS {rss0:.1f} -> {rss1:.1f} MB")
    if args.json:
        print(json.dumps(result))
    return 0 if alive and not many["errors"] else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
