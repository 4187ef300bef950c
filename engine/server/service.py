"""The server's command layer: protocol commands -> engine sessions. No sockets here (see
engine/server/zmq_server.py).

`Service.handle(cmd, args)` returns (result, events): the reply's result object and the events to publish, each
(topic, session id, data). The server uses `Service.begin(cmd, args)`, the same command as steps
(engine/server/jobs.py): a long `generate` runs STEP_TOKENS tokens per step and a long `feed` FEED_STEP_EVENTS
events, so other requests are answered in between.
Arguments were already checked against protocol.COMMANDS; values that need the engine's knowledge (style and
instrument names, keys) are checked here and refused with ProtocolError.

Event dicts on the wire (feed arguments and generated notes) are mido message fields plus the time in seconds:
    {"t": 1.25, "type": "note_on", "channel": 0, "note": 60, "velocity": 90}
"""

from __future__ import annotations

import hmac
import itertools
import secrets
import time
from collections import deque
from collections.abc import Collection, Generator
from dataclasses import dataclass, field

import numpy as np

from ..errors import EngineError
from ..inference.catalog import style_of
from ..inference.sampler import SamplingConfig, scale_pitch_classes
from ..sessions.follow_config import FOLLOW_PARTS, FollowConfig
from ..sessions.session import Engine, Session
from ..sessions.session_config import SessionConfig
from ..sessions.steps import at_once, finish
from ..sessions.timeline import ends_note
from ..tokens.codec import Timed
from ..tokens.instruments import instrument_index
from ..tokens.tonality import key_name
from . import protocol as P
from .jobs import Event, Steps
from .wire import from_wire, to_wire

STREAM_CHUNK_TOKENS = 32  # generate publishes its notes after every this many tokens
# Model steps one generate may cost (max_tokens x best_of candidates): about a minute of one core at 0.45 ms each.
MAX_REQUEST_TOKENS = 131_072
STEP_TOKENS = 2  # a generate (not `now`) yields to other requests after every this many model steps
FEED_STEP_EVENTS = 2  # a feed yields to other requests after every this many events
REREAD_TOKENS = 32  # a set that changes the prefix re-reads the window this many tokens a step (also idle's unit)
_STEPPED = frozenset({"generate", "feed", "set"})  # commands whose handler is a generator of steps
# Commands only a session's owner (the client token that created it) may send; `set` is anyone's who holds the
# server's key, so a musician's `ctl set` steers the session play made (docs/protocol.md, "Sessions").
_OWNED = frozenset({"feed", "generate", "anticipate", "reset", "session.close"})


@dataclass
class LiveSession:
    """owner: the client token that created it ("": a client without one; then anyone may use it)."""

    session: Session
    params: dict
    last_seen: float = field(default_factory=time.monotonic)
    owner: str = ""


def _bad(message: str) -> P.ProtocolError:
    return P.ProtocolError("bad_argument", message)


def _instrument(name: str) -> int:
    try:
        return instrument_index(name)
    except ValueError as exc:
        raise _bad(str(exc)) from None


def session_config(params: dict, data: dict | None = None) -> SessionConfig:
    """Build a SessionConfig from protocol parameters (names as on the wire, see protocol.PARAMS). data: the
    model's training-data summary (ModelInfo.data): a style it has no data for is refused
    (engine/inference/catalog.py)."""
    try:
        style = style_of(params.get("style", "unknown"), data)
    except EngineError as exc:
        raise _bad(str(exc)) from None
    instruments = tuple(_instrument(n) for n in params.get("instruments", ["piano"]))
    player = params.get("player_instrument")
    player = None if player is None else _instrument(player)
    if not set(instruments) - {player}:
        raise _bad("instruments must name at least one instrument other than player_instrument")
    try:
        sampling = SamplingConfig(temperature=params.get("temperature", 1.0), top_k=params.get("top_k", 0),
                                  top_p=params.get("top_p", 1.0), min_p=params.get("min_p", 0.0),
                                  seed=params.get("seed"))
        scale = None
        if params.get("key"):
            root, _, mode = params["key"].partition(" ")
            scale = scale_pitch_classes(root, mode or "major")
    except ValueError as exc:
        raise _bad(str(exc)) from None
    low, high = params.get("pitch_low", 0), params.get("pitch_high", 127)
    if low > high:
        raise _bad(f"pitch_low {low} is above pitch_high {high}")
    ranged = "pitch_low" in params or "pitch_high" in params
    ranges = tuple((i, low, high) for i in instruments) if ranged else ()
    return SessionConfig(style=style, instruments=instruments, player_instrument=player, sampling=sampling,
                         scale=scale, pitch_ranges=ranges, max_polyphony=params.get("polyphony"),
                         context=params.get("context"), follow=follow_config(params),
                         style_guidance=params.get("style_guidance", 1.0))


