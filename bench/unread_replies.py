"""Server memory for replies nobody reads: ZeroMQ clients post requests and never read, a real `musebridge serve`
process answers them, and its RSS (/proc/PID/status VmRSS) is compared before and after.

    python bench/unread_replies.py [--clients 10] [--requests 3000] [--generates 2] [--reply-hwm N]

Each client is a DEALER with a one-message receive queue and a 4 KB kernel receive buffer, so replies pile up on
the server, not in the client. Requests: `session.list` over 16 open sessions (about 9 KB of reply each, cheap to
make), then `generate` with `notes` (about 13 KB each for 100 notes). --reply-hwm N starts the server with
ZeroMQ queueing N replies per client and no bound on the replies waiting in engine/server/replies.py (1000:
ZeroMQ's default queue, as before the bound).
Prints one JSON line: RSS before and after (MB), growth, seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import zmq
from musebridge.engine.server import protocol as P
from musebridge.engine.server.client import Client, ClientConfig

SERVE = ("import sys; import musebridge.engine.server.replies as R; R.ZMQ_HWM = int(sys.argv[1]); "
         "R.OUTBOX_BYTES = R.TOTAL_BYTES = 1 << 40; from musebridge.cli import main; sys.exit(main(sys.argv[2:]))")
INSTRUMENTS = ["piano", "chromatic", "organ", "guitar", "bass", "strings", "voice", "brass", "reed", "pipe"]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str | None, reply_hwm: int | None) -> tuple[subprocess.Popen, ClientConfig]:
    port, pub = free_port(), free_port()
    args = ["serve", "--port", str(port), "--pub-port", str(pub), "--max-sessions", "16"]
    args += ["--model", model] if model else []
    cmd = ([sys.executable, "-c", SERVE, str(reply_hwm)] if reply_hwm else
           [sys.executable, "-m", "musebridge"]) + args
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    config = ClientConfig(endpoint=f"tcp://127.0.0.1:{port}", events_endpoint=f"tcp://127.0.0.1:{pub}",
                          timeout=30.0)
    with Client(config, zmq.Context()) as c:
        for _ in range(240):
            if c.ping(timeout=0.5):
                return proc, config
            if proc.poll() is not None:
                raise SystemExit(proc.stderr.read())
    raise SystemExit("the server did not answer")


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settled(proc: subprocess.Popen, quiet_s: float = 2.0, limit_s: float = 600) -> None:
    """Wait until the server has answered everything it was sent: less than 5% of a core used and RSS within
    0.5 MB for quiet_s."""
    deadline, since = time.monotonic() + limit_s, time.monotonic()
    last_rss, last_cpu = rss_mb(proc.pid), cpu_s(proc.pid)
    while time.monotonic() < deadline:
        time.sleep(0.5)
        rss, cpu = rss_mb(proc.pid), cpu_s(proc.pid)
        if abs(rss - last_rss) > 0.5 or cpu - last_cpu > 0.025:
            since = time.monotonic()
        last_rss, last_cpu = rss, cpu
        if time.monotonic() - since > quiet_s:
            return


def flood(config: ClientConfig, sessions: list[str], clients: int, requests: int, generates: int) -> list:
    """`clients` clients that each post `requests` session.list and then `generates` generate requests, never
    reading; returns them (close them to end the clients). Client._send sends one request as the client makes
    it (with whatever the server asks requests to carry) without reading replies, which post() would read."""
    ctx = zmq.Context()
    for option, value in ((zmq.RCVHWM, 1), (zmq.RCVBUF, 4096), (zmq.SNDHWM, 0), (zmq.LINGER, 0)):
        ctx.setsockopt(option, value)  # defaults for the clients' sockets
    flooding = []
    for n in range(clients):
        client = Client(config, ctx)
        flooding.append(client)
        for _ in range(requests):
            client._send("session.list", {})
        for _ in range(generates):
            client._send("generate", {"session": sessions[n % len(sessions)], "notes": 100})
    return flooding


def measure(model: str | None, clients: int, requests: int, generates: int, reply_hwm: int | None) -> dict:
    proc, config = start(model, reply_hwm)
    try:
        with Client(config, zmq.Context()) as c:
            sessions = [c.call("session.create", instruments=INSTRUMENTS, seed=i)["session"] for i in range(16)]
            reply = len(P.encode_reply(P.Reply("x", True, c.call("session.list"))))
        settled(proc)
        before, t0 = rss_mb(proc.pid), time.monotonic()
        flooding = flood(config, sessions, clients, requests, generates)
        settled(proc)
        after = rss_mb(proc.pid)
        for client in flooding:
            client.close()
        return {"clients": clients, "requests": requests, "generates": generates, "list_reply_bytes": reply,
                "reply_hwm": reply_hwm or "default", "rss_before_mb": round(before, 1),
                "rss_after_mb": round(after, 1), "growth_mb": round(after - before, 1),
                "seconds": round(time.monotonic() - t0, 1)}
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: the bundled model)")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--requests", type=int, default=3000, help="session.list posts per client")
    parser.add_argument("--generates", type=int, default=2, help="generate (notes 100) posts per client")
    parser.add_argument("--reply-hwm", type=int, help="start the server with ZeroMQ queueing this many replies "
                        "per client and no other bound (1000: as before the bound)")
    args = parser.parse_args()
    print(json.dumps(measure(args.model, args.clients, args.requests, args.generates, args.reply_hwm)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
