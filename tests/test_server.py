"""The engine server as its own process (`musebridge serve`), driven through the real client over loopback."""

from __future__ import annotations

import json
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest
import zmq
from musebridge.bridge.clock import MonotonicClock
from musebridge.bridge.config import BridgeConfig
from musebridge.bridge.core import Bridge
from musebridge.bridge.engine_link import EngineLink, EngineWatcher
from musebridge.bridge.errors import BridgeError
from musebridge.bridge.ports import MemoryBackend, MemoryMidi
from musebridge.engine.errors import EngineError
from musebridge.engine.server import protocol as P
from musebridge.engine.server.client import Client, ClientConfig, ClientError
from musebridge.engine.server.connection import find_key, runtime_dir

from musebridge.commands.keys import make_keys
from tests.fuzz import bad_frames
from tests.model_fixtures import export_small
from tests.net import free_port, wait_until


class Served:
    """A `musebridge serve` subprocess on free loopback ports."""

    def __init__(self, model, *extra, host="127.0.0.1"):
        self.port, self.pub_port = free_port(), free_port()
        cmd = [sys.executable, "-m", "musebridge", "serve", "--model", str(model), "--host", host,
               "--port", str(self.port), "--pub-port", str(self.pub_port), *extra]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.config = ClientConfig(endpoint=f"tcp://127.0.0.1:{self.port}",
                                   events_endpoint=f"tcp://127.0.0.1:{self.pub_port}", timeout=10.0)

    def client(self, **kw) -> Client:
        return Client(ClientConfig(**{**self.config.__dict__, **kw}), context=zmq.Context())

    def wait_ready(self, keys=None) -> None:
        with self.client(keys=keys, timeout=0.5) as c:
            for _ in range(120):
                if c.ping(timeout=0.5):
                    return
                assert self.proc.poll() is None, self.proc.communicate()
        raise AssertionError("server did not answer status")

    def stop(self) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=20)
        return self.proc.returncode, out, err


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_small(tmp_path_factory.mktemp("model"))[1]


@pytest.fixture(scope="module")
def server(model):
    s = Served(model, "--max-sessions", "4", "--session-timeout", "3")
    s.wait_ready()
    yield s
    s.stop()


def test_session_lifecycle_and_generation(server):
    with server.client() as c:
        status = c.call("status")
        assert status["protocol"] == P.PROTOCOL_VERSION and status["context"] == 128
        sid = c.call("session.create", style="bach", instruments=["strings", "piano"], player_instrument="piano",
                     seed=3)["session"]
        assert sid in [s["session"] for s in c.call("session.list")["sessions"]]
        fed = c.call("feed", session=sid, events=[{"t": 0.0, "type": "note_on", "note": 60, "velocity": 80},
                                                   {"t": 0.5, "type": "note_off", "note": 60}])
        assert fed["fed"] == 2
        out = c.call("generate", session=sid, max_tokens=200)
        assert out["tokens"] > 0
        ons = [n for n in out["notes"] if n["type"] == "note_on"]
        assert ons, "a random model still plays notes"
        assert {n["channel"] for n in ons} == {5}  # strings only: never the player's piano (channel 0)
        assert all(n["t"] >= 0.5 for n in ons)  # after what the player fed
        assert c.call("status")["latency"]["tokens"] > 0
        t = out["time"]
        c.call("feed", session=sid, events=[{"t": t, "type": "note_on", "note": 64, "velocity": 70}])
        chord = c.call("generate", session=sid, notes=2, now=True)  # a harmony for the player's note
        assert [n["t"] for n in chord["notes"] if n["type"] == "note_on"] == [t, t] and chord["time"] == t
        with pytest.raises(ClientError) as info:
            c.call("generate", session=sid, until=t + 1, now=True)
        assert info.value.code == "bad_argument"
        c.call("session.close", session=sid)
        with pytest.raises(ClientError) as info:
            c.call("generate", session=sid, notes=1)
        assert info.value.code == "session_not_found"


def test_generate_feeds_the_players_note_first_in_the_same_request(server):
    """`generate` with `feed` (harmonize's one round trip) makes what `feed` then `generate` make; a bad event
    refuses the whole request before anything is fed."""
    note = {"t": 0.25, "type": "note_on", "note": 62, "velocity": 90}
    with server.client() as c:
        made = []
        for combined in (False, True):
            sid = c.call("session.create", instruments=["strings"], player_instrument="piano", seed=5)["session"]
            if combined:
                out = c.call("generate", session=sid, feed=[note], notes=2, now=True)
                assert out["fed"] == 1 and out["rolled_back"] == 0
            else:
                c.call("feed", session=sid, events=[note])
                out = c.call("generate", session=sid, notes=2, now=True)
            made.append((out["notes"], out["time"]))
            with pytest.raises(ClientError) as info:
                c.call("generate", session=sid, notes=1, now=True,
                       feed=[{**note, "t": 0.5}, {"t": 0.6, "type": "note_on", "note": 200}])
            assert info.value.code == "bad_argument" and "200" in str(info.value)
            assert c.call("feed", session=sid, events=[])["time"] == out["time"], "nothing was fed"
            c.call("session.close", session=sid)
        assert made[0] == made[1] and [n["t"] for n in made[0][0] if n["type"] == "note_on"] == [0.25, 0.25]