def follow_config(params: dict) -> FollowConfig:
    """How the session follows the player, from the protocol's follow, follow_key, key_strength, follow_off."""
    off = params.get("follow_off", [])
    unknown = [p for p in off if p not in FOLLOW_PARTS]
    if unknown:
        raise _bad(f"unknown part of following {unknown[0]!r}; choose from: {', '.join(FOLLOW_PARTS)}")
    parts = {p: False for p in off if p != "key"}
    key = "off" if "key" in off else params.get("follow_key", "auto")
    try:
        return FollowConfig(enabled=params.get("follow", True), key=key,
                            key_strength=params.get("key_strength", FollowConfig.key_strength), **parts)
    except ValueError as exc:
        raise _bad(str(exc)) from None


def _fed_event(event: dict) -> tuple[bool, Timed]:
    """A `feed` event -> (ends an engine note?, Timed). `"engine": true` marks the end of one of the engine's
    own notes (a note-off on the channel it was generated on): a harmony voice ended with the player's note."""
    item, engine = from_wire(event)
    if engine and not ends_note(item.msg):
        raise _bad(f"event {P.brief(event)}: an engine event can only end an engine note (note_off)")
    return engine, item


def _feed_steps(live: LiveSession, events: list) -> Generator[list, None, dict]:
    """Feed player events (and `"engine": true` note-offs) in steps of FEED_STEP_EVENTS, each event's tokens
    through the model as it is fed. Every event is checked before the first is fed. Returns {"fed": n,
    "rolled_back": tokens}."""
    items = [_fed_event(e) for e in events]
    if live.session.config.player_instrument is None and not all(engine for engine, _ in items):
        raise _bad("this session has no player_instrument; set one with `set` first")
    rolled = 0
    for i, (engine, item) in enumerate(sorted(items, key=lambda i: i[1].time), 1):
        rolled += live.session.feed(item, engine).rolled_back
        if i % FEED_STEP_EVENTS == 0 and i < len(items):
            live.last_seen = time.monotonic()
            yield []
    return {"fed": len(items), "rolled_back": rolled}


