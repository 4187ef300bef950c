"""Does a client that floods the engine server with bad requests, or one generating a long piece, slow it down
for everyone else?

    .venv/bin/python bench/bad_input.py [--model MODEL.onnx] [--n 2000] [--rounds 3] [--flood-rate 0] [--json]

One `musebridge serve` (ZeroMQ TCP, its Unix socket and its direct TCP port, as bench/server_overhead.py). A
client makes `status` calls back to back over ZeroMQ TCP and over the Unix socket, in blocks that take turns:
  quiet    nothing else running;
  flooded  another process sends the fuzz test's bad messages over ZeroMQ TCP as fast as the server takes them
           (or `--flood-rate` a second; tests/fuzz.py: random bytes, malformed JSON, wrong frame counts, bad
           arguments, 64 KiB frames);
  busy     the control: as many processes spinning in a Python loop (`--hogs`, default 2: the flood keeps two
           processes busy, its sender and the server) and no bad input: what the same CPU load costs anyway;
  long     another process asks for `generate` of 4,096 tokens, again and again (a script writing a piece):
           the server runs it in slices between the others' requests (engine/server/jobs.py).
Prints `status` p50/p99 per transport and state side by side from the same run, the flood's rate and error
replies, and the server's CPU use in each state. `--realtime` runs the server and the `status` client at
SCHED_FIFO, as `musebridge play` runs its engine where allowed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import zmq
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.server import protocol as P
from musebridge.engine.server.client import Client, ClientConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server_overhead import _one_server, _percentiles, _time  # noqa: E402
from tests.fuzz import bad_frames  # noqa: E402

TRANSPORTS = ("tcp", "unix")
STATES = ("quiet", "flooded", "busy", "long")
LONG_TOKENS = 4096


def _ordinary() -> None:
    """A child runs at normal priority even when the benchmark runs at SCHED_FIFO (--realtime)."""
    if hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))


def flood(stop, ready, results, endpoint: str, rate: float = 0.0) -> None:
    """A child process: send bad messages to `endpoint` until `stop` is set, `rate` a second (0: as fast as the
    server takes them), reading the error replies as they come (a client that never read would only have its
    replies dropped). Puts (sent, replies, seconds, codes) on `results`; sets `ready` once 100 are out."""
    _ordinary()
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(endpoint)
    rng, sent, replies, codes = random.Random(7), 0, 0, set()
    t0 = time.perf_counter()
    while not stop.is_set():
        sock.send_multipart(bad_frames(rng, sent))
        sent += 1
        if sent == 100:
            ready.set()
        if rate:
            time.sleep(max(0.0, t0 + sent / rate - time.perf_counter()))
        while sock.poll(0):
            codes.add(P.decode_reply(sock.recv_multipart()[-1]).error_code)
            replies += 1
    seconds = time.perf_counter() - t0
    while sock.poll(1000):  # the replies still on their way
        codes.add(P.decode_reply(sock.recv_multipart()[-1]).error_code)
        replies += 1
    sock.close(0)
    ctx.term()
    results.put((sent, replies, seconds, sorted(codes)))


def hog(stop, ready, results, _endpoint: str, _rate: float = 0.0) -> None:
    """A child process that only keeps a CPU busy until `stop` is set (puts None on `results`)."""
    _ordinary()
    ready.set()
    while not stop.is_set():
        sum(range(10_000))
    results.put(None)


def long_generate(stop, ready, results, endpoint: str, _rate: float = 0.0) -> None:
    """A child process: `generate` of LONG_TOKENS tokens on its own session until `stop` is set. Puts the
    tokens made on `results`."""
    _ordinary()
    with Client(ClientConfig(endpoint=endpoint, timeout=600.0)) as client:
        sid = client.call("session.create", instruments=["strings"], seed=5)["session"]
        tokens = 0
        ready.set()  # its first request reaches the server within the first of the others' calls
        while not stop.is_set():
            tokens += client.call("generate", session=sid, max_tokens=LONG_TOKENS)["tokens"]
        client.call("session.close", session=sid)
    results.put(tokens)


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used; 0.0 where /proc does not exist."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _statuses(endpoints: dict[str, str], n: int, pid: int) -> tuple[dict[str, list[float]], float, float]:
    """n `status` calls per transport after 50 to warm up: (seconds per call by transport, CPU seconds server
    process `pid` used meanwhile, wall seconds)."""
    out = {}
    cpu0, wall0 = _cpu_s(pid), time.perf_counter()
    for name in TRANSPORTS:
        with Client(ClientConfig(endpoint=endpoints[name], timeout=5.0)) as client:
            _time(lambda c=client: c.call("status"), 50)
            out[name] = _time(lambda c=client: c.call("status"), n)
    return out, _cpu_s(pid) - cpu0, time.perf_counter() - wall0


def _block(endpoints: dict[str, str], n: int, pid: int, spawn, target, count: int,
           rate: float = 0.0) -> tuple[tuple, list]:
    """_statuses while `count` child processes run `target`: (its result, what the children reported)."""
    stop, results = spawn.Event(), spawn.Queue()
    ready = [spawn.Event() for _ in range(count)]
    children = [spawn.Process(target=target, args=(stop, r, results, endpoints["tcp"], rate))
                for r in ready]
    for child in children:
        child.start()
    if not all(r.wait(30) for r in ready):
        raise RuntimeError(f"the {target.__name__} process did not start")
    measured = _statuses(endpoints, n, pid)
    stop.set()
    reports = [results.get(timeout=30) for _ in children]
    for child in children:
        child.join(10)
    return measured, reports


def measure(model: str, n: int, rounds: int, hogs: int, tmp: str, rate: float = 0.0) -> dict:
    """`rounds` turns of the blocks (STATES), n `status` calls per transport and block."""
    proc, endpoints, _ = _one_server(model, tmp)
    spawn = mp.get_context("spawn")
    times = {state: {name: [] for name in TRANSPORTS} for state in STATES}
    usage = {state: [0.0, 0.0] for state in STATES}  # the server's CPU seconds, wall seconds
    sent = replies = long_tokens = 0
    seconds = 0.0
    codes: set[str] = set()
    try:
        for _ in range(rounds):
            blocks = {"quiet": (_statuses(endpoints, n, proc.pid), [])}
            blocks["flooded"] = _block(endpoints, n, proc.pid, spawn, flood, 1, rate)
            blocks["busy"] = _block(endpoints, n, proc.pid, spawn, hog, hogs)
            blocks["long"] = _block(endpoints, n, proc.pid, spawn, long_generate, 1)
            for state, ((by, cpu, wall), reports) in blocks.items():
                for name, samples in by.items():
                    times[state][name] += samples
                usage[state][0] += cpu
                usage[state][1] += wall
                for x in reports:
                    if state == "flooded":
                        s, r, sec, c = x
                        sent, replies, seconds, codes = sent + s, replies + r, seconds + sec, codes | set(c)
                    elif state == "long":
                        long_tokens += x
        alive = proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return {"status_ms": {state: {name: _percentiles(v) for name, v in by.items()} for state, by in times.items()},
            "flood": {"sent": sent, "error_replies": replies, "per_s": round(sent / max(seconds, 1e-9)),
                      "codes": sorted(codes)},
            "server_cpu_share": {state: round(cpu / max(wall, 1e-9), 2) for state, (cpu, wall) in usage.items()},
            "long_tokens": long_tokens,
            "server_alive": alive, "hogs": hogs}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(default_model_path()))
    p.add_argument("--n", type=int, default=2000, help="status calls per transport and block")
    p.add_argument("--rounds", type=int, default=3, help="turns of the blocks (quiet, flooded, busy, long)")
    p.add_argument("--hogs", type=int, default=2, help="spinning processes in the busy blocks")
    p.add_argument("--flood-rate", type=float, default=0.0, metavar="PER_S",
                   help="bad messages a second (default 0: as fast as the server takes them)")
    p.add_argument("--realtime", action="store_true", help="the server and the `status` client at SCHED_FIFO, "
                   "as `musebridge play` runs its engine and threads where allowed (the flood and the hogs not)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if not Path(args.model).is_file():
        print(f"bad_input: no model at {args.model}; pass --model", file=sys.stderr)
        return 2
    if args.realtime:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # the server started next inherits it
        except (OSError, AttributeError) as exc:
            print(f"bad_input: --realtime needs SCHED_FIFO rights (e.g. the audio group): {exc}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.model, args.n, args.rounds, args.hogs, tmp, args.flood_rate)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"`status` round trip, ms p50 / p99 ({args.rounds} x {args.n} calls per transport and state; busy: "
          f"{args.hogs} spinning processes, no bad input):")
    for name in TRANSPORTS:
        print(f"  {name:<6}" + "   ".join(f"{state} {r['p50_ms']:.3f} / {r['p99_ms']:.3f}"
                                       for state, r in ((s, result["status_ms"][s][name]) for s in STATES)))
    f = result["flood"]
    print(f"flood: {f['sent']} bad messages at {f['per_s']}/s, {f['error_replies']} error replies "
          f"({', '.join(f['codes'])}); server still running: {result['server_alive']}")
    print(f"long: the other client's `generate` calls made {result['long_tokens']} tokens meanwhile")
    print("the server's CPU use while the `status` calls ran: " + ", ".join(
        f"{state} {share:.0%}" for state, share in result["server_cpu_share"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
