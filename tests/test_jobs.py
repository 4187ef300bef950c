"""Long requests run in slices between the others' (engine/server/jobs.py): order per peer and per session,
streaming."""

from __future__ import annotations

import pytest
from musebridge.engine.server import protocol as P
from musebridge.engine.server.jobs import Jobs
from musebridge.engine.server.service import STEP_TOKENS, STREAM_CHUNK_TOKENS, Service
from musebridge.engine.sessions.session import Engine

from tests.model_fixtures import export_small


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_small(tmp_path_factory.mktemp("model"))[1]


class Rig:
    """A Service behind a Jobs queue; every reply and published event lands in `log` in the order it went out."""

    def __init__(self, model):
        self.service = Service(Engine.load(model))
        self.log: list[tuple] = []
        self.jobs = Jobs(self.service.begin, lambda events: self.log.extend(("event", *e) for e in events))
        self._ids = 0

    def session(self, **params) -> str:
        created = self.service.handle("session.create", {"instruments": ["strings"], "seed": 3, **params})
        return created[0]["session"]

    def submit(self, peer: str, cmd: str, **args) -> str:
        self._ids += 1
        rid = f"{peer}-{self._ids}"
        self.jobs.submit(P.Request(rid, cmd, args), self._reply, peer)
        return rid

    def _reply(self, frame: bytes) -> None:
        self.log.append(("reply", P.decode_reply(frame)))

    def replies(self) -> list[str]:
        return [entry[1].id for entry in self.log if entry[0] == "reply"]

    def drain(self) -> int:
        steps = 0
        while self.jobs.step():
            steps += 1
        return steps


def test_a_long_generate_lets_other_peers_and_sessions_through(model):
    rig = Rig(model)
    a, b = rig.session(), rig.session()
    session = rig.service.sessions[a].session

    def made() -> int:  # tokens put on a's timeline so far (window slides drop some from its list)
        return len(session.tokens) + session.dropped

    start = made()
    long = rig.submit("script", "generate", session=a, max_tokens=200)
    assert rig.replies() == [] and rig.jobs.running  # one slice ran; the rest waits for the loop
    quick = [rig.submit("bridge", "status"), rig.submit("bridge", "generate", session=b, notes=1, now=True),
             rig.submit("other", "session.list")]
    assert rig.replies() == quick  # answered while the long one is still unfinished ...
    assert made() - start <= STEP_TOKENS <= 8  # ... after one slice of it, a few tokens
    assert rig.drain() >= 200 // STEP_TOKENS - 1
    assert rig.replies() == [*quick, long]
    reply = next(entry[1] for entry in rig.log if entry[0] == "reply" and entry[1].id == long)
    assert reply.ok and reply.result["tokens"] == 200


def test_a_peer_gets_its_replies_in_order_and_a_session_one_request_at_a_time(model):
    rig = Rig(model)
    a, b = rig.session(), rig.session()
    long = rig.submit("script", "generate", session=a, max_tokens=60)
    same_peer = rig.submit("script", "status")
    same_session = rig.submit("bridge", "feed", session=a, events=[])
    behind_that = rig.submit("bridge", "generate", session=b, notes=1, now=True)  # the bridge's own order
    free = rig.submit("watcher", "session.list")
    assert rig.replies() == [free]
    rig.drain()
    assert rig.replies() == [free, long, same_peer, same_session, behind_that]
    assert all(entry[1].ok for entry in rig.log if entry[0] == "reply")


def test_a_long_generate_streams_its_notes_before_the_reply(model):
    rig = Rig(model)
    sid = rig.session()
    long = rig.submit("script", "generate", session=sid, max_tokens=8 * STREAM_CHUNK_TOKENS)
    rig.drain()
    kinds = [(entry[0], entry[1] if entry[0] == "event" else entry[1].id) for entry in rig.log]
    reply_at = kinds.index(("reply", long))
    early = [e for e in rig.log[:reply_at] if e[0] == "event" and e[1] == "note"]
    assert len(early) >= 2  # published while the request ran, not all after it
    streamed = [n for e in rig.log if e[0] == "event" and e[1] == "note" for n in e[3]["notes"]]
    assert streamed == rig.log[reply_at][1].result["notes"]  # every note once, in order
    assert kinds[-1] == ("event", "telemetry")


def test_now_and_errors_take_one_step(model):
    rig = Rig(model)
    sid = rig.session(player_instrument="piano")
    steps = rig.service.begin("generate", {"session": sid, "notes": 3, "max_tokens": 32, "now": True})
    with pytest.raises(StopIteration):
        next(steps)  # a `now` request is one slice: its notes must not end each other
    rig.submit("p", "generate", session="nope", max_tokens=50)
    rig.submit("p", "generate", session=sid)
    codes = [entry[1].error_code for entry in rig.log]
    assert codes == ["session_not_found", "bad_argument"] and not rig.jobs.running


def test_a_session_at_work_is_not_reclaimed(model):
    rig = Rig(model)
    sid = rig.session()
    rig.submit("script", "generate", session=sid, max_tokens=100)
    rig.service.sessions[sid].last_seen -= 1000  # as if its last request had come 1000 s ago
    assert rig.jobs.step() and rig.service.reap(300) == []  # the request still at work counts as use
    rig.drain()
    assert rig.replies() and rig.service.sessions[sid]


