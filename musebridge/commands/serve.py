"""`musebridge serve`: run the engine server until SIGINT/SIGTERM (see engine/server/zmq_server.py,
docs/protocol.md)."""

from __future__ import annotations

import argparse
import logging
import sys

from musebridge.engine.errors import EngineError
from musebridge.engine.server.client import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PUB_PORT
from musebridge.engine.server.local import DEFAULT_DIRECT_PORT, DIRECT_HOST
from musebridge.engine.server.priority import set_fifo
from musebridge.engine.server.service import Service
from musebridge.engine.server.zmq_server import Server, ServerConfig
from musebridge.engine.sessions.session import Engine

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="MODEL.onnx", help="model file (default: the bundled model)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="interface to listen on (default: loopback; any "
                        "other address needs --keys)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="request/reply TCP port")
    parser.add_argument("--pub-port", type=int, default=DEFAULT_PUB_PORT, help="event TCP port")
    parser.add_argument("--ipc", metavar="DIR", help="listen on ipc:// sockets in DIR instead of TCP")
    parser.add_argument("--local", metavar="PATH", help="also answer on this Unix socket (mode 0600; the fast "
                        "path `musebridge play` uses; clients connect with endpoint unix://PATH)")
    parser.add_argument("--direct-port", type=int, metavar="PORT",
                        help=f"also answer on this loopback TCP port (the fast path without ZeroMQ, e.g. "
                        f"{DEFAULT_DIRECT_PORT}; clients connect with endpoint direct://127.0.0.1:PORT; "
                        "not with --keys)")
    parser.add_argument("--keys", metavar="DIR", help="CURVE keys from `musebridge keys DIR`")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads per session step")
    parser.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda"),
                        help="onnxruntime execution provider; auto: CUDA when onnxruntime-gpu sees a GPU, "
                        "else CPU (default %(default)s)")
    parser.add_argument("--session-timeout", type=float, default=300.0, metavar="S",
                        help="close sessions unused for S seconds (default 300)")
    parser.add_argument("--max-sessions", type=int, default=16,
                        help="sessions open at once; one more is refused as overloaded (default %(default)s)")
    parser.add_argument("--spin-ms", type=float, default=0.3, metavar="MS",
                        help="after answering, poll this long without sleeping before blocking (default 0.3; "
                        "0: never spin; see docs/protocol.md)")
    parser.add_argument("--live-priority", type=int, default=0, metavar="N",
                        help="once the model is loaded, serve at SCHED_FIFO priority N (Linux, where allowed; "
                        "`play` asks for 6, above JACK's clients); long requests run at 1; 0: keep the priority "
                        "the server was started with (default)")
    parser.add_argument("--parent", type=int, metavar="PID", help="stop when process PID (the program that "
                        "started this server) is gone")


def _command_endpoints(rep: str, args: argparse.Namespace) -> list[str]:
    out = [rep] + ([f"unix://{args.local}"] if args.local else [])
    return out + ([f"direct://{DIRECT_HOST}:{args.direct_port}"] if args.direct_port is not None else [])


def run(args: argparse.Namespace) -> int:
    if not 0 <= args.spin_ms <= 100:
        print(f"musebridge serve: --spin-ms must be 0-100, got {args.spin_ms:g}", file=sys.stderr)
        return 2
    if not 0 <= args.live_priority <= 99:
        print(f"musebridge serve: --live-priority must be 0-99, got {args.live_priority}", file=sys.stderr)
        return 2
    config = ServerConfig(host=args.host, port=args.port, pub_port=args.pub_port, ipc=args.ipc, keys=args.keys,
                          local=args.local, direct_port=args.direct_port, session_timeout=args.session_timeout,
                          spin_s=args.spin_ms / 1000, parent=args.parent)
    try:
        engine = Engine.load(args.model, threads=args.threads, provider=args.provider)
        server = Server(config, Service(engine, max_sessions=args.max_sessions, model_name=args.model or ""))
    except EngineError as exc:
        print(f"musebridge serve: {exc}", file=sys.stderr)
        return 2
    server.install_signal_handlers()
    rep, pub = server.endpoints
    print(f"musebridge serve: model {engine.model.info.path} on {engine.model.provider}; "
          f"commands {' and '.join(_command_endpoints(rep, args))}, events {pub}", flush=True)
    if args.live_priority and not set_fifo(args.live_priority):
        print(f"musebridge serve: SCHED_FIFO priority {args.live_priority} is not available here (it needs Linux "
              "and an rtprio limit, e.g. the audio group, or root); serving at the priority it was started with",
              file=sys.stderr)
    try:
        server.serve_forever()
    finally:
        server.close()
    print("musebridge serve: stopped", flush=True)
    return 0
