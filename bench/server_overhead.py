"""What going through `musebridge serve` costs per request, against calling the engine in-process.

    .venv/bin/python bench/server_overhead.py [--model MODEL.onnx] [--n 2000] [--json]

Measures, in one run on the same model: (a) in-process `Service.handle` for `status` and for a one-token
`generate`, (b) the same requests through the Python client to a `musebridge serve` subprocess over loopback TCP
(ZeroMQ), (c) over ZeroMQ ipc://, (d) over the server's local Unix socket (`--local`, engine/server/local.py: the
path `musebridge play` uses), (e) over its direct loopback TCP port (`--direct-port`: the same frames as (d), no
ZeroMQ). The four servers run side by side and the requests go in interleaved blocks
(`--rounds`), so every path sees the same load of a shared machine. The overhead of a path is its time minus
(a), per round trip, p50/p99, in milliseconds. Then (f) the round trip alone (`status`, back to back) per
transport, beside the floor: the same client against bench/echo_server.py, a server that only parses each
request and answers it; (g) the per-note overhead paired call by call: a one-token `generate`'s round trip minus
the engine's own time for that call inside the server (its `telemetry` event), with a player's pauses before
each call (`--paired-gaps-ms`); (h) the round trip and its floor as in (f), after a player's pause before each
call (`--pause-ms`). `--paired-only` runs just (g) and (h).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.server.client import Client, ClientConfig
from musebridge.engine.server.service import Service
from musebridge.engine.sessions.session import Engine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.net import free_port  # noqa: E402


def _percentiles(samples: list[float]) -> dict:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4)}


def _time(fn, n: int, gap: float = 0.0) -> list[float]:
    out = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


class InProcess:
    """The service called directly: the baseline."""

    def __init__(self, model: str):
        self.service = Service(Engine.load(model))
        self.sid = self.service.handle("session.create", {"instruments": ["strings"], "seed": 1})[0]["session"]

    def status(self) -> None:
        self.service.handle("status", {})

    def generate(self) -> None:
        self.service.handle("generate", {"session": self.sid, "max_tokens": 1})

    def close(self) -> None:
        pass


def _serve(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait_ready(proc: subprocess.Popen, client: Client) -> None:
    """Until the server answers `status` through `client` (RuntimeError when it exits first)."""
    while not client.ping(timeout=0.5):
        if proc.poll() is not None:
            raise RuntimeError(f"the server process exited ({' '.join(map(str, proc.args))})")
        time.sleep(0.1)


class Served:
    """A `musebridge serve` subprocess and a client on one transport: "tcp" (ZeroMQ over loopback), "ipc"
    (ZeroMQ ipc://), "unix" (the --local socket) or "direct" (the --direct-port loopback TCP port)."""

    def __init__(self, model: str, transport: str, tmp: str):
        port, pub = free_port(), free_port()  # never the same port twice
        cmd = [sys.executable, "-m", "musebridge", "serve", "--model", model, "--port", str(port),
               "--pub-port", str(pub)]
        direct = free_port()
        endpoint = {"tcp": f"tcp://127.0.0.1:{port}", "ipc": f"ipc://{tmp}/musebridge-rep",
                    "unix": f"unix://{tmp}/engine.sock", "direct": f"direct://127.0.0.1:{direct}"}[transport]
        cmd += {"tcp": [], "ipc": ["--ipc", tmp], "unix": ["--local", f"{tmp}/engine.sock"],
                "direct": ["--direct-port", str(direct)]}[transport]
        self.proc = _serve(cmd)
        self.client = Client(ClientConfig(endpoint=endpoint, timeout=5.0))
        _wait_ready(self.proc, self.client)
        self.sid = self.client.call("session.create", instruments=["strings"], seed=1)["session"]

    def status(self) -> None:
        self.client.call("status")

    def generate(self) -> None:
        self.client.call("generate", session=self.sid, max_tokens=1)

    def close(self) -> None:
        self.client.close()
        _stop([self.proc])


PATHS = ("tcp", "ipc", "unix", "direct")


def measure(model: str, n: int, rounds: int, tmp: str, gap: float = 0.0) -> dict:
    """n requests of each kind per path, in `rounds` interleaved blocks (every path sees the same drift of a
    shared machine), `gap` seconds of sleep before each request (0: back to back)."""
    paths = {"in_process": InProcess(model)}
    try:
        for name in PATHS:
            folder = Path(tmp) / name
            folder.mkdir()
            paths[name] = Served(model, name, str(folder))
        samples = {name: {"status": [], "generate_1": []} for name in paths}
        block = max(1, n // rounds)
        for _ in range(rounds):
            for name, path in paths.items():
                samples[name]["status"] += _time(path.status, block, gap)
                samples[name]["generate_1"] += _time(path.generate, block, gap)
    finally:
        for path in paths.values():
            path.close()
    return {name: {kind: _percentiles(v) for kind, v in kinds.items()} for name, kinds in samples.items()}


def _one_server(model: str, tmp: str) -> tuple[subprocess.Popen, dict[str, str], str]:
    """One `musebridge serve` listening on ZeroMQ TCP, a Unix socket and a direct TCP port, answering:
    (process, command endpoint per transport, events endpoint)."""
    port, pub, direct = free_port(), free_port(), free_port()
    sock = f"{tmp}/one.sock"
    proc = _serve([sys.executable, "-m", "musebridge", "serve", "--model", model, "--port", str(port),
                   "--pub-port", str(pub), "--local", sock, "--direct-port", str(direct)])
    endpoints = {"tcp": f"tcp://127.0.0.1:{port}", "unix": f"unix://{sock}",
                 "direct": f"direct://127.0.0.1:{direct}"}
    try:
        with Client(ClientConfig(endpoint=endpoints["tcp"], timeout=0.5)) as probe:
            _wait_ready(proc, probe)
    except BaseException:
        proc.kill()
        raise
    return proc, endpoints, f"tcp://127.0.0.1:{pub}"


def _floors(tmp: str) -> tuple[list[subprocess.Popen], dict[str, str]]:
    """bench/echo_server.py on each transport (the least a Python server can do per round trip): (processes,
    command endpoint per transport), answering."""
    port, direct = free_port(), free_port()
    sock = f"{tmp}/floor-{direct}.sock"  # a fresh path per call: a killed floor leaves its socket file
    echo = [sys.executable, str(Path(__file__).with_name("echo_server.py"))]
    procs = [_serve(echo + ["zmq", f"tcp://127.0.0.1:{port}"]), _serve(echo + ["unix", sock]),
             _serve(echo + ["direct", str(direct)])]
    endpoints = {"tcp": f"tcp://127.0.0.1:{port}", "unix": f"unix://{sock}",
                 "direct": f"direct://127.0.0.1:{direct}"}
    try:
        for proc, endpoint in zip(procs, endpoints.values(), strict=True):
            with Client(ClientConfig(endpoint=endpoint, timeout=0.5)) as probe:  # hangs up: one client at a time
                _wait_ready(proc, probe)
    except BaseException:
        _stop(procs)
        raise
    return procs, endpoints


def _stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=20)


def measure_round_trips(endpoints: dict[str, str], n: int, rounds: int, gap: float = 0.0) -> dict:
    """The transports alone: per round and endpoint, a fresh client makes 100 warm-up calls back to back, then n
    `status` calls with `gap` seconds of sleep before each (0: back to back). Returns per endpoint the p50 and
    p99 of each round, ms."""
    out: dict[str, dict[str, list[float]]] = {name: {"p50_ms": [], "p99_ms": []} for name in endpoints}
    for _ in range(rounds):
        for name, endpoint in endpoints.items():
            with Client(ClientConfig(endpoint=endpoint, timeout=5.0)) as client:
                _time(lambda c=client: c.call("status"), 100)
                figures = _percentiles(_time(lambda c=client: c.call("status"), n, gap))
            for key, value in figures.items():
                out[name][key].append(value)
    return out


def measure_against_floors(model: str, n: int, rounds: int, tmp: str, gap: float = 0.0) -> dict:
    """measure_round_trips for one server (_one_server) and the floors (_floors), endpoints taking turns."""
    proc, endpoints, _ = _one_server(model, tmp)
    floors: list[subprocess.Popen] = []
    try:
        floors, floor_endpoints = _floors(tmp)
        endpoints |= {f"{name} floor": endpoint for name, endpoint in floor_endpoints.items()}
        return measure_round_trips(endpoints, n, rounds, gap)
    finally:
        _stop([proc, *floors])


def _paired(client: Client, stream, sid: str, n: int, gap: float) -> list[float]:
    """n one-token `generate` calls, `gap` seconds of sleep before each; per call its round trip minus the
    engine's own time for it (the `ms` of its `telemetry` event), seconds."""
    out = []
    for _ in range(n):
        if gap:
            time.sleep(gap)
        t0 = time.perf_counter()
        client.call("generate", session=sid, max_tokens=1)
        rtt = time.perf_counter() - t0
        event = next(e for e in stream if e.session == sid)  # StopIteration: no telemetry within 2 s
        out.append(rtt - event.data["ms"] / 1000)
    return out


def measure_paired(model: str, n: int, gaps: tuple[float, ...], tmp: str) -> dict:
    """Per-note overhead without a separate baseline: for each one-token `generate` through one server
    (_one_server), its round trip at the client minus the time the engine spent on it inside the server (its
    telemetry event, published after the reply). What is left is the protocol (encode, parse), the transport
    and both sides' wake-ups: what the call costs beyond calling the engine in-process. Per transport and gap
    (seconds of sleep before each call: 0 back to back, or a player's pause): p50/p99 ms; the gaps take turns
    in blocks of 50 calls."""
    proc, endpoints, events = _one_server(model, tmp)
    samples = {name: {gap: [] for gap in gaps} for name in endpoints}
    try:
        with Client(ClientConfig(events_endpoint=events)) as watcher:
            stream = watcher.events(("telemetry",), timeout=2.0)
            for name, endpoint in endpoints.items():
                with Client(ClientConfig(endpoint=endpoint, timeout=5.0)) as client:
                    sid = client.call("session.create", instruments=["strings"], seed=1)["session"]
                    for _ in range(100):  # until the subscription has reached the server
                        client.call("generate", session=sid, max_tokens=1)
                        if any(e.session == sid for e in watcher.events(("telemetry",), timeout=0.05)):
                            break
                    _paired(client, stream, sid, 100, 0)
                    for _ in range(max(1, n // 50)):
                        for gap in gaps:
                            samples[name][gap] += _paired(client, stream, sid, 50, gap)
                    client.call("session.close", session=sid)
    finally:
        _stop([proc])
    return {name: {f"{gap * 1000:g}": _percentiles(v) for gap, v in by_gap.items()}
            for name, by_gap in samples.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--n", type=int, default=2000, help="requests of each kind per path")
    p.add_argument("--rounds", type=int, default=10, help="interleaved blocks the requests are split into")
    p.add_argument("--gap-ms", type=float, default=0.0,
                   help="sleep before each request, as between a player's notes (default 0: back to back)")
    p.add_argument("--paired-n", type=int, default=600, help="one-token generate calls per transport and gap in "
                   "the paired measurement (round trip minus the engine's own time)")
    p.add_argument("--paired-gaps-ms", default="10,100", help="sleeps before each paired call, ms (0: back to "
                   "back, which also counts the wait for the previous call's deferred forward pass)")
    p.add_argument("--pause-ms", type=float, default=10.0, help="sleep before each `status` in the round trip "
                   "after a pause, against the floor (--paired-n calls per transport)")
    p.add_argument("--paired-only", action="store_true", help="only the measurements after a pause (paired, and "
                   "the round trip against the floor)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        gaps = tuple(float(g) / 1000 for g in args.paired_gaps_ms.split(","))
    except ValueError:
        print(f"server_overhead: --paired-gaps-ms takes numbers like 0,10,100, not {args.paired_gaps_ms!r}",
              file=sys.stderr)
        return 2
    if not Path(args.model).is_file():
        print(f"server_overhead: no model at {args.model}; pass --model", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        paired = measure_paired(args.model, args.paired_n, gaps, tmp)
        paused = measure_against_floors(args.model, max(1, args.paired_n // 5), 5, tmp, args.pause_ms / 1000)
        if args.paired_only:
            print(json.dumps({"paired": paired, "paused": paused}) if args.json
                  else _paired_table(paired) + "\n" + _round_trip_table(paused, f"{args.pause_ms:g} ms pause"))
            return 0
        result = measure(args.model, args.n, args.rounds, tmp, args.gap_ms / 1000)
        result["round_trip"] = measure_against_floors(args.model, args.n, 5, tmp)
        result["paired"], result["paused"] = paired, paused
    local = result["in_process"]
    for name in PATHS:
        result[f"{name}_overhead_ms"] = {
            k: round(result[name]["generate_1"][k] - local["generate_1"][k], 4) for k in ("p50_ms", "p99_ms")}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'path':<12}{'status p50':>12}{'p99':>9}{'generate(1 token) p50':>24}{'p99':>9}   (ms)")
    for name in ("in_process", *PATHS):
        r = result[name]
        print(f"{name:<12}{r['status']['p50_ms']:>12.3f}{r['status']['p99_ms']:>9.3f}"
              f"{r['generate_1']['p50_ms']:>24.3f}{r['generate_1']['p99_ms']:>9.3f}")
    for name in PATHS:
        o = result[f"{name}_overhead_ms"]
        print(f"overhead per round trip over {name}: p50 {o['p50_ms']:.3f} ms, p99 {o['p99_ms']:.3f} ms")
    print(_round_trip_table(result["round_trip"], "back to back"))
    print(_paired_table(paired))
    print(_round_trip_table(paused, f"{args.pause_ms:g} ms pause"))
    return 0


def _round_trip_table(figures: dict, pattern: str) -> str:
    lines = [f"round trip alone, `status` {pattern}: one server and the floor (bench/echo_server.py), a fresh "
             "client per transport and round, 5 rounds; ms, one figure per round:"]
    for name, r in figures.items():
        lines.append(f"  {name:<13} p50 {' '.join(f'{x:.3f}' for x in r['p50_ms'])}   "
                     f"p99 {' '.join(f'{x:.3f}' for x in r['p99_ms'])}")
    return "\n".join(lines)


def _paired_table(paired: dict) -> str:
    lines = ["per-note overhead, paired (a one-token generate's round trip minus the engine's own time for that "
             "call; ms p50 / p99), by sleep before each call:"]
    for name, by_gap in paired.items():
        lines.append(f"  {name:<8}" + "   ".join(f"{gap} ms: {r['p50_ms']:.3f} / {r['p99_ms']:.3f}"
                                                for gap, r in by_gap.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
