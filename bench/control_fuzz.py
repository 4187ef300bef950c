"""Control fuzz: malformed and random control messages to a real `musebridge serve`; does it crash or grow?

    .venv/bin/python bench/control_fuzz.py [--messages 100000] [--model MODEL.onnx] [--json]

One `musebridge serve` (ZeroMQ TCP, its Unix socket and its direct TCP port, as bench/server_overhead.py) with
one open session. `--messages` messages over ZeroMQ (a DEALER socket) and as many over the direct transport
(`--direct-port`, length-prefixed frames, engine/server/local.py), up to `--window` in flight at once, in rotation:
  tests/fuzz.py's bad frames (every other message): random bytes, malformed JSON, wrong frame counts (ZeroMQ;
    on the direct transport the frames are joined into one), mistyped requests, frames over the size limit;
  mutated requests (the rest): every command, with arguments dropped, added, of the wrong type, out of range,
    huge, nested or unicode, on the open session, a closed one or one that never was; ids and versions wrong.
    A `generate` always carries max_tokens <= 4, so no request runs long;
  direct transport only, one in 500: a header announcing more than the limit, or a frame cut short by a hang-up
    (the server closes or forgets that connection: a new one follows).
With the server's connection-file key where it has one (engine/server/connection.py), so the arguments are checked.
Counts replies by code, messages left unanswered, whether the server is still running and answering `status`,
and its RSS before and after (and after a `session.close` of the session).
"""

from __future__ import annotations

import argparse
import inspect
import json
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import zmq
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.server import protocol as P
from musebridge.engine.server.client import Client, ClientConfig
from musebridge.engine.server.local import HEADER, frame

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.server_overhead import _one_server  # noqa: E402
from bench.soak import rss_mb  # noqa: E402
from tests.fuzz import bad_frames  # noqa: E402

try:
    from musebridge.engine.server.connection import find_key
except ImportError:  # a server without connection files
    find_key = None

ODD = (None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, 1e308, -0.0, float("nan"), "", "x" * 300, "é♪\u0000",
       [], [1, "a"], {}, {"a": {"b": [None]}}, "s1", "s999999", 4096, 131073, 0.5, "C major", "piano")
EVENT_FIELDS = ("t", "type", "channel", "note", "velocity", "control", "value", "program", "engine")


def _key(endpoint: str) -> str:
    return (find_key(endpoint) or "") if find_key else ""


def _bad(rng: random.Random, i: int, key: str) -> list[bytes]:
    if "key" in inspect.signature(bad_frames).parameters:
        return bad_frames(rng, i, key)
    return bad_frames(rng, i)


def _odd(rng: random.Random):
    if rng.random() < 0.3:
        return rng.uniform(-1e6, 1e6) if rng.random() < 0.5 else rng.randrange(-(2**40), 2**40)
    value = rng.choice(ODD)
    return float("inf") if value == 1e308 and rng.random() < 0.5 else value


def _event(rng: random.Random) -> dict:
    event = {"t": rng.uniform(-1, 100), "type": rng.choice(("note_on", "note_off", "control_change",
                                                             "program_change", "sysex", "clock", "bogus")),
             "channel": rng.randrange(-1, 17), "note": rng.randrange(-1, 129), "velocity": rng.randrange(-1, 129)}
    for _ in range(rng.randrange(3)):
        field = rng.choice(EVENT_FIELDS)
        if rng.random() < 0.5:
            event.pop(field, None)
        else:
            event[field] = _odd(rng)
    return event


