"""The control protocol's wire format, in one place (documented in docs/protocol.md).

Requests and replies are single-frame UTF-8 JSON objects on a request/reply endpoint:

    request  {"v": 1, "id": "42", "cmd": "session.create", "args": {"style": "bach"}}
    reply    {"v": 1, "id": "42", "ok": true, "result": {...}}
    error    {"v": 1, "id": "42", "ok": false, "error": {"code": "bad_argument", "message": "..."}}

Events go out on a publish endpoint as two frames: the topic (ASCII) and a JSON object

    [b"note", {"v": 1, "seq": 7, "t": 1700000000.123, "session": "s1", "data": {...}}]

Commands and their arguments are a data table (COMMANDS); `parse_request` validates a raw frame against it and
raises ProtocolError with a typed code; `encode_*`/`decode_*` are inverses (tested).

JSON is strict RFC 8259 (orjson: a request's parse and its reply's encoding cost about a quarter of the standard
library's after a player's pause, docs/benchmarks.md "Server round trip"): NaN, Infinity, a byte-order
mark, a lone surrogate escape or nesting deeper than 1,024 are `bad_json`; an integer beyond 64 bits is read as a
float. Numpy scalars and arrays are written as numbers and lists, dict keys as strings, a non-finite float as null.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 64 * 1024  # requests larger than this are refused with "too_large"
RUNTIME_HINT = "$MUSEBRIDGE_RUNTIME_DIR, $XDG_RUNTIME_DIR/musebridge or ~/.local/share/musebridge/runtime"
MAX_ERROR_CHARS = 500  # an error reply's message is at most this long (it never echoes a large payload)
MAX_ID_CHARS = 64
MIN_CONTEXT = 32  # the shortest session context, tokens

# Error codes: code -> when it is sent. The server only ever replies with these.
ERRORS: dict[str, str] = {
    "bad_json": "the frame is not a UTF-8 JSON object",
    "bad_request": "the envelope is wrong: missing or mistyped v/id/cmd/args, or more than one frame",
    "version_mismatch": "the request's protocol version is not the server's",
    "too_large": f"the request is larger than {MAX_MESSAGE_BYTES} bytes",
    "unknown_command": "no such command",
    "bad_argument": "an argument is missing, unknown, of the wrong type or out of range",
    "session_not_found": "no session with that id (closed, reclaimed after its timeout, or never created)",
    "overloaded": "the server has too many sessions or too much queued work; retry later",
    "unauthorized": "the request lacks the key of the server's connection file (engine/server/connection.py)",
    "not_owner": "the session belongs to the client that created it: only its parameters (`set`) are anyone's",
    "cancelled": "the request was cancelled (by `cancel`, or its client went away) before it finished",
    "internal": "the server failed on a valid request; it keeps running (a bug: please report)",
}


# Every topic the server publishes (docs/protocol.md, "Events"). A subscription to anything that is not a prefix of
# one of them can never match, so the server does not keep it.
TOPICS: tuple[str, ...] = ("server", "session", "note", "param", "telemetry")


class ProtocolError(Exception):
    """A request the server refuses. `code` is a key of ERRORS; `request_id` is echoed when known."""

    def __init__(self, code: str, message: str, request_id: str | None = None):
        assert code in ERRORS, code
        super().__init__(message)
        self.code = code
        self.request_id = request_id


# --- argument specs: a table instead of branching ------------------------------------------------------------


@dataclass(frozen=True)
class Arg:
    """One command argument: JSON type(s), required or not, numeric bounds (inclusive; `low_open`: the low
    bound itself is refused), allowed values, and for session parameters a one-line `help` and the engine's
    `default` (None: see `unset`). The command-line options of generate, play and ctl are built from this
    table (musebridge/commands/limits.py), so they accept exactly what the server accepts."""

    types: tuple[type, ...]
    required: bool = False
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] | None = None
    item_types: tuple[type, ...] | None = None  # for lists
    max_items: int = 4096
    low_open: bool = False
    help: str = ""
    default: Any = None
    unset: str = ""  # what leaving a default-less parameter out means, for help texts ("random", "no cap")


STR, INT, NUM, BOOL, LIST, OBJ = (str,), (int,), (int, float), (bool,), (list,), (dict,)
SESSION = Arg(STR, required=True)
MODES = ("respond", "accompany", "harmonize", "generate", "thru")

# Parameters a session accepts (session.create and set). Values are checked again by the engine. This is the one
# table of limits: `musebridge generate`, `play` and `ctl set` check their options against it
# (musebridge/commands/limits.py).
PARAMS: dict[str, Arg] = {
    "style": Arg(STR, help="conditioning style (engine/tokens/vocab.py STYLES)", default="unknown"),
    "instruments": Arg(LIST, item_types=STR, max_items=16, help="instrument classes of the piece"),
    "player_instrument": Arg(STR, help="the player's instrument class; the engine never plays it"),
    "temperature": Arg(NUM, low=0.05, high=5.0, default=1.0,
                       help="sampling temperature: lower is safer and more repetitive, higher more adventurous"),
    "top_k": Arg(INT, low=0, high=100_000, default=0,
                 help="sample among the K most probable tokens only (0: off)"),
    "top_p": Arg(NUM, low=0.0, high=1.0, low_open=True, default=1.0,
                 help="nucleus sampling: the most probable tokens holding this much probability (1: off)"),
    "min_p": Arg(NUM, low=0.0, high=1.0, default=0.0,
                 help="drop tokens less probable than this fraction of the most probable one (0: off)"),
    "seed": Arg(INT, low=0, high=2**63 - 1, help="random seed: same seed, same input, same music",
               unset="random"),
    "pitch_low": Arg(INT, low=0, high=127, default=0, help="lowest MIDI note the engine plays"),
    "pitch_high": Arg(INT, low=0, high=127, default=127, help="highest MIDI note the engine plays"),
    "key": Arg(STR, help="keep pitched notes in this key and scale, e.g. 'E minor', 'Bb major', 'A dorian' "
               "(a hard mask)", unset="any note"),
    "follow": Arg(BOOL, default=True, help="follow the player (engine/sessions/follow.py)"),
    "follow_key": Arg(STR, default="auto",
                      help="'auto' (the key heard), 'off', or a key to lean toward, e.g. 'E minor'"),
    "key_strength": Arg(NUM, low=0.0, high=100.0, default=3.0,
                        help="nats taken from out-of-key note-ons when following the key"),
    "follow_off": Arg(LIST, item_types=STR, max_items=16, help="parts of following switched off (FOLLOW_PARTS)"),
    "polyphony": Arg(INT, low=1, high=64, help="most engine notes sounding at once",
                     unset="no cap"),
    "best_of": Arg(INT, low=1, high=16, default=1,
                   help="sample this many continuations and keep the most probable (slower)"),
    "context": Arg(INT, low=MIN_CONTEXT, high=100_000,
                   help="tokens of the past the model sees, at most its block size (1024 for the bundled "
                        "model): shorter answers faster and remembers less", unset="all"),  # session.create only
    "style_guidance": Arg(NUM, low=1.0, high=8.0, default=1.0,
                          help="play the style more strongly: 1 is the model as it is; above 1 takes twice the "
                          "time per token and a model trained with --style-drop"),  # session.create only
    "mode": Arg(STR, choices=MODES, default="respond", help="what the bridge does with the session"),
}

# A fed or generated note event: {"t": seconds, "type": "note_on"|"note_off"|..., "note": 0-127, ...}
EVENTS_ARG = Arg(LIST, required=True, item_types=OBJ, max_items=4096)

COMMANDS: dict[str, dict[str, Arg]] = {
    "status": {},
    "session.create": dict(PARAMS),
    "session.close": {"session": SESSION},
    "session.list": {},
    "feed": {"session": SESSION, "events": EVENTS_ARG},
    "generate": {
        "session": SESSION,
        "until": Arg(NUM, low=0.0, high=1e7),  # seconds of session time
        "notes": Arg(INT, low=1, high=10_000),
        "max_tokens": Arg(INT, low=1, high=100_000),
        "now": Arg(BOOL),  # notes that start at the current time (see engine/sessions/session.py generate)
        "feed": replace(EVENTS_ARG, required=False),  # events fed first, as by `feed` (one round trip)
    },
    "anticipate": {"session": SESSION, "t": Arg(NUM, required=True, low=0.0, high=1e7)},  # session seconds
    "set": {"session": SESSION, **PARAMS},
    "cancel": {"request": Arg(STR)},  # the id of one of the sender's own requests (default: all of them)
    "reset": {"session": SESSION},
}


def check_args(cmd: str, args: dict, request_id: str | None = None) -> dict:
    """Validate `args` against COMMANDS[cmd]; returns them unchanged or raises ProtocolError(bad_argument)."""
    spec = COMMANDS[cmd]
    unknown = sorted(set(args) - set(spec))
    if unknown:
        raise ProtocolError(
            "bad_argument",
            f"{cmd}: unknown argument {brief(unknown[0], 40)}; expected: {', '.join(spec) or 'none'}", request_id)
    for name, arg in spec.items():
        if name not in args:
            if arg.required:
                raise ProtocolError("bad_argument", f"{cmd}: missing argument {name!r}", request_id)
            continue
        problem = check_value(args[name], arg)
        if problem:
            raise ProtocolError("bad_argument", f"{cmd}: argument {name!r} {problem}", request_id)
    return args


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False  # JSON true is not a number here
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def check_value(value: Any, arg: Arg) -> str | None:
    """What is wrong with `value` for `arg` ("must be within 0.05..5, got 0"), or None when it is fine."""
    if not _type_ok(value, arg.types):
        return f"must be {'/'.join(t.__name__ for t in arg.types)}, got {type(value).__name__}"
    too_low = arg.low is not None and (value <= arg.low if arg.low_open else value < arg.low)
    if too_low or arg.high is not None and value > arg.high:
        return f"must be {span(arg)}, got {value}"
    if arg.choices is not None and value not in arg.choices:
        return f"must be one of {', '.join(arg.choices)}, got {brief(value)}"
    if isinstance(value, list):
        if len(value) > arg.max_items:
            return f"has {len(value)} items, at most {arg.max_items}"
        if arg.item_types and not all(_type_ok(v, arg.item_types) for v in value):
            return f"items must be {'/'.join(t.__name__ for t in arg.item_types)}"
    return None


def span(arg: Arg) -> str:
    """An argument's numeric range in words: "within 0.05..5", "above 0 and at most 1", "at least 0"."""
    low, high = (None if b is None else f"{b:g}" if isinstance(b, float) else str(b) for b in (arg.low, arg.high))
    if arg.low_open:
        return f"above {low}" + (f" and at most {high}" if high is not None else "")
    if low is not None and high is not None:
        return f"within {low}..{high}"
    return f"at least {low}" if low is not None else f"at most {high}"


