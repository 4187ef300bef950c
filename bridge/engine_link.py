"""The bridge's only way to the engine: a session over engine/server/client.py, and a watcher for server events.

    link = EngineLink(ClientConfig(...), {"style": "bach", "instruments": ["strings"]}, clock.now)
    link.open()                                  # session.create
    link.feed([{"t": 1.25, "type": "note_on", "channel": 0, "note": 60, "velocity": 90}])
    notes, end = link.generate(until=2.0)        # engine events with "t" in session seconds

Every failure to reach the server raises EngineLost, so the caller can silence its notes at once; a request that
times out while the server still answered in the last SLOW_LIMIT_S seconds raises EngineSlow instead (a busy
machine: that one answer is skipped, the session kept; the status line counts them). A reclaimed session (the
server's idle timeout) is re-created transparently. Not thread-safe: one worker thread calls it; the
watcher has its own sockets.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

import mido
import zmq
from musebridge.engine.server import wire
from musebridge.engine.server.client import Client, ClientConfig, ClientError
from musebridge.engine.server.protocol import ProtocolError

from .errors import BridgeError, EngineLost, EngineSlow

log = logging.getLogger(__name__)

SLOW_LIMIT_S = 10.0  # seconds without any reply after which a request that times out means a lost engine
RECENT_S = 8.0  # seconds of the player's recent events a re-created session is fed again (after a lost engine)
RECENT_EVENTS = 512  # and at most this many
KEEPALIVE_S = 20.0  # touch the session this often: the server reclaims idle sessions (300 s by default)
LIVE_CONTEXT = 256  # tokens of the past a live session sees unless told (at most the model's block size):
# as good as the whole 1,024 on the test split (1.1677 vs 1.1667 nats/token) and quicker to answer (docs/live.md)


def from_wire(event: dict) -> tuple[float, mido.Message] | None:
    """An engine event (engine/server/wire.py) -> (session seconds, mido.Message); None when unusable (logged)."""
    try:
        return wire.from_wire(event)[0]
    except ProtocolError as exc:
        log.warning("ignoring unusable engine event: %s", exc)
        return None


class EngineLink:
    """One engine session. params: session parameters (protocol.PARAMS names)."""

    def __init__(self, config: ClientConfig, params: dict, clock_now: Callable[[], float]):
        self.config = config
        self.params = dict(params)
        self.session: str | None = None
        self._client: Client | None = None
        self._now = clock_now
        self._last_call = 0.0
        self.opened = 0  # sessions created so far (each starts its timeline at 0)
        self.resumed_at = 0.0  # session seconds the last re-created session's replayed context ends at
        self._recent: deque[dict] = deque(maxlen=RECENT_EVENTS)  # player events fed (protocol dicts)
        self.key = "-"  # the key the engine hears, as its last generate reply said
        self.slow = 0  # requests that timed out while the engine was still there
        self._last_reply = -SLOW_LIMIT_S  # clock seconds of the last reply (none yet: a timeout means lost)

    def _call(self, cmd: str, **args) -> dict:
        if self._client is None:
            self._client = Client(self.config)
        self._last_call = self._now()
        try:
            reply = self._client.call(cmd, **args)
            self._last_reply = self._now()
            return reply
        except ClientError as exc:
            if exc.code == "session_not_found" and cmd != "session.create":
                log.warning("engine session %s was reclaimed; creating a new one", self.session)
                self.open()
                return self._client.call(cmd, **{**args, "session": self.session})
            if exc.code == "timeout" and self._now() - self._last_reply < SLOW_LIMIT_S:
                self.slow += 1  # busy (a loaded machine), not gone: its connection holds; skip this answer
                raise EngineSlow(f"engine slow: {exc}") from None
            if exc.code in ("timeout", "connection", "keys"):
                raise EngineLost(str(exc)) from None
            raise BridgeError(f"engine refused {exc}") from None  # the client's message starts with `cmd:`

    def open(self) -> str:
        """Create the session (EngineLost when no server answers). Without a `context` parameter the session
        sees LIVE_CONTEXT tokens, or the model's whole block when that is shorter."""
        if "context" not in self.params:
            self.params["context"] = min(LIVE_CONTEXT, self._call("status")["context"])
        self.session = self._call("session.create", **self.params)["session"]
        self.opened += 1
        log.info("engine session %s: %s", self.session, self.params)
        self._replay()
        return self.session

    def _replay(self) -> None:
        """A session re-created after a loss hears the player's last RECENT_S seconds again, from time 0, so
        it resumes in the same key, register and texture; resumed_at is where that context ends."""
        self.resumed_at = 0.0
        if not self._recent:
            return
        first = self._recent[0]["t"]
        replay = [{**e, "t": round(e["t"] - first, 6)} for e in self._recent]
        self._recent.clear()
        self.feed(replay)
        self.resumed_at = replay[-1]["t"]
        log.info("engine session %s: resumed with the last %.1f s the player played", self.session,
                 self.resumed_at)

    def _remember(self, events: list[dict]) -> None:
        self._recent.extend(events)
        while self._recent and self._recent[-1]["t"] - self._recent[0]["t"] > RECENT_S:
            self._recent.popleft()

    def close(self) -> None:
        if self._client is not None and self.session is not None:
            try:
                self._client.call("session.close", session=self.session, timeout=0.5)
            except ClientError:
                pass
        if self._client is not None:
            self._client.close()
            self._client = None

    def drop(self) -> None:
        """Forget the connection after a loss (the next call reconnects)."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def feed(self, events: list[dict]) -> dict:
        """Player events (protocol dicts, session seconds). Returns the reply (rolled_back, time)."""
        reply = self._call("feed", session=self.session, events=events)
        self._remember(events)
        return reply

    def anticipate(self, t: float) -> None:
        """Tell the engine the player may play at session time t (s): it prepares the time shift (no reply
        awaited; docs/protocol.md, "Anticipation")."""
        self._post("anticipate", session=self.session, t=round(max(t, 0.0), 6))

    def _post(self, cmd: str, **args) -> None:
        if self._client is None:
            self._client = Client(self.config)
        try:
            self._client.post(cmd, **args)
        except (zmq.ZMQError, ClientError) as exc:
            raise EngineLost(f"cannot send to the engine: {exc}") from None

    def generate(self, **limits) -> tuple[list[tuple[float, mido.Message]], float]:
        """generate with until (session seconds) / notes / max_tokens (and now, feed: protocol events fed
        first); returns (events, timeline end s)."""
        result = self._call("generate", session=self.session, **limits)
        self._remember(limits.get("feed", []))
        self.key = result.get("key", self.key)
        events = [e for e in (from_wire(n) for n in result.get("notes", [])) if e is not None]
        return events, float(result.get("time", 0.0))

    def set(self, **params) -> dict:
        self.params.update(params)
        return self._call("set", session=self.session, **params)

    def keepalive(self) -> None:
        """Touch the session (an empty feed) when nothing was sent for KEEPALIVE_S seconds."""
        if self.session is not None and self._now() - self._last_call > KEEPALIVE_S:
            self.feed([])


class EngineWatcher:
    """A thread on the server's event stream: calls on_lost() when the server announces it is stopping or its
    connection drops (a crash, a kill -9: noticed within about 0.1 s), and
    on_param(changes) for `set` calls on our session (a mode switch through `musebridge ctl set mode ...`)."""

    def __init__(self, config: ClientConfig, session: Callable[[], str | None],
                 on_lost: Callable[[str], None], on_param: Callable[[dict], None]):
        self.config, self._session = config, session
        self.on_lost, self.on_param = on_lost, on_param
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="musebridge-engine-events", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        with Client(self.config) as client:
            stream = client.events(("server", "session", "param"), timeout=0.1)
            while not self._stop.is_set():
                for event in stream:
                    self._handle(event)
                    if self._stop.is_set():
                        return
                if client.dropped():  # a kill -9 publishes nothing: its connection dropping is the news
                    self.on_lost("the connection to the engine server dropped (it stopped or was killed)")
                stream = client.events(("server", "session", "param"), timeout=0.1)  # resume after a quiet spell

    def _handle(self, event) -> None:
        mine = event.session is not None and event.session == self._session()
        if event.topic == "server" and event.data.get("state") == "stopping":
            self.on_lost("the engine server is stopping")
        elif event.topic == "param" and mine:
            self.on_param(dict(event.data.get("changed", {})))
        elif event.topic == "session" and mine and event.data.get("state") in ("closed", "reclaimed"):
            log.info("engine session %s %s", event.session, event.data.get("state"))