def test_same_seed_same_notes(server):
    with server.client() as c:
        runs = []
        for _ in range(2):
            sid = c.call("session.create", instruments=["piano"], seed=11, temperature=0.9)["session"]
            runs.append(c.call("generate", session=sid, max_tokens=120)["notes"])
            c.call("session.close", session=sid)
        assert runs[0] == runs[1]


def test_parameter_changes_are_published(server):
    with server.client() as c:
        events = c.events(("param",), timeout=5.0)
        sid = c.call("session.create", instruments=["organ"], seed=1)["session"]
        time.sleep(0.3)  # let the subscription reach the publisher
        c.call("set", session=sid, temperature=0.5, style="folk", instruments=["voice", "organ"])
        event = next(events)
        assert event.session == sid and event.data["changed"]["temperature"] == 0.5
        out = c.call("generate", session=sid, max_tokens=150)
        assert {n["channel"] for n in out["notes"] if n["type"] == "note_on"} <= {6, 2}
        c.call("session.close", session=sid)


def test_bad_arguments_and_overload(server):
    with server.client() as c:
        for args, code in [({"style": "polka"}, "bad_argument"), ({"instruments": ["kazoo"]}, "bad_argument"),
                           ({"key": "H major"}, "bad_argument"), ({"temperature": "hot"}, "bad_argument"),
                           ({"style": "bach", "style_guidance": 2.0}, "bad_argument")]:  # not trained for it
            with pytest.raises(ClientError) as info:
                c.call("session.create", **args)
            assert info.value.code == code
        with pytest.raises(ClientError) as info:
            c.call("dance")
        assert info.value.code == "unknown_command"
        with pytest.raises(ClientError) as info:
            c.call("anticipate", session="s999", t=1.0)
        assert info.value.code == "session_not_found"
        ids = [c.call("session.create")["session"] for _ in range(4 - len(c.call("session.list")["sessions"]))]
        with pytest.raises(ClientError) as info:
            c.call("session.create")
        assert info.value.code == "overloaded"
        for sid in ids:
            c.call("session.close", session=sid)


def test_a_refused_argument_names_its_command_once(server):
    with server.client() as c:
        sid = c.call("session.create")["session"]
        # Refused by the argument check (its message names the command), by the service (it does not), and one
        # whose message starts with the command as its subject.
        for cmd, args in [("session.create", {"temperature": "hot"}), ("session.create", {"style": "polka"}),
                          ("set", {"session": sid, "temperature": 0}), ("generate", {"session": sid})]:
            with pytest.raises(ClientError) as info:
                c.call(cmd, **args)
            message = str(info.value)
            assert info.value.code == "bad_argument"
            assert message.startswith(cmd) and cmd not in message[len(cmd):], message
        with pytest.raises(ClientError) as info:
            c.call("dance")
        assert str(info.value).count("dance") == 1
        c.call("session.close", session=sid)
    link = EngineLink(server.config, {"style": "polka", "instruments": ["strings"]}, time.monotonic)
    with pytest.raises(BridgeError) as info:
        link.open()
    link.close()
    assert str(info.value).startswith("engine refused session.create: unknown style 'polka'")
    assert str(info.value).count("session.create") == 1


def test_posting_to_a_server_that_stopped_reading_fails_instead_of_blocking(model):
    """A bridge posts `anticipate` every 10 ms without waiting for replies: if the server hangs, the posts must
    end in an error (the bridge then silences and reconnects), never block the bridge's worker for good."""
    s = Served(model)
    s.wait_ready()
    outcome = []

    def post_until_refused():
        with s.client() as c:
            try:
                for _ in range(500_000):
                    c.post("anticipate", session="s1", t=1.0)
            except ClientError as exc:
                outcome.append(exc)

    s.proc.send_signal(signal.SIGSTOP)
    try:
        poster = threading.Thread(target=post_until_refused, daemon=True)
        poster.start()
        poster.join(60)
        assert not poster.is_alive(), "post() blocked"
        assert outcome and "takes no more requests" in str(outcome[0])
    finally:
        s.proc.send_signal(signal.SIGCONT)
        s.stop()


def test_idle_sessions_are_reclaimed(server):
    with server.client() as c:
        events = c.events(("session",), timeout=10.0)
        time.sleep(0.3)
        sid = c.call("session.create")["session"]
        reclaimed = next(e for e in events if e.data.get("state") == "reclaimed")
        assert reclaimed.session == sid
        assert sid not in [s["session"] for s in c.call("session.list")["sessions"]]