# --- envelopes --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """key: the server's connection-file key ("" when the client has none; engine/server/connection.py).
    client: the sending client's random token ("" for none); a session belongs to the token that created it."""

    id: str
    cmd: str
    args: dict = field(default_factory=dict)
    key: str = ""
    client: str = ""


@dataclass(frozen=True)
class Reply:
    id: str | None
    ok: bool
    result: dict | None = None
    error_code: str | None = None
    error_message: str | None = None


def encode_request(req: Request) -> bytes:
    obj = {"v": PROTOCOL_VERSION, "id": req.id, "cmd": req.cmd, "args": req.args}
    if req.key:
        obj["key"] = req.key
    if req.client:
        obj["client"] = req.client
    return _dumps(obj)


def parse_request(frames: list[bytes], secret: str | None = None) -> Request:
    """Decode and validate one request (the frames after the ZeroMQ routing envelope). secret: the key a
    request must carry (None: none needed); checked before the command, so a stranger learns nothing more."""
    if len(frames) != 1:
        raise ProtocolError("bad_request", f"a request is exactly one frame, got {len(frames)}")
    if len(frames[0]) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_large", f"request of {len(frames[0])} bytes; the limit is {MAX_MESSAGE_BYTES}")
    obj = _loads(frames[0])
    rid = obj.get("id")
    rid = rid if isinstance(rid, str) and 0 < len(rid) <= MAX_ID_CHARS else None
    if rid is None:
        raise ProtocolError("bad_request", f"'id' must be a non-empty string of at most {MAX_ID_CHARS} chars")
    if obj.get("v") != PROTOCOL_VERSION:
        raise ProtocolError(
            "version_mismatch",
            f"protocol version {brief(obj.get('v'), 20)}; this server speaks {PROTOCOL_VERSION}", rid)
    cmd, args, key, client = obj.get("cmd"), obj.get("args", {}), obj.get("key", ""), obj.get("client", "")
    if not isinstance(cmd, str) or not isinstance(args, dict) or not isinstance(key, str):
        raise ProtocolError("bad_request", "'cmd' and 'key' must be strings and 'args' an object", rid)
    if not isinstance(client, str) or len(client) > MAX_ID_CHARS:
        raise ProtocolError("bad_request", f"'client' must be a string of at most {MAX_ID_CHARS} chars", rid)
    if secret is not None and not hmac.compare_digest(key.encode(), secret.encode()):
        raise ProtocolError("unauthorized", "request without this server's key; a client of the same user reads "
                            f"it from the server's connection file in {RUNTIME_HINT}", rid)
    if cmd not in COMMANDS:
        raise ProtocolError("unknown_command",
                            f"unknown command {brief(cmd, 40)}; commands: {', '.join(COMMANDS)}", rid)
    return Request(rid, cmd, check_args(cmd, args, rid), key, client)