class Service:
    """Sessions by id over one loaded Engine. max_sessions: more are refused with `overloaded`."""

    def __init__(self, engine: Engine, max_sessions: int = 16, model_name: str = ""):
        self.engine = engine
        self.max_sessions = max_sessions
        self.model_name = model_name
        self.sessions: dict[str, LiveSession] = {}
        self._ids = itertools.count(1)
        self._turns = itertools.count()  # idle(): which session looks first
        self._started = time.monotonic()
        self._token_ms: deque[float] = deque(maxlen=2000)
        self._latency_cache: dict | None = None
        self._handlers = {
            "status": self.status,
            "session.create": self.create,
            "session.close": self.close,
            "session.list": self.list,
            "feed": self.feed,
            "generate": self.generate,
            "anticipate": self.anticipate,
            "set": self.set,
            "reset": self.reset,
        }
        assert set(self._handlers) == set(P.COMMANDS) - {"cancel"}  # cancel ends requests: engine/server/jobs.py

    def handle(self, cmd: str, args: dict, client: str = "") -> tuple[dict, list[Event]]:
        """Run a command to its end: (result, the events of all its steps in order)."""
        events: list[Event] = []
        result, last = finish(self.begin(cmd, args, client), events.extend)
        return result, events + last

    def begin(self, cmd: str, args: dict, client: str = "") -> Steps:
        """The command as steps (engine/server/jobs.py): each next() does a slice of its work and yields events to
        publish now; the generator returns (result, events). Errors are raised by next(). client: the sender's
        token (protocol.Request.client): a session created with one is its own (`_OWNED` commands)."""
        if cmd == "session.create":
            return at_once(self.create, args, client)
        handler = self._handlers[cmd]
        steps = handler(args) if cmd in _STEPPED else at_once(handler, args)
        return self._as_owner(args["session"], client, steps) if cmd in _OWNED else steps

    def _as_owner(self, sid: str, client: str, steps: Steps) -> Steps:
        """`steps`, once the session (if it exists) is found to be `client`'s."""
        live = self.sessions.get(sid)
        if live is not None and live.owner and not hmac.compare_digest(live.owner, client):
            raise P.ProtocolError("not_owner", f"session {P.brief(sid, 40)} belongs to another client; create "
                                  "your own with session.create (`set` may change its parameters)")
        return (yield from steps)

    def idle(self, busy: Collection[str] = ()) -> bool:
        """Between requests: one unit of one session's idle work (Session.precompute). Pending tokens (a sampled
        token, an anticipated time shift: the next request waits for them) go before window slides prepared
        ahead, and sessions take turns, so a busy session cannot keep another's next request waiting. Sessions
        in `busy` (with an unfinished request, engine/server/jobs.py) are left to it. True when there was work."""
        lives = [live for sid, live in self.sessions.items() if sid not in busy]
        if not lives:
            return False
        turn = next(self._turns) % len(lives)
        lives = lives[turn:] + lives[:turn]
        return (any(live.session.pending > 0 and live.session.precompute(REREAD_TOKENS) for live in lives)
                or any(live.session.precompute(REREAD_TOKENS) for live in lives))

    def reap(self, timeout: float) -> list[str]:
        """Close sessions unused for `timeout` seconds; returns their ids."""
        now = time.monotonic()
        gone = [sid for sid, s in self.sessions.items() if now - s.last_seen > timeout]
        for sid in gone:
            del self.sessions[sid]
        return gone

    def _get(self, args: dict) -> tuple[str, LiveSession]:
        sid = args["session"]
        live = self.sessions.get(sid)
        if live is None:
            raise P.ProtocolError("session_not_found",
                                  f"no session {P.brief(sid, 40)}; create one with session.create")
        live.last_seen = time.monotonic()
        return sid, live

    # -- commands ----------------------------------------------------------------------------------------
    def status(self, args: dict):
        info = self.engine.model.info
        return {"model": self.model_name or info.path, "provider": self.engine.model.provider,
                "layers": info.n_layer, "width": info.n_embd, "context": info.block_size,
                "vocab": info.vocab.get("sha256", "")[:12], "sessions": len(self.sessions),
                "max_sessions": self.max_sessions, "uptime_s": round(time.monotonic() - self._started, 3),
                "latency": self._latency(), "protocol": P.PROTOCOL_VERSION}, []

    def _latency(self) -> dict:
        """Per-token p50/p99 (ms) over the last generated tokens; recomputed only after a generate (status is
        the bridges' keepalive and must stay cheap)."""
        if self._latency_cache is None:
            ms = np.fromiter(self._token_ms, float, len(self._token_ms))
            p50, p99 = np.percentile(ms, [50, 99]) if len(ms) else (None, None)
            self._latency_cache = {} if p50 is None else {"token_p50_ms": float(p50), "token_p99_ms": float(p99),
                                                          "tokens": len(ms)}
        return self._latency_cache

    def create(self, args: dict, owner: str = ""):
        if len(self.sessions) >= self.max_sessions:
            raise P.ProtocolError("overloaded", f"{len(self.sessions)} sessions open, the limit is "
                                  f"{self.max_sessions}; close one or start the server with --max-sessions")
        params = {"mode": "respond", **args}
        block = self.engine.model.info.block_size
        if params.get("context", block) > block:
            raise _bad(f"context {params['context']} is longer than this model's {block} tokens")
        session = self.engine.new_session(session_config(params, self.engine.model.info.data))
        sid = f"s{next(self._ids)}-{secrets.token_hex(6)}"  # readable, and not guessed by another client
        self.sessions[sid] = LiveSession(session, params, owner=owner)
        return {"session": sid, "params": params}, [("session", sid, {"state": "created", "params": params})]

    def close(self, args: dict):
        sid, _ = self._get(args)
        del self.sessions[sid]
        return {"session": sid}, [("session", sid, {"state": "closed"})]

    def list(self, args: dict):
        now = time.monotonic()
        return {"sessions": [{"session": sid, "params": s.params, "idle_s": round(now - s.last_seen, 3),
                              "time": s.session.time, "key": key_name(s.session.follower.steering_key)}
                             for sid, s in self.sessions.items()]}, []

    def feed(self, args: dict) -> Steps:
        """Steps of FEED_STEP_EVENTS events (each event's tokens go through the model as it is fed): a whole
        file fed at once does not hold up the others. Every event is checked before the first is fed."""
        sid, live = self._get(args)
        fed = yield from _feed_steps(live, args["events"])
        return {"session": sid, **fed, "time": live.session.time}, []

    def generate(self, args: dict) -> Steps:
        """Session.generate_steps, STEP_TOKENS tokens a step (a `now` request in one: it is short, and on a
        player's path); the notes are published every STREAM_CHUNK_TOKENS tokens and with the reply. `feed`:
        events fed first, as by a `feed` request (a player's note and its harmony in one round trip)."""
        sid, live = self._get(args)
        if not any(k in args for k in ("until", "notes", "max_tokens")):
            raise _bad("generate needs 'until' (seconds), 'notes' or 'max_tokens'")
        now = args.get("now", False)
        if now and "until" in args:
            raise _bad("generate: 'now' makes notes at the current time; give 'notes' or 'max_tokens', "
                       "not 'until'")
        best_of, budget, session = live.params.get("best_of", 1), args.get("max_tokens", 4096), live.session
        if budget * best_of > MAX_REQUEST_TOKENS:
            raise _bad(f"generate: max_tokens {budget} x best_of {best_of} is {budget * best_of:,} model steps; "
                       f"one request may take {MAX_REQUEST_TOKENS:,}: lower max_tokens or best_of, or generate "
                       "in parts")
        fed = (yield from _feed_steps(live, args["feed"])) if "feed" in args else {}
        steps = session.generate_steps(n_tokens=budget, n_notes=args.get("notes"), until_time=args.get("until"),
                                       best_of=best_of, max_tokens=budget, now=now)
        before = streamed = len(session.tokens) + session.dropped
        notes, published, count, busy, resumed = [], 0, 0, 0.0, time.perf_counter()  # busy: s in its steps
        while True:
            try:
                notes += [to_wire(*e) for e in next(steps)]
            except StopIteration as done:
                final = done.value
                break
            count += 1
            if now or count % STEP_TOKENS or (best_of <= 1 and count >= budget):  # (its last step: no pause)
                continue
            busy += time.perf_counter() - resumed
            live.last_seen = time.monotonic()  # a session at work is not reclaimed
            made = len(session.tokens) + session.dropped
            if len(notes) > published and made - streamed >= STREAM_CHUNK_TOKENS:
                yield [("note", sid, {"notes": notes[published:]})]
                published, streamed = len(notes), made
            else:
                yield []
            resumed = time.perf_counter()
        out = notes if best_of <= 1 else [to_wire(*e) for e in final]
        tokens = len(session.tokens) + session.dropped - before
        ms = (busy + time.perf_counter() - resumed) * 1000
        if tokens:
            self._token_ms.extend([ms / tokens] * min(tokens, 64))
            self._latency_cache = None
        events = [("note", sid, {"notes": out[published:]})] if len(out) > published else []
        heard = key_name(session.follower.steering_key)
        events.append(("telemetry", sid, {"tokens": tokens, "ms": round(ms, 3), "key": heard}))
        return {"session": sid, **fed, "notes": out, "tokens": tokens, "time": session.time, "key": heard}, events

    def anticipate(self, args: dict):
        """Session.anticipate: the time shift to `t` is run through the model between requests (idle)."""
        sid, live = self._get(args)
        tokens = live.session.anticipate(args["t"])
        return {"session": sid, "tokens": tokens, "time": live.session.time}, []

    def set(self, args: dict) -> Steps:
        """A new style or instrument set makes the session read its window again: REREAD_TOKENS a step."""
        sid, live = self._get(args)
        changes = {k: v for k, v in args.items() if k != "session"}
        params = {**live.params, **changes}
        live.session.reconfigure(session_config(params, self.engine.model.info.data))
        live.params = params
        while live.session.pending > REREAD_TOKENS:
            live.session.precompute(REREAD_TOKENS)
            live.last_seen = time.monotonic()
            yield []
        return {"session": sid, "params": params}, [("param", sid, {"changed": changes})]

    def reset(self, args: dict):
        sid, live = self._get(args)
        live.session = self.engine.new_session(session_config(live.params, self.engine.model.info.data))
        return {"session": sid}, [("session", sid, {"state": "reset"})]