def test_a_client_that_stops_reading_stalls_nobody(server):
    ctx = zmq.Context()
    greedy = ctx.socket(zmq.DEALER)
    greedy.setsockopt(zmq.SNDHWM, 0)
    greedy.setsockopt(zmq.RCVHWM, 1)
    greedy.connect(server.config.endpoint)
    sub = ctx.socket(zmq.SUB)  # a subscriber that never reads
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(server.config.events_endpoint)
    request = P.encode_request(P.Request("g", "session.list", {}))
    for _ in range(5000):
        greedy.send_multipart([b"", request])
    with server.client() as c:
        sid = c.call("session.create", instruments=["bass"])["session"]
        assert c.call("generate", session=sid, max_tokens=50)["tokens"] > 0
        assert c.call("status")["sessions"] >= 1
        c.call("session.close", session=sid)
    greedy.close(0)
    sub.close(0)
    ctx.term()


def test_a_script_generating_a_long_piece_stalls_nobody(server):
    """One client's generate of many tokens runs in slices (engine/server/jobs.py): another client's requests are
    answered while it runs, and the script still gets every token."""
    with server.client(timeout=120.0) as script, server.client() as other:
        sid = script.call("session.create", instruments=["strings"])["session"]
        done: list[dict] = []
        worker = threading.Thread(target=lambda: done.append(
            script.call("generate", session=sid, max_tokens=6_000, timeout=120.0)))
        worker.start()
        answered_meanwhile = 0
        while worker.is_alive():
            assert other.call("session.list")["sessions"]
            answered_meanwhile += worker.is_alive()
            time.sleep(0.01)
        worker.join()
        assert done and done[0]["tokens"] == 6_000
        assert answered_meanwhile >= 3  # the other client was answered while the long one ran
        script.call("session.close", session=sid)


def test_fuzz_ten_thousand_bad_messages(server):
    rng = random.Random(7)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.connect(server.config.endpoint)
    key = find_key(server.config.endpoint)
    replies = 0

    def read(wait_ms: int) -> int:
        count = 0
        while sock.poll(wait_ms):
            reply = P.decode_reply(sock.recv_multipart()[-1])
            assert not reply.ok and reply.error_code in P.ERRORS
            count += 1
        return count

    for i in range(10_000):
        sock.send_multipart(bad_frames(rng, i, key))
        if i % 100 == 99:  # a client that reads its replies (one that does not is cut off: server/replies.py)
            replies += read(0)
    replies += read(2000)
    assert replies >= 9000  # every well-framed message got an error reply
    sock.close(0)
    ctx.term()
    with server.client() as c:
        assert c.call("status")["protocol"] == P.PROTOCOL_VERSION


def test_non_loopback_needs_keys(model, tmp_path):
    s = Served(model, host="0.0.0.0")
    _, err = s.proc.communicate(timeout=60)
    code = s.proc.returncode
    assert code == 2 and "--keys" in err and "Traceback" not in err


def test_curve_keys_refuse_unauthenticated_clients(model, tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys)
    s = Served(model, "--keys", str(keys), host="0.0.0.0")
    try:
        s.wait_ready(keys=str(keys))
        with s.client(keys=str(keys)) as c:
            assert c.call("status")["protocol"] == P.PROTOCOL_VERSION
        with s.client(timeout=1.0) as plain, pytest.raises(ClientError) as info:
            plain.call("status")
        assert info.value.code == "timeout"
        stranger = tmp_path / "stranger"
        make_keys(stranger)  # a valid key pair the server never authorized
        (stranger / "server.key").write_bytes((keys / "server.key").read_bytes())
        with s.client(keys=str(stranger), timeout=1.0) as c, pytest.raises(ClientError):
            c.call("status")
    finally:
        s.stop()


def test_sigterm_tells_clients_and_exits_cleanly(model):
    s = Served(model)
    s.wait_ready()
    with s.client() as c:
        events = c.events(("server",), timeout=10.0)
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        event = next(events)
        assert event.data["state"] == "stopping"
    code, out, err = s.stop()
    assert code == 0 and "Traceback" not in err


def test_missing_model_is_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "musebridge", "serve", "--model", str(tmp_path / "nope.onnx")],
                          capture_output=True, text=True, timeout=60, env={**os.environ})
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and "nope.onnx" in proc.stderr


def test_a_failing_command_is_an_internal_error_and_the_server_survives():
    from musebridge.engine.server.zmq_server import Server, ServerConfig

    class Broken:  # a service with a bug: the one thing a real service cannot be made to do on purpose
        def begin(self, cmd, args, client=""):
            yield from ()
            raise RuntimeError("boom")

    srv = Server(ServerConfig(port=free_port(), pub_port=free_port()), Broken())
    try:
        sent = []
        srv.receive([b"", P.encode_request(P.Request("7", "status", {}, srv.key))], sent.append, "test")
        reply = P.decode_reply(sent[0])
        assert (reply.id, reply.ok, reply.error_code) == ("7", False, "internal")
        assert "boom" in reply.error_message
    finally:
        srv.close()