def mutated(rng: random.Random, sid: str, key: str) -> bytes:
    """One request built from the command table, then broken in a few random ways."""
    cmd = rng.choice(list(P.COMMANDS) + ["", "bogus", "status ", "STATUS"])
    spec = P.COMMANDS.get(cmd, {})
    args = {}
    for name in spec:
        if rng.random() < 0.6:
            args[name] = _odd(rng)
    if "session" in spec or rng.random() < 0.1:
        args["session"] = rng.choice((sid, sid, "s0", "nope", _odd(rng)))
    if cmd in ("feed", "generate") and rng.random() < 0.6:
        args["events" if cmd == "feed" else "feed"] = [_event(rng) for _ in range(rng.randrange(0, 6))]
    if rng.random() < 0.2:
        args[rng.choice(("extra", "max_tokens", "best_of", "until", "style", "instruments"))] = _odd(rng)
    if cmd == "generate":
        args["max_tokens"] = rng.randrange(-1, 5)
        args.pop("until", None)
    obj = {"v": 1 if rng.random() < 0.9 else _odd(rng), "id": f"m{rng.randrange(10**6)}" if rng.random() < 0.9
           else _odd(rng), "cmd": cmd, "args": args if rng.random() < 0.95 else _odd(rng)}
    if key and rng.random() < 0.95:
        obj["key"] = key
    for field in ("v", "id", "cmd", "args"):
        if rng.random() < 0.02:
            del obj[field]
    return json.dumps(obj, allow_nan=True).encode()


def _code(payload: bytes) -> str:
    """The reply's error code as sent ("ok" for a result; "undecodable" when not a reply)."""
    try:
        obj = json.loads(payload)
        return "ok" if obj.get("ok") is True else str((obj.get("error") or {}).get("code"))
    except (ValueError, AttributeError):
        return "undecodable"


