"""The floor for bench/server_overhead.py: a server that does nothing but parse each request and answer it.

    .venv/bin/python bench/echo_server.py zmq tcp://127.0.0.1:PORT
    .venv/bin/python bench/echo_server.py unix PATH
    .venv/bin/python bench/echo_server.py direct PORT

Each request (the protocol's JSON, engine/server/protocol.py, read and written with orjson as there) gets {"v": 1,
"id": <its id>, "ok": true, "result": {}} on the same transport and in the same frames as `musebridge serve`
answers it: a ZeroMQ ROUTER, or the direct transport's length-prefixed frames on a Unix socket or a loopback TCP
port (engine/server/local.py), one client at a time. No validation, no service, no poller, no events: the least a
Python server in one process can do per round trip. Measured with the same client and in the same pattern as the
real server, what the real server costs beyond it is ours to cut; the floor itself is this machine's (its wake-ups,
its caches) and Python's.
Runs until killed.
"""

from __future__ import annotations

import socket
import sys

import orjson
import zmq
from musebridge.engine.server.local import HEADER  # the direct transport's frame header


def answer(request: bytes) -> bytes:
    """The reply to one request frame."""
    rid = orjson.loads(request).get("id")
    return orjson.dumps({"v": 1, "id": rid, "ok": True, "result": {}})


def serve_zmq(endpoint: str) -> None:
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        identity, *frames = sock.recv_multipart()
        sock.send_multipart([identity, b"", answer(frames[-1])])


def serve_stream(listener: socket.socket) -> None:
    listener.listen(1)
    while True:
        conn, _ = listener.accept()
        if conn.family == socket.AF_INET:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        while data := conn.recv(65536):
            buf += data
            while len(buf) >= HEADER.size and len(buf) >= HEADER.size + HEADER.unpack_from(buf)[0]:
                end = HEADER.size + HEADER.unpack_from(buf)[0]
                reply = answer(buf[HEADER.size:end])
                conn.sendall(HEADER.pack(len(reply)) + reply)
                buf = buf[end:]
        conn.close()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("zmq", "unix", "direct"):
        print("usage: echo_server.py zmq ENDPOINT | unix PATH | direct PORT", file=sys.stderr)
        return 2
    kind, where = argv
    if kind == "zmq":
        serve_zmq(where)
        return 0
    if kind == "unix":
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(where)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", int(where)))
    serve_stream(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