def test_a_result_or_event_json_cannot_carry_fails_that_reply_only(caplog):
    from musebridge.engine.server.zmq_server import Server, ServerConfig

    class Sets:  # a service bug: a set where JSON needs a list
        def begin(self, cmd, args, client=""):
            yield from ()
            return {"keys": {60, 64}}, [("note", None, {"keys": {60}})]

    srv = Server(ServerConfig(port=free_port(), pub_port=free_port()), Sets())
    try:
        srv._topics[b""] += 1  # as if a subscriber wanted every topic: the event is built
        sent = []
        srv.receive([b"", P.encode_request(P.Request("8", "status", {}, srv.key))], sent.append, "test")
        srv._publish_pending()
        reply = P.decode_reply(sent[0])
        assert (reply.id, reply.ok, reply.error_code) == ("8", False, "internal")
        assert "set" in reply.error_message
        assert "event note dropped" in caplog.text
    finally:
        srv.close()


class _Echo:
    """A service that answers every command with its name, at once."""

    def begin(self, cmd, args, client=""):
        yield from ()
        return {"cmd": cmd}, []

    def idle(self, busy=()):
        return False

    def reap(self, timeout):
        return []


def test_spinning_after_a_direct_reply_serves_the_next_request_and_still_stops(tmp_path):
    from musebridge.engine.server.zmq_server import Server, ServerConfig

    sock = str(tmp_path / "engine.sock")
    srv = Server(ServerConfig(port=free_port(), pub_port=free_port(), local=sock, spin_s=5.0), _Echo())
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 10}, daemon=True)
    loop.start()
    try:
        with Client(ClientConfig(endpoint=f"unix://{sock}", timeout=5.0)) as c:
            assert c.call("status") == {"cmd": "status"}
            assert c.call("session.list") == {"cmd": "session.list"}  # answered from inside the spin window
    finally:
        srv.stop()
        loop.join(timeout=2.0)  # the 5 s spin window does not delay a stop
        srv.close()
    assert not loop.is_alive()


def test_the_server_spins_after_direct_requests_only(tmp_path):
    """After a ZeroMQ request the server goes back to a blocking poll at once (a spinning thread would keep its
    own ZeroMQ I/O thread, which sends the reply, off a CPU); after a direct one it polls without sleeping."""
    from musebridge.engine.server.zmq_server import Server, ServerConfig

    sock = str(tmp_path / "engine.sock")
    srv = Server(ServerConfig(port=free_port(), pub_port=free_port(), local=sock, spin_s=60.0), _Echo())
    polls = {"spin": 0}
    serve_ready = srv._serve_ready

    def counting(timeout_ms):
        polls["spin"] += timeout_ms == 0
        return serve_ready(timeout_ms)

    srv._serve_ready = counting
    loop = threading.Thread(target=srv.serve_forever, kwargs={"poll_ms": 10}, daemon=True)
    loop.start()
    try:
        with Client(ClientConfig(endpoint=srv.endpoints[0], timeout=5.0), context=zmq.Context()) as c:
            assert c.call("status") == {"cmd": "status"}
            time.sleep(0.2)
            after_zmq = polls["spin"]
            time.sleep(0.3)
            assert polls["spin"] - after_zmq == 0  # blocked in its poll meanwhile
        with Client(ClientConfig(endpoint=f"unix://{sock}", timeout=5.0)) as c:
            assert c.call("status") == {"cmd": "status"}
            time.sleep(0.3)
            assert polls["spin"] - after_zmq > 100  # still spinning (for up to 60 s)
    finally:
        srv.stop()
        loop.join(timeout=2.0)
        srv.close()
    assert not loop.is_alive()


