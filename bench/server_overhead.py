"""What going through `musebridge serve` costs per request, against calling the engine in-process.

    .venv/bin/python bench/server_overhead.py [--model MODEL.onnx] [--n 2000] [--json]

Measures, in one run on the same model: (a) in-process `Service.handle` for `status` and for a one-token
`generate`, (b) the same requests through the Python client to a `musebridge serve` subprocess over loopback TCP
(ZeroMQ), (c) over ZeroMQ ipc://, (d) over the server's local Unix socket (`--local`, engine/local.py: the path
`musebridge play` uses). The overhead of a path is its time minus (a), per round trip, p50/p99, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from musebridge.engine.client import Client, ClientConfig
from musebridge.engine.model_file import default_model_path
from musebridge.engine.service import Service
from musebridge.engine.session import Engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentiles(samples: list[float]) -> dict:
    a = np.array(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 4), "p99_ms": round(float(np.percentile(a, 99)), 4)}


def _time(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def in_process(model: str, n: int) -> dict:
    service = Service(Engine.load(model))
    sid = service.handle("session.create", {"instruments": ["strings"], "seed": 1})[0]["session"]
    status = _time(lambda: service.handle("status", {}), n)
    gen = _time(lambda: service.handle("generate", {"session": sid, "max_tokens": 1}), n)
    return {"status": _percentiles(status), "generate_1": _percentiles(gen)}


def through_server(model: str, n: int, transport: str, tmp: str) -> dict:
    """transport: "tcp" (ZeroMQ over loopback), "ipc" (ZeroMQ ipc://) or "unix" (the --local socket)."""
    port, pub = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "musebridge", "serve", "--model", model, "--port", str(port),
           "--pub-port", str(pub)]
    endpoint = {"tcp": f"tcp://127.0.0.1:{port}", "ipc": f"ipc://{tmp}/musebridge-rep",
                "unix": f"unix://{tmp}/engine.sock"}[transport]
    cmd += {"tcp": [], "ipc": ["--ipc", tmp], "unix": ["--local", f"{tmp}/engine.sock"]}[transport]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with Client(ClientConfig(endpoint=endpoint, timeout=5.0)) as c:
            while not c.ping(timeout=0.5):
                if proc.poll() is not None:
                    raise RuntimeError("musebridge serve exited")
                time.sleep(0.1)
            sid = c.call("session.create", instruments=["strings"], seed=1)["session"]
            status = _time(lambda: c.call("status"), n)
            gen = _time(lambda: c.call("generate", session=sid, max_tokens=1), n)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return {"status": _percentiles(status), "generate_1": _percentiles(gen)}


PATHS = ("tcp", "ipc", "unix")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--n", type=int, default=2000, help="requests per measurement")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not Path(args.model).is_file():
        print(f"server_overhead: no model at {args.model}; pass --model", file=sys.stderr)
        return 2
    local = in_process(args.model, args.n)
    result = {"in_process": local}
    for name in PATHS:
        with tempfile.TemporaryDirectory() as tmp:
            result[name] = through_server(args.model, args.n, name, tmp)
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
