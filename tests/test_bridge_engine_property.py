"""The bridge and the real engine together under random playing: the in-memory rig (tests/bridge_fakes.py) with an
EngineLink whose requests go, through the protocol's encode/parse, to a real Service on the small test model
(what `musebridge serve` runs, without the transport). In every mode, whatever the player does, the engine never
refuses a request the bridge sends (no "engine refused" warning), and no note is left sounding."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from musebridge.bridge.config import ModeConfig
from musebridge.bridge.engine_link import EngineLink
from musebridge.engine.server import protocol as P
from musebridge.engine.server.client import ClientConfig, ClientError
from musebridge.engine.server.jobs import Jobs
from musebridge.engine.server.service import Service
from musebridge.engine.sessions.session import Engine

from tests.bridge_fakes import Rig, cc, off, on, unreleased_note_ons
from tests.model_fixtures import export_small

ACTIONS = st.lists(st.one_of(
    st.tuples(st.just("on"), st.integers(min_value=55, max_value=62), st.integers(min_value=1, max_value=127)),
    st.tuples(st.just("off"), st.integers(min_value=55, max_value=62)),
    st.tuples(st.just("cc"), st.sampled_from([64, 102, 103, 104, 105, 107, 108, 123]), st.sampled_from([0, 127])),
    st.tuples(st.just("run"), st.floats(min_value=0.0, max_value=0.8)),
), min_size=3, max_size=25)


class ServiceClient:
    """Client.call/post/close over a real Service: each request encoded, parsed and answered as the server does
    (engine/server/jobs.py), the reply decoded as the client does."""

    def __init__(self, service: Service):
        self.jobs = Jobs(service.begin, lambda events: None)
        self._ids = 0

    def call(self, cmd: str, timeout: float | None = None, **args) -> dict:
        self._ids += 1
        frames: list[bytes] = []
        try:
            req = P.parse_request([P.encode_request(P.Request(str(self._ids), cmd, args))])
        except P.ProtocolError as exc:
            raise ClientError(f"{cmd}: {exc}", exc.code) from None
        self.jobs.submit(req, frames.append, "bridge")
        while self.jobs.step():
            pass
        reply = P.decode_reply(frames[-1])
        if not reply.ok:
            raise ClientError(f"{cmd}: {reply.error_message}", reply.error_code or "internal")
        return reply.result or {}

    def post(self, cmd: str, **args) -> str:
        self.call(cmd, **args)  # an error in a posted request is the next call's news in the real client
        return str(self._ids)

    def close(self) -> None:
        pass


class ServiceLink(EngineLink):
    """EngineLink on a ServiceClient (never reconnects: the engine cannot be lost here)."""

    def __init__(self, service: Service, now):
        super().__init__(ClientConfig(), {"instruments": ["strings"], "player_instrument": "piano", "seed": 5},
                         now)
        self._client = ServiceClient(service)

    def drop(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine.load(export_small(tmp_path_factory.mktemp("model"))[1])


class Refusals(logging.Handler):
    """Collects the bridge's warnings about refused engine requests and any logged exception."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "refused" in record.getMessage() or record.exc_info:
            self.messages.append(record.getMessage())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(mode=st.sampled_from(["respond", "accompany", "harmonize", "generate"]), thru=st.booleans(),
       actions=ACTIONS)
def test_the_engine_accepts_whatever_the_bridge_sends(engine, mode, thru, actions):
    refusals = Refusals()
    logging.getLogger("musebridge").addHandler(refusals)
    try:
        rig = Rig(mode, thru=thru, link=ServiceLink(Service(engine), lambda: 0.0),
                  modes=ModeConfig(pause_s=0.2, answer_s=0.4))
        for action in actions:
            if action[0] == "on":
                rig.play(on(action[1], velocity=action[2]))
            elif action[0] == "off":
                rig.play(off(action[1]))
            elif action[0] == "cc":
                rig.play(cc(action[1], action[2]))
            else:
                rig.run(action[1])
        rig.bridge.stop()
    finally:
        logging.getLogger("musebridge").removeHandler(refusals)
    assert not refusals.messages
    assert not unreleased_note_ons(m for _, m in rig.heard)