def test_requests_piled_behind_a_long_one_are_bounded(model, monkeypatch):
    import musebridge.engine.server.jobs as J

    monkeypatch.setattr(J, "MAX_WAITING", 3)
    rig = Rig(model)
    sid = rig.session()
    rig.submit("script", "generate", session=sid, max_tokens=40)
    waiting = [rig.submit("script", "status") for _ in range(3)]
    refused = rig.submit("script", "status")
    assert [(e[1].id, e[1].error_code) for e in rig.log if e[0] == "reply"] == [(refused, "overloaded")]
    rig.drain()
    assert rig.replies()[-3:] == waiting  # the queued ones are answered after the long one, in order


def test_a_long_feed_lets_others_through_and_is_checked_whole_first(model):
    rig = Rig(model)
    a, b = rig.session(player_instrument="piano"), rig.session(player_instrument="piano")
    phrase = [{"t": 0.1 * i, "type": "note_on" if i % 2 == 0 else "note_off", "note": 60 + i // 2 % 12,
               **({"velocity": 80} if i % 2 == 0 else {})} for i in range(100)]
    long = rig.submit("script", "feed", session=a, events=phrase)
    quick = rig.submit("bridge", "feed", session=b, events=phrase[:2])
    assert rig.replies() == [quick] and rig.jobs.running
    rig.drain()
    reply = rig.log[-1][1]
    assert rig.replies() == [quick, long] and reply.ok and reply.result["fed"] == 100
    before = list(rig.service.sessions[a].session.tokens)
    rig.submit("script", "feed", session=a, events=[*phrase[:4], {"t": 20.0, "type": "note_on", "note": 300}])
    assert rig.log[-1][1].error_code == "bad_argument"
    assert rig.service.sessions[a].session.tokens == before  # nothing fed: the bad event was found first


def test_a_new_style_rereads_the_window_in_slices(model):
    rig = Rig(model)
    sid = rig.session()
    rig.service.handle("generate", {"session": sid, "max_tokens": 120})  # a nearly full 128-token window
    session = rig.service.sessions[sid].session
    timeline = list(session.tokens)
    changed = rig.submit("script", "set", session=sid, style="folk")
    status = rig.submit("bridge", "status")
    assert rig.replies() == [status] and session.pending > 0  # the re-read is under way, others go first
    rig.drain()
    while rig.service.idle():
        pass
    assert rig.replies() == [status, changed] and session.pending == 0
    prefix = session.config.prefix()
    assert session.tokens[: len(prefix)] == prefix and session.tokens[len(prefix):] == timeline[len(prefix):]
    assert rig.service.handle("generate", {"session": sid, "max_tokens": 20})[0]["tokens"] == 20


def test_best_of_candidates_run_in_slices_too(model):
    rig = Rig(model)
    sid = rig.session(best_of=3)
    session = rig.service.sessions[sid].session
    start = len(session.tokens) + session.dropped
    best = rig.submit("script", "generate", session=sid, max_tokens=40)
    status = rig.submit("bridge", "status")
    assert rig.replies() == [status]  # answered between the candidates' slices
    steps = rig.drain()
    assert steps >= 3 * 40 // STEP_TOKENS - 2  # three candidates of 40 tokens, a slice at a time
    reply = next(entry[1] for entry in rig.log if entry[0] == "reply" and entry[1].id == best)
    assert reply.ok and reply.result["tokens"] == 40 == len(session.tokens) + session.dropped - start


def test_a_request_in_progress_keeps_its_session_and_its_last_step_is_no_pause(model):
    rig = Rig(model)
    sid = rig.session()
    with pytest.raises(StopIteration):  # two tokens, the budget: answered without a pause for other work
        next(rig.service.begin("generate", {"session": sid, "max_tokens": 2}))
    rig.submit("script", "generate", session=sid, max_tokens=40)
    session = rig.service.sessions[sid].session
    assert rig.jobs.sessions() == {sid} and session.pending == 1  # its last sampled token waits
    assert not rig.service.idle(rig.jobs.sessions()) and session.pending == 1  # left to the request itself
    rig.drain()
    assert rig.jobs.sessions() == set() and rig.service.idle(rig.jobs.sessions()) and session.pending == 0


def test_cancel_ends_the_senders_request_at_once_and_lets_what_waited_run(model):
    rig = Rig(model)
    a = rig.session()
    long = rig.submit("script", "generate", session=a, max_tokens=100_000)
    behind = rig.submit("script", "status")  # waits behind the long one (same peer)
    other = rig.submit("bridge", "generate", session=a, notes=1, now=True)  # waits (same session)
    stranger = rig.submit("other", "cancel", request=long)  # not theirs to cancel
    assert rig.log[-1][1].result == {"cancelled": 0} and rig.jobs.running
    cancel = rig.submit("script", "cancel", request=long)  # answered now, not behind its own long request
    replies = {entry[1].id: entry[1] for entry in rig.log if entry[0] == "reply"}
    assert replies[long].error_code == "cancelled" and replies[cancel].result == {"cancelled": 1}
    assert replies[behind].ok and replies[other].ok  # started as soon as the long one ended
    assert stranger in replies and not rig.jobs.running and rig.drain() == 0
    made = rig.submit("script", "generate", session=a, notes=2, now=True)  # the session goes on
    assert rig.replies()[-1] == made and [e[1] for e in rig.log if e[0] == "reply"][-1].ok


def test_one_request_costs_at_most_a_bounded_number_of_model_steps(model):
    rig = Rig(model)
    sid = rig.session(best_of=16)
    rig.submit("script", "generate", session=sid, max_tokens=100_000)
    reply = rig.log[-1][1]
    assert reply.error_code == "bad_argument" and "lower max_tokens or best_of" in reply.error_message
    assert not rig.jobs.running
