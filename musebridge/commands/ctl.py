"""`musebridge ctl`: talk to a running server from the shell.

    musebridge ctl status
    musebridge ctl sessions
    musebridge ctl set temperature 0.9 [--session s1]     (default: every open session; checked before sending
                                                          against the protocol's table,
                                                          musebridge/commands/limits.py)
    musebridge ctl call session.create '{"style": "bach", "instruments": ["strings"]}'
    musebridge ctl watch [TOPIC ...]                      print the event stream until Ctrl-C
    musebridge ctl status --host HOST --keys DIR [--client NAME]   CURVE, with the client pair NAME.key_secret
"""

from __future__ import annotations

import argparse
import json
import sys

import orjson

from musebridge.engine.server.client import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_PUB_PORT,
    Client,
    ClientConfig,
    ClientError,
)
from musebridge.engine.server.local import DIRECT_HOST
from musebridge.engine.server.protocol import BOOL, INT, LIST, NUM, PARAMS
from musebridge.engine.server.zmq_server import ServerConfig

from .limits import ParamError, check_param, parse_param


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("status", "sessions", "set", "call", "watch"),
                        help="status: the server; sessions: its sessions; set: a parameter; call: any command; "
                        "watch: print events as they come")
    parser.add_argument("rest", nargs="*", help="set: NAME VALUE, a session parameter (docs/protocol.md: "
                        f"{', '.join(PARAMS)}), checked against its range before it is sent; "
                        "call: COMMAND [JSON-ARGS]; watch: topics")
    parser.add_argument("--session", help="session id for set (default: all sessions)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="the server's host (default %(default)s)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="its command port (default %(default)s)")
    parser.add_argument("--pub-port", type=int, default=DEFAULT_PUB_PORT,
                        help="its event port, for watch (default %(default)s)")
    parser.add_argument("--ipc", metavar="DIR", help="a server started with `serve --ipc DIR` (no TCP)")
    parser.add_argument("--local", metavar="PATH", help="send commands over the Unix socket of `serve --local "
                        "PATH` (events still come from the TCP or --ipc events endpoint)")
    parser.add_argument("--direct-port", type=int, metavar="PORT",
                        help="send commands over the loopback TCP port of `serve --direct-port PORT`")
    parser.add_argument("--keys", metavar="DIR", help="CURVE keys folder (server.key and a client pair)")
    parser.add_argument("--client", default="client", metavar="NAME", help="with --keys: use the client pair "
                        "NAME.key_secret made by `musebridge keys DIR --client NAME` (default: client)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for a reply")


def _value(text: str):
    """`0.9` -> 0.9, `5` -> 5, `true` -> True, `["a","b"]` -> list, anything else (`NaN` too: the protocol's JSON
    is strict, engine/server/protocol.py) the string itself."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def set_args(rest: list[str]) -> dict:
    """`ctl set NAME VALUE [VALUE ...]` as the `set` command's arguments ({name: value}), checked against the
    protocol's table before anything is sent. ParamError (one line) when the table refuses it."""
    if len(rest) < 2:
        raise ParamError("usage: musebridge ctl set NAME VALUE [VALUE ...]")
    name, values = rest[0], [_value(v) for v in rest[1:]]
    if name not in PARAMS:
        raise ParamError(f"unknown parameter {name!r}; choose from: {', '.join(PARAMS)}")
    if PARAMS[name].types == LIST:
        value = values[0] if len(values) == 1 and isinstance(values[0], list) else values
    elif len(values) > 1:
        raise ParamError(f"{name} takes one value, got {len(values)}; quote a value with spaces ('E minor')")
    elif PARAMS[name].types in (INT, NUM, BOOL):
        value = parse_param(name, rest[1])  # as the options of generate and play read it
    else:
        value = values[0]
    check_param(name, value)
    return {name: value}


def _set(client: Client, args) -> list[dict]:
    params = set_args(args.rest)
    ids = [args.session] if args.session else [s["session"] for s in client.call("session.list")["sessions"]]
    return [client.call("set", session=sid, **params) for sid in ids]


def _call(client: Client, args) -> dict:
    if not args.rest:
        raise ClientError("usage: musebridge ctl call COMMAND [JSON-ARGS]", "bad_argument")
    payload = _value(args.rest[1]) if len(args.rest) > 1 else {}
    if not isinstance(payload, dict):
        raise ClientError("the arguments of `ctl call` must be a JSON object", "bad_argument")
    return client.call(args.rest[0], **payload)


def run(args: argparse.Namespace) -> int:
    if args.action == "set":
        try:
            set_args(args.rest)
        except ParamError as exc:
            print(f"musebridge ctl: {exc}", file=sys.stderr)
            return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    endpoint, events = f"tcp://{host}:{args.port}", f"tcp://{host}:{args.pub_port}"
    if args.ipc:
        endpoint, events = ServerConfig(ipc=args.ipc).endpoints()
    if args.local:
        endpoint = f"unix://{args.local}"
    elif args.direct_port is not None:
        endpoint = f"direct://{DIRECT_HOST}:{args.direct_port}"
    try:
        config = ClientConfig(endpoint=endpoint, events_endpoint=events, timeout=args.timeout, keys=args.keys,
                              client=args.client)
    except ClientError as exc:
        print(f"musebridge ctl: {exc}", file=sys.stderr)
        return 2
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