def test_events_reach_subscribers_and_nobody_else_costs_anything(model):
    """The XPUB tracks subscriptions, also of a subscriber that vanished: with nobody listening to a topic its
    events are not built; a subscriber to it gets them, even when other subscribers come and go."""
    from musebridge.engine.server.service import Service
    from musebridge.engine.server.zmq_server import Server, ServerConfig
    from musebridge.engine.sessions.session import Engine

    srv = Server(ServerConfig(port=free_port(), pub_port=free_port()), Service(Engine.load(model)))
    ctx = zmq.Context()

    def settle(until):
        for _ in range(200):
            srv._serve_ready(10)
            if until():
                return
        raise AssertionError(f"subscriptions never settled: {srv._topics}")

    try:
        watcher, passer = ctx.socket(zmq.SUB), ctx.socket(zmq.SUB)
        for sock, topic in ((watcher, b"telemetry"), (passer, b"")):
            sock.connect(srv.endpoints[1])
            sock.setsockopt(zmq.SUBSCRIBE, topic)
        twin = ctx.socket(zmq.SUB)  # a second subscriber to the same topic, leaving first
        twin.connect(srv.endpoints[1])
        twin.setsockopt(zmq.SUBSCRIBE, b"telemetry")
        settle(lambda: srv._topics == {b"telemetry": 2, b"": 1})
        passer.close(linger=0)
        twin.close(linger=0)
        settle(lambda: srv._topics == {b"telemetry": 1})
        srv.publish("note", {"notes": []})  # nobody wants it
        srv.publish("telemetry", {"tokens": 1, "ms": 0.5})
        assert watcher.poll(2000)
        topic, body = watcher.recv_multipart()
        assert topic == b"telemetry" and json.loads(body)["seq"] == 2  # seq counts the unsent note event too
        watcher.close(linger=0)
        settle(lambda: not srv._topics)
    finally:
        srv.close()
        ctx.term()


def test_spin_or_priority_out_of_range_is_one_line():
    proc = run_cli("serve", "--spin-ms", "-1")
    assert proc.returncode == 2 and proc.stderr.strip() == "musebridge serve: --spin-ms must be 0-100, got -1"
    proc = run_cli("serve", "--live-priority", "100")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "musebridge serve: --live-priority must be 0-99, got 100"


def test_between_requests_the_service_runs_sampled_tokens_through_the_model(model):
    from musebridge.engine.server.service import Service
    from musebridge.engine.sessions.session import Engine

    service = Service(Engine.load(model))
    sid = service.handle("session.create", {"instruments": ["strings"], "seed": 2})[0]["session"]
    service.handle("generate", {"session": sid, "max_tokens": 20})
    session = service.sessions[sid].session
    assert session.pending == 1  # the reply did not wait for the last token's forward pass
    assert service.idle() and session.pending == 0
    assert not service.idle()  # nothing left to do


def test_idle_work_takes_turns_and_puts_pending_tokens_first(model):
    """A session that keeps getting requests does not keep another's sampled token waiting, and a window slide
    prepared ahead waits for any session's pending token (the next request needs that one)."""
    from musebridge.engine.server.service import Service
    from musebridge.engine.sessions.session import Engine

    service = Service(Engine.load(model))
    sids = [service.handle("session.create", {"instruments": ["strings"], "seed": i, "context": 32})[0]["session"]
            for i in range(2)]
    for sid in sids:
        service.handle("generate", {"session": sid, "max_tokens": 4})
    while service.idle():  # from now on the sessions' steps leave their slide entries to the idle work
        pass
    for sid in sids:
        service.handle("generate", {"session": sid, "max_tokens": 12})  # pending token and entries to copy
    assert service.idle()
    a, b = sorted(sids, key=lambda sid: service.sessions[sid].session.pending)  # a: the one that had the turn
    first, second = service.sessions[a].session, service.sessions[b].session
    assert first.pending == 0 and second.pending == 1
    service.handle("generate", {"session": a, "max_tokens": 1})  # `a` is busy: a new sampled token
    assert service.idle() and second.pending == 0 and first.pending == 1  # b's turn all the same
    assert service.idle() and first.pending == 0
    copied = first.cache._copied
    assert service.idle() and first.cache._copied == copied  # nothing pending: b's slide entries copied
    service.handle("generate", {"session": b, "max_tokens": 1})
    assert service.idle() and second.pending == 0 and first.cache._copied == copied  # a's turn: b's token first
    while service.idle():
        pass
    assert first.cache._copied > copied and second.pending == first.pending == 0


def test_feed_can_end_the_engines_own_notes(model):
    from musebridge.engine.server.service import Service
    from musebridge.engine.sessions.session import Engine

    service = Service(Engine.load(model))
    sid = service.handle("session.create", {"instruments": ["strings"], "player_instrument": "piano",
                                            "seed": 4})[0]["session"]
    service.handle("feed", {"session": sid, "events": [{"t": 0.5, "type": "note_on", "note": 60, "velocity": 80}]})
    notes = service.handle("generate", {"session": sid, "notes": 2, "now": True})[0]["notes"]
    voices = [n for n in notes if n["type"] == "note_on"]
    assert len(voices) == 2
    ends = [{"t": 0.9, "type": "note_off", "channel": v["channel"], "note": v["note"], "engine": True}
            for v in voices]
    service.handle("feed", {"session": sid, "events": [{"t": 0.9, "type": "note_off", "note": 60}, *ends]})
    session = service.sessions[sid].session
    assert not session._live.decoder.held and session.time == pytest.approx(0.9)
    for bad, match in (({"engine": "yes"}, "'engine' must be true or false"),
                       ({"type": "note_on", "velocity": 64}, "can only end an engine note")):
        event = {**ends[0], **bad}
        with pytest.raises(P.ProtocolError, match=match):
            service.handle("feed", {"session": sid, "events": [event]})


