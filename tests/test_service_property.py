"""Random valid command sequences against the engine service (the small test model): every request is answered
with a result or a typed protocol error, never an internal one; the server's idle work never fails; a session's
timeline never runs backwards except by a rollback the reply reports; generated note-offs only end notes the
engine started. And the same kind of traffic from two peers on two sessions, run in slices between each other's
and the idle work as the server runs it (engine/server/jobs.py): answered once each, never `internal` (a broken
engine invariant, errors.EngineBug, is answered so)."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from musebridge.engine.server import protocol as P
from musebridge.engine.server.jobs import Jobs
from musebridge.engine.server.service import Service
from musebridge.engine.sessions.session import Engine

from tests.model_fixtures import export_small

INSTRUMENTS = ["piano", "strings", "bass", "guitar", "drums", "brass"]

PARAMS = st.fixed_dictionaries({}, optional={
    "style": st.sampled_from(["bach", "unknown", "mozart", "nobody"]),
    "instruments": st.lists(st.sampled_from(INSTRUMENTS), min_size=1, max_size=3, unique=True),
    "player_instrument": st.sampled_from(INSTRUMENTS),
    "temperature": st.floats(min_value=0.05, max_value=5.0),
    "top_k": st.integers(min_value=0, max_value=50),
    "top_p": st.floats(min_value=0.0, max_value=1.0),
    "min_p": st.floats(min_value=0.0, max_value=1.0),
    "pitch_low": st.integers(min_value=0, max_value=127),
    "pitch_high": st.integers(min_value=0, max_value=127),
    "key": st.sampled_from(["C major", "A minor", "F# dorian", "Bb blues", "H major"]),
    "polyphony": st.integers(min_value=1, max_value=6),
    "best_of": st.integers(min_value=1, max_value=3),
    "mode": st.sampled_from(P.MODES),
})
EVENT = st.one_of(
    st.fixed_dictionaries({"dt": st.floats(min_value=-0.5, max_value=1.0), "type": st.just("note_on"),
                           "note": st.integers(min_value=40, max_value=80),
                           "velocity": st.integers(min_value=0, max_value=127)}),
    st.fixed_dictionaries({"dt": st.floats(min_value=-0.5, max_value=1.0), "type": st.just("note_off"),
                           "note": st.integers(min_value=40, max_value=80)}),
    st.fixed_dictionaries({"dt": st.floats(min_value=-0.5, max_value=1.0), "type": st.just("control_change"),
                           "control": st.sampled_from([64, 120, 123]), "value": st.sampled_from([0, 127])}),
    st.fixed_dictionaries({"dt": st.floats(min_value=-0.5, max_value=1.0), "type": st.just("program_change"),
                           "program": st.integers(min_value=0, max_value=127)}),
)
ACTIONS = st.one_of(
    st.tuples(st.just("create"), PARAMS, st.integers(min_value=32, max_value=128)),
    st.tuples(st.just("feed"), st.lists(EVENT, max_size=4)),
    st.tuples(st.just("end_engine_notes")),
    st.tuples(st.just("generate"), st.fixed_dictionaries({}, optional={
        "notes": st.integers(min_value=1, max_value=4), "max_tokens": st.integers(min_value=1, max_value=40),
        "until_dt": st.floats(min_value=0.0, max_value=2.0), "now": st.booleans(),
        "feed": st.lists(EVENT, max_size=3)})),
    st.tuples(st.just("anticipate"), st.floats(min_value=-0.1, max_value=0.5)),
    st.tuples(st.just("set"), PARAMS),
    st.tuples(st.just("reset")),
    st.tuples(st.just("close")),
    st.tuples(st.just("idle"), st.integers(min_value=1, max_value=40)),
)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_small(tmp_path_factory.mktemp("model"))[1]


class Driver:
    """Turns actions into requests on one session at a time; tracks what the engine holds."""

    def __init__(self, service: Service):
        self.service = service
        self.sid: str | None = None
        self.time = 0.0  # the session's timeline end, s, from the last reply
        self.held: Counter[tuple[int, int]] = Counter()  # engine notes sounding: (channel, note) -> how many

    def call(self, cmd: str, args: dict) -> dict | None:
        """The reply's result, or None for a protocol error (the kind a client may get for valid-looking input)."""
        try:
            P.check_args(cmd, args)
            result, _ = self.service.handle(cmd, args)
        except P.ProtocolError as exc:
            assert exc.code != "internal", exc
            return None
        return result

    def act(self, action: tuple) -> None:
        kind = action[0]
        if kind == "create":
            result = self.call("session.create", {**action[1], "context": action[2]})
            if result is not None:
                self.sid, self.time, self.held = result["session"], 0.0, Counter()
        elif self.sid is not None:
            getattr(self, f"_{kind}")(*action[1:])

    def _wire(self, events: list[dict]) -> list[dict]:
        return [{**{k: v for k, v in e.items() if k != "dt"}, "t": round(max(0.0, self.time + e["dt"]), 4)}
                for e in events]

    def _feed(self, events: list[dict]) -> None:
        self._fed(self._wire(events))

    def _fed(self, wire: list[dict]) -> bool:
        result = self.call("feed", {"session": self.sid, "events": wire})
        if result is None:
            return False
        if result["rolled_back"] == 0:
            assert result["time"] >= self.time - 1e-9, "the timeline ran backwards without a rollback"
        self.time = result["time"]
        return True

    def _end_engine_notes(self) -> None:
        ends = [{"t": round(self.time, 4), "type": "note_off", "channel": ch, "note": n, "engine": True}
                for (ch, n), count in sorted(self.held.items()) for _ in range(count)]
        if self._fed(ends):
            self.held.clear()

    def _generate(self, args: dict) -> None:
        args = dict(args)
        if "until_dt" in args:
            args["until"] = round(self.time + args.pop("until_dt"), 4)
        if "feed" in args:  # the player's events in the same request (harmonize's one round trip)
            args["feed"] = self._wire(args["feed"])
        if not {"notes", "max_tokens", "until"} & set(args):
            args["max_tokens"] = 8
        result = self.call("generate", {"session": self.sid, **args})
        if result is None:
            return
        if result.get("rolled_back", 0) == 0:
            assert result["time"] >= self.time - 1e-9, "the timeline ran backwards without a rollback"
        for note in result["notes"]:
            key = (note.get("channel"), note.get("note"))
            if note["type"] == "note_on" and note["velocity"] > 0:
                assert self.held[key] == 0, f"the engine struck a key it sounds already: {note}"
                self.held[key] += 1
            elif note["type"] in ("note_off", "note_on"):
                assert self.held[key] > 0, f"the engine ended a note it did not start: {note}"
                self.held[key] -= 1
        self.time = result["time"]

    def _anticipate(self, dt: float) -> None:
        self.call("anticipate", {"session": self.sid, "t": round(max(0.0, self.time + dt), 4)})

    def _set(self, params: dict) -> None:
        self.call("set", {"session": self.sid, **params})

    def _reset(self) -> None:
        if self.call("reset", {"session": self.sid}) is not None:
            self.time, self.held = 0.0, Counter()

    def _close(self) -> None:
        self.call("session.close", {"session": self.sid})
        self.sid = None

    def _idle(self, units: int) -> None:
        for _ in range(units):
            if not self.service.idle():
                break


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(actions=st.lists(ACTIONS, min_size=3, max_size=25))
def test_random_valid_requests_get_a_result_or_a_typed_error(model, actions):
    driver = Driver(Service(Engine.load(model)))
    driver.act(("create", {"instruments": ["strings"], "player_instrument": "piano"}, 64))
    for action in actions:
        driver.act(action)


