"""`musebridge ctl`: talk to a running server from the shell.

    musebridge ctl status
    musebridge ctl sessions
    musebridge ctl set temperature 0.9 [--session s1]     (default: every open session)
    musebridge ctl call session.create '{"style": "bach", "instruments": ["strings"]}'
    musebridge ctl watch [TOPIC ...]                      print the event stream until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import sys

import orjson

from .client import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_PUB_PORT, Client, ClientConfig, ClientError
from .local import DIRECT_HOST
from .server import ServerConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "sessions", "set", "call", "watch"))
    parser.add_argument("rest", nargs="*", help="set: NAME VALUE; call: COMMAND [JSON-ARGS]; watch: topics")
    parser.add_argument("--session", help="session id for set (default: all sessions)")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--pub-port", type=int, default=DEFAULT_PUB_PORT)
    parser.add_argument("--ipc", metavar="DIR", help="a server started with `serve --ipc DIR` (no TCP)")
    parser.add_argument("--local", metavar="PATH", help="send commands over the Unix socket of `serve --local "
                        "PATH` (events still come from the TCP or --ipc events endpoint)")
    parser.add_argument("--direct-port", type=int, metavar="PORT",
                        help="send commands over the loopback TCP port of `serve --direct-port PORT`")
    parser.add_argument("--keys", metavar="DIR", help="CURVE keys folder (client.key_secret, server.key)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a reply")


def _value(text: str):
    """`0.9` -> 0.9, `5` -> 5, `true` -> True, `["a","b"]` -> list, anything else (`NaN` too: the protocol's JSON
    is strict, engine/protocol.py) the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _set(client: Client, args) -> list[dict]:
    if len(args.rest) < 2:
        raise ClientError("usage: musebridge ctl set NAME VALUE [VALUE ...]", "bad_argument")
    name, values = args.rest[0], [_value(v) for v in args.rest[1:]]
    value = values if name == "instruments" else values[0]
    ids = [args.session] if args.session else [s["session"] for s in client.call("session.list")["sessions"]]
    return [client.call("set", session=sid, **{name: value}) for sid in ids]


def _call(client: Client, args) -> dict:
    if not args.rest:
        raise ClientError("usage: musebridge ctl call COMMAND [JSON-ARGS]", "bad_argument")
    payload = _value(args.rest[1]) if len(args.rest) > 1 else {}
    if not isinstance(payload, dict):
        raise ClientError("the arguments of `ctl call` must be a JSON object", "bad_argument")
    return client.call(args.rest[0], **payload)


def run(args: argparse.Namespace) -> int:
    host = f"[{args.host}]" if ":" in args.host else args.host
    endpoint, events = f"tcp://{host}:{args.port}", f"tcp://{host}:{args.pub_port}"
    if args.ipc:
        endpoint, events = ServerConfig(ipc=args.ipc).endpoints()
    if args.local:
        endpoint = f"unix://{args.local}"
    elif args.direct_port is not None:
        endpoint = f"direct://{DIRECT_HOST}:{args.direct_port}"
    config = ClientConfig(endpoint=endpoint, events_endpoint=events, timeout=args.timeout, keys=args.keys)
    with Client(config) as client:
        try:
            if args.action == "watch":
                for event in client.events(tuple(args.rest) or ("",)):
                    print(json.dumps({"topic": event.topic, "session": event.session, **event.data}), flush=True)
                return 0
            actions = {"status": lambda: client.call("status"), "sessions": lambda: client.call("session.list"),
                       "set": lambda: _set(client, args), "call": lambda: _call(client, args)}
            print(json.dumps(actions[args.action](), indent=2))
        except ClientError as exc:
            print(f"musebridge ctl: {exc}", file=sys.stderr)
            return 2
    return 0
