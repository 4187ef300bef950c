"""The request queue under random traffic (engine/server/jobs.py, a scripted service: requests of random lengths
from a few peers on a few sessions, slices run at random moments): every request is answered exactly once, each
peer's replies come in its requests' order, a session never has two requests under way, and a request that waits
behind nothing is started at once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from musebridge.engine.server import protocol as P
from musebridge.engine.server.jobs import Jobs

PEERS, SESSIONS = ("a", "b", "c"), ("s1", "s2", None)
TRAFFIC = st.lists(st.one_of(
    st.tuples(st.just("submit"), st.sampled_from(PEERS), st.sampled_from(SESSIONS),
              st.integers(min_value=0, max_value=5), st.booleans()),  # steps before the end; fails at the end
    st.tuples(st.just("step"), st.integers(min_value=1, max_value=4)),
), max_size=60)


class Scripted:
    """begin(cmd, args, client): a generator that runs `args["steps"]` slices, then answers or raises; records
    which sessions are under way at each slice."""

    def __init__(self):
        self.under_way: dict[str, str] = {}  # session -> request id running a slice there
        self.started: list[str] = []

    def begin(self, cmd: str, args: dict, client: str = ""):
        rid, session = args["rid"], args.get("session")
        self.started.append(rid)
        for _ in range(args["steps"]):
            if session is not None:
                assert self.under_way.setdefault(session, rid) == rid, f"two requests under way on {session}"
            yield [("progress", session, {"rid": rid})]
        self.under_way.pop(session, None)
        if args["fail"]:
            raise P.ProtocolError("bad_argument", "scripted failure")
        return {"rid": rid}, []


@settings(max_examples=300, deadline=None)
@given(traffic=TRAFFIC)
def test_random_traffic_is_answered_once_in_order_per_peer(traffic):
    service = Scripted()
    jobs = Jobs(service.begin, lambda events: None)
    replies: dict[str, list[str]] = {peer: [] for peer in PEERS}
    sent: dict[str, list[str]] = {peer: [] for peer in PEERS}
    session_of: dict[str, str | None] = {}
    for n, action in enumerate(traffic):
        if action[0] == "submit":
            _, peer, session, steps, fail = action
            rid = f"{peer}{n}"
            answered = {r for got in replies.values() for r in got}
            open_ = [r for rids in sent.values() for r in rids if r not in answered]
            blocked = any(r.startswith(peer) or (session and session_of[r] == session) for r in open_)
            args = {"rid": rid, "steps": steps, "fail": fail, **({"session": session} if session else {})}
            jobs.submit(P.Request(rid, "status", args), lambda frame, p=peer: replies[p].append(
                P.decode_reply(frame).id), peer)
            sent[peer].append(rid)
            session_of[rid] = session
            assert blocked or rid in service.started, "a request that waits behind nothing starts at once"
        else:
            for _ in range(action[1]):
                jobs.step()
    while jobs.step():
        pass
    assert replies == sent, "each request answered once, in its peer's order"
    assert not jobs.running and not service.under_way