def test_anticipate_prepares_the_players_time_shift_between_requests(model):
    from musebridge.engine.server.service import Service
    from musebridge.engine.sessions.session import Engine

    service = Service(Engine.load(model))
    sid = service.handle("session.create", {"instruments": ["strings"], "player_instrument": "piano",
                                            "seed": 4})[0]["session"]
    result = service.handle("anticipate", {"session": sid, "t": 0.5})[0]
    session = service.sessions[sid].session
    assert result == {"session": sid, "tokens": 1, "time": 0.0} and session.pending == 1
    assert service.idle() and session.pending == 0  # run after the reply, while the server waits
    tokens = list(session.tokens)
    service.handle("feed", {"session": sid, "events": [{"t": 0.5, "type": "note_on", "note": 60, "velocity": 80}]})
    assert session.tokens[: len(tokens)] == tokens and session.pending == 0 and session.time == 0.5
    for args in ({"session": sid}, {"session": sid, "t": -1}, {"session": sid, "t": "soon"}):
        with pytest.raises(P.ProtocolError, match="anticipate: .*'t'"):
            P.check_args("anticipate", args)


def test_context_is_chosen_at_creation(model):
    from musebridge.engine.server.service import Service
    from musebridge.engine.sessions.session import Engine

    service = Service(Engine.load(model))
    sid = service.handle("session.create", {"instruments": ["strings"], "context": 48, "seed": 2})[0]["session"]
    service.handle("generate", {"session": sid, "max_tokens": 200})  # several slides within 48 tokens
    assert service.sessions[sid].session.cache.capacity == 48
    assert len(service.sessions[sid].session.tokens) <= 48
    with pytest.raises(P.ProtocolError, match="longer than this model's 128 tokens"):
        service.handle("session.create", {"context": 129})
    with pytest.raises(EngineError, match="fixed when a session is created"):
        service.handle("set", {"session": sid, "context": 64})


def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "musebridge", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_ctl_status_set_and_errors(server):
    port = ["--port", str(server.port), "--pub-port", str(server.pub_port)]
    status = run_cli("ctl", "status", *port)
    assert status.returncode == 0 and json.loads(status.stdout)["protocol"] == P.PROTOCOL_VERSION
    created = run_cli("ctl", "call", "session.create", '{"instruments": ["reed"]}', *port)
    sid = json.loads(created.stdout)["session"]
    changed = run_cli("ctl", "set", "temperature", "0.7", "--session", sid, *port)
    assert json.loads(changed.stdout)[0]["params"]["temperature"] == 0.7
    for value in ("hot", "NaN"):  # NaN is not JSON: the string reaches the server and is refused by name
        bad = run_cli("ctl", "set", "temperature", value, "--session", sid, *port)
        assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "temperature" in bad.stderr
    closed = run_cli("ctl", "call", "session.close", json.dumps({"session": sid}), *port)
    # another ctl process is another client token: the session is not its to close
    assert closed.returncode == 2 and "belongs to another client" in closed.stderr
    nobody = run_cli("ctl", "status", "--port", str(free_port()), "--timeout", "0.5")
    assert nobody.returncode == 2 and "musebridge serve" in nobody.stderr