def encode_reply(reply: Reply) -> bytes:
    """The reply's frame. A result JSON cannot carry (a set, an object) is answered `internal` instead: the
    server never fails on its own reply."""
    obj: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": reply.id, "ok": reply.ok}
    if reply.ok:
        obj["result"] = reply.result or {}
    else:
        obj["error"] = {"code": reply.error_code, "message": reply.error_message}
    try:
        return _dumps(obj)
    except TypeError as exc:
        if not reply.ok and reply.error_code == "internal":
            raise  # not even the error reply could be encoded: a bug in the server's own messages
        return encode_reply(Reply(reply.id, False, error_code="internal",
                                  error_message=f"the reply could not be encoded as JSON ({exc})"))


def brief(value, limit: int = 120) -> str:
    """repr(value) for an error message, cut to `limit` characters: a reply never echoes a large payload."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text):,} characters)"


def error_reply(exc: ProtocolError) -> Reply:
    """The reply to a refused request; its message is cut to MAX_ERROR_CHARS whatever built it."""
    message = str(exc)
    if len(message) > MAX_ERROR_CHARS:
        message = f"{message[: MAX_ERROR_CHARS - 20]}... ({len(message):,} characters)"
    return Reply(exc.request_id, False, error_code=exc.code, error_message=message)


def decode_reply(frame: bytes) -> Reply:
    """Client side: decode a reply frame; raises ProtocolError(bad_json/bad_request) if it is not one."""
    obj = _loads(frame)
    if not isinstance(obj.get("ok"), bool):
        raise ProtocolError("bad_request", "reply without a boolean 'ok'")
    if obj["ok"]:
        return Reply(obj.get("id"), True, result=obj.get("result") or {})
    err = obj.get("error") or {}
    code = err.get("code") if err.get("code") in ERRORS else "internal"
    return Reply(obj.get("id"), False, error_code=code, error_message=str(err.get("message", "")))


@dataclass(frozen=True)
class Event:
    topic: str
    seq: int
    t: float  # wall-clock seconds (time.time()) when published
    session: str | None
    data: dict


def encode_event(event: Event) -> list[bytes]:
    body = {"v": PROTOCOL_VERSION, "seq": event.seq, "t": event.t, "session": event.session, "data": event.data}
    return [event.topic.encode("ascii"), _dumps(body)]


def decode_event(frames: list[bytes]) -> Event:
    if len(frames) != 2:
        raise ProtocolError("bad_request", f"an event is two frames, got {len(frames)}")
    try:
        topic = frames[0].decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("bad_request", "event topic is not ASCII") from None
    obj = _loads(frames[1])
    return Event(topic, int(obj.get("seq", 0)), float(obj.get("t", 0.0)), obj.get("session"), obj.get("data", {}))


_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _dumps(obj: dict) -> bytes:
    """Compact UTF-8 JSON. TypeError for what JSON cannot carry (a set, an object, a lone surrogate, an integer
    beyond 64 bits)."""
    return orjson.dumps(obj, option=_DUMPS_OPTIONS)


def _loads(frame: bytes) -> dict:
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:  # also invalid UTF-8 and nesting deeper than 1,024
        raise ProtocolError("bad_json", f"not a UTF-8 JSON object ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_json", f"expected a JSON object, got {type(obj).__name__}")
    return obj
