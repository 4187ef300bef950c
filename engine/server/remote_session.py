"""A typed session over the client: mido messages in, mido messages out, on the session's clock.

    with Client.connect() as c:                          # the server at 127.0.0.1:5555 (musebridge serve)
        with c.session(style="bach", instruments=["strings"], player_instrument="piano") as s:
            s.feed(mido.MidiFile("phrase.mid"))          # or any iterable of messages
            for msg in s.generate(seconds=4):            # the engine's answer
                out.send(msg)                            # (after sleeping msg.time seconds)

Times follow mido's convention for a file played in real time: each message's `time` is the delay in seconds
since the previous one. The session keeps a cursor (`time`, seconds since the session began): `feed` places its
messages from the cursor on and moves it to the last one; `generate(seconds)` asks the engine to play from the
cursor to cursor + seconds and moves the cursor there. Meta and system messages in what is fed only count for
their time. Every call is one request of the protocol (docs/protocol.md); errors are ClientError, one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import mido

from .wire import EVENT_TYPES, from_wire, to_wire

if TYPE_CHECKING:
    from .client import Client


class RemoteSession:
    """One engine session reached through a Client. params of session.create are protocol.PARAMS names."""

    def __init__(self, client: Client, timeout: float | None = None, **params):
        self.client = client
        self.timeout = timeout
        self.id: str = client.call("session.create", timeout=timeout, **params)["session"]
        self.time = 0.0  # seconds since the session began: where the next fed or generated message goes

    def __enter__(self) -> RemoteSession:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def feed(self, messages: Iterable[mido.Message]) -> int:
        """The player's messages, each `time` seconds after the previous one (the first: after the cursor).
        Returns how many were sent."""
        events, t = [], self.time
        for msg in messages:
            t += getattr(msg, "time", 0.0) or 0.0
            if msg.type in EVENT_TYPES:
                events.append(to_wire(t, msg))
        if events:
            self.client.call("feed", session=self.id, events=events, timeout=self.timeout)
        self.time = t
        return len(events)

    def generate(self, seconds: float, **limits) -> Iterator[mido.Message]:
        """The engine's messages from the cursor to cursor + seconds, each with `time` the delay in seconds since
        the previous one. limits: other `generate` arguments (best_of, ...). The request is made at once; the
        messages are yielded from its reply."""
        start, until = self.time, self.time + seconds
        reply = self.client.call("generate", session=self.id, until=until, timeout=self.timeout, **limits)
        self.time = until
        return _deltas([from_wire(event)[0] for event in reply["notes"]], start)

    def set(self, **params) -> dict:
        """Change parameters (protocol.PARAMS names); returns the session's parameters after the change."""
        return self.client.call("set", session=self.id, timeout=self.timeout, **params)["params"]

    def close(self) -> None:
        """End the session on the server (a second close does nothing)."""
        if self.id:
            self.client.call("session.close", session=self.id, timeout=self.timeout)
            self.id = ""


def _deltas(events, start: float) -> Iterator[mido.Message]:
    """Timed events (session seconds, in order) as messages whose time is the delay since the previous one."""
    previous = start
    for t, msg in events:
        yield msg.copy(time=max(0.0, t - previous))
        previous = max(previous, t)