def test_example_script_switches_style_and_saves(server, tmp_path):
    out = tmp_path / "answer.mid"
    proc = subprocess.run([sys.executable, "examples/session_script.py", "engine/data/chorale.mid", str(out),
                           "--port", str(server.port), "--instruments", "strings", "--style", "bach",
                           "--then", "folk"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from musebridge.engine.tokens.midifile import notes_from_events, read_midi

    midi = read_midi(out)
    notes = notes_from_events(midi.events, midi.end_time)
    assert {n.instrument for n in notes} >= {0}  # the player's part is there
    assert len(notes) >= 163


def test_a_server_stops_when_the_program_that_started_it_is_killed(model):
    """`musebridge play` starts its engine with --parent: a killed bridge must not leave a server behind."""
    port, pub = free_port(), free_port()
    starter = subprocess.Popen(
        [sys.executable, "-c", "import os, subprocess, sys, time\n"
         f"p = subprocess.Popen([sys.executable, '-m', 'musebridge', 'serve', '--model', {str(model)!r}, "
         f"'--port', '{port}', '--pub-port', '{pub}', '--parent', str(os.getpid())], "
         "stderr=subprocess.DEVNULL)\nprint(p.pid, flush=True)\ntime.sleep(600)"],
        stdout=subprocess.PIPE, text=True)
    try:
        server = int(starter.stdout.readline())
        with Client(ClientConfig(endpoint=f"tcp://127.0.0.1:{port}")) as c:
            assert any(c.ping(timeout=0.5) for _ in range(40)), "the server answers while its starter lives"
    finally:
        starter.kill()
        starter.wait()
    assert wait_gone(server, 15), "the server outlived the program that started it"


def wait_gone(pid: int, timeout: float) -> bool:
    """True once process `pid` has exited (gone, or on Linux a zombie nobody reaped yet)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except ProcessLookupError:
            return True
        except FileNotFoundError:  # no /proc (macOS): os.kill above is the test
            pass
        time.sleep(0.1)
    return False


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS")) / 1024


# A subscriber process flooding the events socket. It ends with os._exit: libzmq 4.3 crashes terminating a context
# whose XSUB holds a subscription the server refused (the client's bug; the server is unharmed).
FLOOD = """import os, sys, time, zmq
ctx = zmq.Context()
junk, huge = ctx.socket(zmq.XSUB), ctx.socket(zmq.XSUB)
for sock in (junk, huge):
    sock.connect(sys.argv[1])
for i in range(20_000):
    junk.send(b"\\x01zz-not-a-topic-%05d" % i)
huge.send(b"\\x01" + b"s" * (8 << 20))
time.sleep(3.0)
os._exit(0)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the server's memory from /proc")
def test_subscriptions_cannot_grow_the_servers_memory(server):
    """20,000 subscriptions to topics that do not exist and one of 8 MB: neither is kept, the server's memory
    stays where it was, and a real subscriber still gets its events."""
    ctx = zmq.Context()
    before = _rss_mb(server.proc.pid)
    try:
        watcher = ctx.socket(zmq.SUB)
        watcher.connect(server.config.events_endpoint)
        watcher.setsockopt(zmq.SUBSCRIBE, b"session")
        flood = subprocess.run([sys.executable, "-c", FLOOD, server.config.events_endpoint], timeout=60)
        assert flood.returncode == 0
        with server.client() as c:
            sid = c.call("session.create", instruments=["strings"])["session"]
            c.call("session.close", session=sid)
        assert watcher.poll(5000), "a subscriber to a real topic still gets its events"
        assert watcher.recv_multipart()[0] == b"session"
        grown = _rss_mb(server.proc.pid) - before
        assert grown < 30, f"the server grew by {grown:.0f} MB"
    finally:
        ctx.destroy(linger=0)


def abandoned_work_stops(server, client) -> None:
    """`client` gives up on a long generate (its timeout passes): the server stops generating for it, seen as
    the session's streamed note events stopping, and the session serves the next request."""
    ctx = zmq.Context()
    try:
        watcher = ctx.socket(zmq.SUB)
        watcher.connect(server.config.events_endpoint)
        watcher.setsockopt(zmq.SUBSCRIBE, b"note")
        with server.client(token=client.token) as other:  # the same client token: the session is both's
            sid = other.call("session.create", instruments=["strings"], seed=1)["session"]
            time.sleep(0.3)  # the subscription reaches the server
            with pytest.raises(ClientError, match="no reply"):
                client.call("generate", session=sid, max_tokens=100_000, timeout=0.5)
            client.close()
            time.sleep(1.0)  # the cancel (or the closed connection) reaches the server

            def notes_streamed() -> int:
                count = 0
                while watcher.poll(0):
                    count += 1
                    watcher.recv_multipart()
                return count

            assert notes_streamed() > 0, "the generate was streaming before its client gave up"
            time.sleep(1.5)
            assert notes_streamed() == 0, "nothing is generated for a client that gave up"
            assert other.call("generate", session=sid, notes=1, now=True)["notes"]
            other.call("session.close", session=sid)
    finally:
        ctx.destroy(linger=0)


def test_a_request_its_client_gave_up_on_is_cancelled(server):
    abandoned_work_stops(server, server.client())


def test_error_replies_never_echo_a_large_payload(server):
    """A refused request's reply names what was wrong in a few hundred characters, however large the offending
    value was (a client that stops reading cannot make the server hold 60 KB per error)."""
    big = "x" * 50_000
    with server.client() as c:
        sid = c.call("session.create", instruments=["strings"])["session"]
        attempts = [("feed", {"session": sid, "events": [{"t": 0, "type": "note_on", "note": 60, "junk": big}]}),
                    ("feed", {"session": sid, "events": [{"t": 0, "type": big}]}),
                    ("set", {"session": sid, "mode": big}),
                    ("generate", {"session": big[:4000], "notes": 1})]
        for cmd, args in attempts:
            with pytest.raises(ClientError) as err:
                c.call(cmd, **args)
            assert len(str(err.value)) <= P.MAX_ERROR_CHARS + 40, cmd
            assert "characters)" in str(err.value), cmd
        c.call("session.close", session=sid)


def test_requests_need_the_key_of_a_connection_file_only_the_user_can_read(model):
    """Local access control: the server's key is in a 0600 file in a 0700 folder; a request without it is
    refused (`unauthorized`) before its command is looked at; a client finds the key by itself, also after the
    server restarted with a new one; the file goes when the server stops."""
    server = Served(model)
    server.wait_ready()
    ctx = zmq.Context()
    try:
        files = [p for p in runtime_dir().glob("engine-*.json")
                 if json.loads(p.read_text())["port"] == server.port]
        assert len(files) == 1 and stat.S_IMODE(files[0].stat().st_mode) == 0o600
        assert stat.S_IMODE(runtime_dir().stat().st_mode) == 0o700
        key = find_key(server.config.endpoint)
        assert key and len(key) == 64
        stranger = ctx.socket(zmq.DEALER)
        stranger.connect(server.config.endpoint)
        for attempt in ("", "0" * 64):
            stranger.send_multipart([b"", P.encode_request(P.Request("1", "session.list", {}, attempt))])
            assert stranger.poll(5000)
            reply = P.decode_reply(stranger.recv_multipart()[-1])
            assert (reply.ok, reply.error_code) == (False, "unauthorized")
            assert "connection file" in reply.error_message
        stranger.send_multipart([b"", P.encode_request(P.Request("2", "session.list", {}, key))])
        assert stranger.poll(5000) and P.decode_reply(stranger.recv_multipart()[-1]).ok
        with server.client() as c:
            sid = c.call("session.create", instruments=["strings"])["session"]
            assert len(sid) > 10  # not "s1": another client cannot guess it
            server.stop()
            assert not files[0].exists(), "the connection file goes with its server"
            restarted = subprocess.Popen(
                [sys.executable, "-m", "musebridge", "serve", "--model", str(model), "--port", str(server.port),
                 "--pub-port", str(server.pub_port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                assert wait_until(lambda: find_key(server.config.endpoint) not in (None, key), timeout=60)
                assert c.call("status", timeout=10.0)["protocol"] == P.PROTOCOL_VERSION  # re-read the new key
            finally:
                restarted.terminate()
                restarted.wait(20)
    finally:
        ctx.destroy(linger=0)
        if server.proc.poll() is None:
            server.stop()



def test_a_session_is_its_creators_and_its_parameters_anyones(server):
    """Another client holding the server's key (another token) cannot feed, generate from, reset or close a
    session it did not create (`not_owner`, one line), but can set its parameters, as `ctl set` does; a client
    given the creator's token can use it; the creator still can after all that."""
    note = [{"t": 0.0, "type": "note_on", "note": 60, "velocity": 80}]
    with server.client() as owner, server.client() as other:
        sid = owner.call("session.create", instruments=["strings"], player_instrument="piano", seed=1)["session"]
        attempts = {"feed": {"events": note}, "generate": {"max_tokens": 4}, "anticipate": {"t": 0.5},
                    "reset": {}, "session.close": {}}
        for cmd, args in attempts.items():
            with pytest.raises(ClientError) as refused:
                other.call(cmd, session=sid, **args)
            assert refused.value.code == "not_owner" and sid in str(refused.value), cmd
            assert len(str(refused.value).splitlines()) == 1
        assert other.call("set", session=sid, temperature=0.8)["params"]["temperature"] == 0.8
        with server.client(token=owner.token) as heir:
            assert heir.call("feed", session=sid, events=note)["session"] == sid
        assert owner.call("generate", session=sid, max_tokens=4)["session"] == sid
        assert owner.call("session.close", session=sid)["session"] == sid


def test_parameters_set_with_ctl_reach_the_session_a_bridge_creates_again(server):
    """`ctl set temperature` on a bridge's session, then its session is reclaimed (the server's 3 s timeout
    here): the session the bridge creates again has the musician's temperature, not the one it started with."""
    clock = MonotonicClock()
    link = EngineLink(server.config, {"instruments": ["strings"], "temperature": 1.0, "mode": "respond"},
                      clock.now)
    bridge = Bridge(BridgeConfig(mode="respond"), MemoryBackend(MemoryMidi()), link, clock)
    watcher = EngineWatcher(server.config, lambda: link.session, bridge.engine_lost, bridge.engine_params)
    bridge.open()
    watcher.start()
    try:
        first = link.session
        time.sleep(0.3)  # the watcher's subscription reaches the server
        assert run_cli("ctl", "set", "temperature", "0.45", "--session", first, "--port", str(server.port),
                       "--pub-port", str(server.pub_port)).returncode == 0
        assert wait_until(lambda: link.params.get("temperature") == 0.45, timeout=5)
        time.sleep(4.0)  # reclaimed
        link.feed([])  # session_not_found: the link creates a session again
        assert link.session != first
        with server.client() as c:
            mine = [s for s in c.call("session.list")["sessions"] if s["session"] == link.session]
        assert mine and mine[0]["params"]["temperature"] == 0.45
    finally:
        watcher.stop()
        bridge.stop()