REQUESTS = st.one_of(
    st.tuples(st.just("generate"), st.fixed_dictionaries({"max_tokens": st.integers(min_value=1, max_value=60)},
                                                         optional={"now": st.booleans()})),
    st.tuples(st.just("feed"), st.lists(EVENT, max_size=6)),
    st.tuples(st.just("set"), PARAMS),
    st.tuples(st.just("anticipate"), st.floats(min_value=0.0, max_value=0.5)),
    st.tuples(st.just("reset")),
    st.tuples(st.just("status")),
)
TRAFFIC = st.lists(st.one_of(
    st.tuples(st.just("send"), st.sampled_from(["a", "b"]), st.sampled_from([0, 1]), REQUESTS),
    st.tuples(st.just("step"), st.integers(min_value=1, max_value=6)),
    st.tuples(st.just("idle"), st.integers(min_value=1, max_value=6)),
), min_size=3, max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(traffic=TRAFFIC)
def test_requests_interleaved_in_slices_never_fail_inside(model, traffic):
    """Two peers, two sessions (small contexts: window slides), requests run in slices between each other's and
    the server's idle work, as `musebridge serve` runs them: every request is answered once, never with an
    internal error, and the idle work never fails."""
    service = Service(Engine.load(model))
    jobs = Jobs(service.begin, lambda events: None)
    sids = [service.handle("session.create", {"instruments": ["strings", "bass"], "player_instrument": "piano",
                                              "seed": i, "context": 32 + 16 * i, "best_of": 1 + i})[0]["session"]
            for i in range(2)]
    replies: list[P.Reply] = []
    sent = 0
    for action in traffic:
        if action[0] == "send":
            _, peer, which, (cmd, *arg) = action
            sid = sids[which]
            args = _request_args(cmd, arg[0] if arg else None, sid, service.sessions[sid].session.time)
            sent += 1
            try:
                req = P.parse_request([P.encode_request(P.Request(str(sent), cmd, args))])
            except P.ProtocolError:
                replies.append(P.Reply(str(sent), False, error_code="bad_argument"))
                continue
            jobs.submit(req, lambda frame: replies.append(P.decode_reply(frame)), peer)
        elif action[0] == "step":
            for _ in range(action[1]):
                jobs.step()
        else:
            for _ in range(action[1]):
                service.idle(jobs.sessions())
    while jobs.step():
        pass
    assert sorted(int(r.id) for r in replies) == list(range(1, sent + 1)), "each request answered once"
    assert not [r for r in replies if r.error_code == "internal"], [r.error_message for r in replies]


def _request_args(cmd: str, arg, sid: str, now: float) -> dict:
    if cmd == "generate":
        return {"session": sid, **arg}
    if cmd == "feed":
        return {"session": sid, "events": [{**{k: v for k, v in e.items() if k != "dt"},
                                            "t": round(max(0.0, now + e["dt"]), 4)} for e in arg]}
    if cmd == "set":
        return {"session": sid, **arg}
    if cmd == "anticipate":
        return {"session": sid, "t": round(now + arg, 4)}
    return {} if cmd == "status" else {"session": sid}