def over_zmq(endpoint: str, n: int, window: int, sid: str, key: str, seed: int) -> dict:
    rng, codes, sent, got = random.Random(seed), Counter(), 0, 0
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    t0 = time.perf_counter()
    while sent < n or got < sent:
        while sent < n and sent - got < window:
            frames = _bad(rng, sent // 2, key) if sent % 2 == 0 else [b"", mutated(rng, sid, key)]
            sock.send_multipart(frames)
            sent += 1
        if not sock.poll(5000):
            break  # what is left is unanswered
        while sock.poll(0):
            codes[_code(sock.recv_multipart()[-1])] += 1
            got += 1
    seconds = time.perf_counter() - t0
    sock.close()
    ctx.term()
    return {"sent": sent, "replies": got, "unanswered": sent - got, "seconds": round(seconds, 1),
            "codes": dict(codes.most_common())}


class Direct:
    """A direct-transport connection that reads replies without blocking."""

    def __init__(self, address: tuple[str, int]):
        self.sock = socket.create_connection(address, timeout=5)
        self.buf = b""

    def replies(self, timeout: float) -> list[bytes] | None:
        """Replies now readable (waiting up to `timeout` for the first); None when the server closed it."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 20)
        except TimeoutError:
            return []
        except OSError:
            return None
        if not data:
            return None
        self.buf += data
        out = []
        while len(self.buf) >= HEADER.size:
            (length,) = HEADER.unpack_from(self.buf)
            if len(self.buf) < HEADER.size + length:
                break
            out.append(self.buf[HEADER.size:HEADER.size + length])
            self.buf = self.buf[HEADER.size + length:]
        return out


def over_direct(address: tuple[str, int], n: int, window: int, sid: str, key: str, seed: int) -> dict:
    rng, codes, sent, got, cut, connections = random.Random(seed), Counter(), 0, 0, 0, 1
    conn = Direct(address)
    pending = 0
    t0 = time.perf_counter()
    while sent < n or pending:
        while sent < n and pending < window:
            if sent % 2 == 0:
                frames = _bad(rng, sent // 2, key)[1:]
                payload = frames[0] if len(frames) == 1 else b"".join(frames)
            else:
                payload = mutated(rng, sid, key)
            oversized = len(payload) > P.MAX_MESSAGE_BYTES  # answered too_large, then the server hangs up
            if oversized or rng.random() < 0.002:  # or a header over the limit, or a frame cut short
                while pending:  # the replies still due first
                    r = conn.replies(5.0)
                    if not r:
                        break
                    for one in r:
                        codes[_code(one)] += 1
                    got, pending = got + len(r), pending - len(r)
                if oversized or rng.random() < 0.5:
                    conn.sock.sendall(frame(payload) if oversized
                                      else HEADER.pack(P.MAX_MESSAGE_BYTES + 1 + rng.randrange(2**31)))
                    while (r := conn.replies(2.0)) is not None and r:
                        for one in r:
                            codes[_code(one)] += 1
                        got += len(r)
                else:
                    conn.sock.sendall(frame(b'{"v": 1, "id": "cut", "cmd": "status", "args": {}}')[:-5])
                sent += 1
                cut += not oversized
                conn.sock.close()
                conn, pending, connections = Direct(address), 0, connections + 1
                continue
            conn.sock.sendall(frame(payload))
            sent += 1
            pending += 1
        r = conn.replies(5.0)
        if r is None or (not r and pending):
            break
        for payload in r:
            codes[_code(payload)] += 1
        got += len(r)
        pending -= len(r)
    seconds = time.perf_counter() - t0
    conn.sock.close()
    return {"sent": sent, "replies": got, "unanswered": pending, "seconds": round(seconds, 1),
            "connections": connections, "cut_or_bad_headers": cut, "codes": dict(codes.most_common())}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=str(default_model_path()))
    parser.add_argument("--messages", type=int, default=100_000, help="messages per transport (default 100,000)")
    parser.add_argument("--window", type=int, default=32, help="messages in flight at once (default 32)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object with every figure")


def run(args: argparse.Namespace) -> int:
    if not Path(args.model).is_file():
        print(f"control_fuzz: no model at {args.model}; pass --model", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        proc, endpoints, events = _one_server(args.model, tmp)
        try:
            key = _key(endpoints["tcp"])
            with Client(ClientConfig(endpoint=endpoints["tcp"], timeout=5.0)) as client:
                sid = client.call("session.create", instruments=["strings"], player_instrument="piano",
                                  seed=1)["session"]
                client.call("generate", session=sid, max_tokens=64)
                rss = {"start": rss_mb(proc.pid)}
                zmq_r = over_zmq(endpoints["tcp"], args.messages, args.window, sid, key, args.seed)
                rss["after_zmq"] = rss_mb(proc.pid)
                host, port = endpoints["direct"].removeprefix("direct://").split(":")
                direct_r = over_direct((host, int(port)), args.messages, args.window, sid, key, args.seed + 1)
                rss["after_direct"] = rss_mb(proc.pid)
                alive = proc.poll() is None
                answers = alive and client.ping(timeout=5.0)
                if answers:
                    for one in client.call("session.list")["sessions"]:
                        client.call("session.close", session=one["session"] if "session" in one else one["id"])
                rss["end"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    result = {"zmq": zmq_r, "direct": direct_r, "server_alive": alive, "answers_status": answers,
              "server_exit_code_after_sigterm": proc.returncode,
              "rss_mb": {k: round(v, 1) for k, v in rss.items()},
              "connection_key": bool(key)}
    for name, r in (("ZeroMQ", zmq_r), ("direct", direct_r)):
        print(f"{name}: {r['sent']} messages in {r['seconds']} s, {r['replies']} replies, {r['unanswered']} "
              f"unanswered; codes: " + ", ".join(f"{c} {k}" for c, k in r["codes"].items()))
    print(f"direct: {direct_r['connections']} connections (the server closes one after a frame over the limit); "
          f"{direct_r['cut_or_bad_headers']} ended by a header over the limit alone or a frame cut short")
    print(f"server alive at the end: {alive}, answers status: {answers}, exit code after SIGTERM "
          f"{proc.returncode}; RSS MB " + ", ".join(f"{k} {v:.1f}" for k, v in rss.items()))
    if args.json:
        print(json.dumps(result))
    return 0 if alive and answers else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
