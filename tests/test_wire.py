"""One note format on the wire (engine/server/wire.py): bridge -> wire -> engine -> wire -> bridge is the identity,
bad events are refused with one line, and the typed client (Client.connect / session / feed / generate) and the
README's scripting example work against a real server process."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

import mido
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from musebridge.bridge.engine_link import from_wire as bridge_reads
from musebridge.engine.server import protocol as P
from musebridge.engine.server.client import Client, ClientError
from musebridge.engine.server.wire import from_wire, to_wire
from musebridge.engine.tokens.codec import Timed

from tests.model_fixtures import export_small
from tests.test_server import Served

README = Path(__file__).resolve().parents[1] / "README.md"

channels, values = st.integers(0, 15), st.integers(0, 127)
messages = st.one_of(
    st.builds(lambda c, n, v: mido.Message("note_on", channel=c, note=n, velocity=v), channels, values, values),
    st.builds(lambda c, n, v: mido.Message("note_off", channel=c, note=n, velocity=v), channels, values, values),
    st.builds(lambda c, k, v: mido.Message("control_change", channel=c, control=k, value=v), channels, values,
              values),
    st.builds(lambda c, p: mido.Message("program_change", channel=c, program=p), channels, values),
)
times = st.floats(0, 1e6, allow_nan=False).map(lambda t: round(t, 6))


def fed(event: dict) -> dict:
    """The event as the server reads it from a `feed` request's frame."""
    frame = P.encode_request(P.Request("1", "feed", {"session": "s", "events": [event]}))
    return P.parse_request([frame]).args["events"][0]


def played(event: dict) -> dict:
    """The event as the client reads it from a `generate` reply's frame."""
    return P.decode_reply(P.encode_reply(P.Reply("1", True, {"notes": [event]}))).result["notes"][0]


@settings(max_examples=300, deadline=None)
@given(times, messages, st.booleans())
def test_bridge_to_engine_to_bridge_is_the_identity(t, msg, engine):
    sent = fed(to_wire(t, msg, engine))  # the bridge feeds (bridge/context.py writes with to_wire)
    item, flag = from_wire(sent)  # the engine reads it
    assert flag == engine and item.time == pytest.approx(t, abs=1e-6) and item.msg == msg
    back = played(to_wire(*item))  # the engine plays it back
    assert bridge_reads(back) == (pytest.approx(t, abs=1e-6), msg)


@pytest.mark.parametrize("event, problem", [
    ({"type": "note_on", "note": 60}, "'t' must be seconds"),
    ({"t": -1, "type": "note_on", "note": 60}, "'t' must be seconds"),
    ({"t": True, "type": "note_on", "note": 60}, "'t' must be seconds"),
    ({"t": 0, "type": "sysex", "data": [1]}, "'type' must be one of"),
    ({"t": 0, "type": "note_on", "note": 128}, "note"),
    ({"t": 0, "type": "note_on", "pitch": 60}, "pitch"),
    ({"t": 0, "type": "note_off", "note": 60, "engine": "yes"}, "'engine' must be true or false"),
    ([0, "note_on"], "must be an object"),
])
def test_bad_events_are_refused_in_one_line_naming_the_problem(event, problem):
    with pytest.raises(P.ProtocolError) as info:
        from_wire(event)
    assert info.value.code == "bad_argument" and problem in str(info.value) and "\n" not in str(info.value)
    assert bridge_reads(event) is None  # the bridge skips what it cannot play


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Served(export_small(tmp_path_factory.mktemp("model"))[1])
    s.wait_ready()
    yield s
    s.stop()


def test_typed_session_takes_and_gives_mido_messages(server):
    with Client.connect(server.config.endpoint, timeout=10.0) as c:
        with c.session(style="bach", instruments=["strings"], player_instrument="piano", seed=2) as s:
            phrase = [mido.MetaMessage("track_name", name="player", time=0.0),
                      mido.Message("note_on", note=60, velocity=80, time=0.25),
                      mido.Message("note_off", note=60, time=0.5)]
            assert s.feed(phrase) == 2 and s.time == pytest.approx(0.75)
            answer = list(s.generate(seconds=2.0))
            assert answer and all(isinstance(m, mido.Message) and m.time >= 0 for m in answer)
            assert sum(m.time for m in answer) <= 2.0 + 1e-6  # each delay since the previous, from the cursor
            assert {m.channel for m in answer if m.type == "note_on"} == {5}  # strings, not the player's piano
            assert s.time == pytest.approx(2.75)
            assert s.set(temperature=0.8)["temperature"] == 0.8
            sid = s.id
        assert sid not in [x["session"] for x in c.call("session.list")["sessions"]]  # closed on leaving


def test_connect_to_nothing_is_one_clear_line():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ClientError, match=f"no engine answers at tcp://127.0.0.1:{port} after 0.5 s; start one"):
        Client.connect(f"tcp://127.0.0.1:{port}", timeout=0.5)


def test_readme_scripting_example_runs_as_written(tmp_path):
    text = README.read_text()
    code = re.search(r"## Script it\n.*?```python\n(.*?)```", text, re.S).group(1)
    assert "Client.connect()" in code and ".session(" in code  # the typed client, on the default ports
    for port in (5555, 5556):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                pytest.skip(f"port {port} is taken on this machine; the example needs the default ports")
    model = export_small(tmp_path)[1]
    served = subprocess.Popen([sys.executable, "-m", "musebridge", "serve", "--model", str(model)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                             cwd=tmp_path)
        assert run.returncode == 0, run.stderr
        assert "note_on" in run.stdout  # it printed the engine's answer
    finally:
        served.terminate()
        served.wait(timeout=20)


def test_timed_is_the_note_type_on_both_sides():
    item, _ = from_wire({"t": 1.5, "type": "note_on", "note": 64, "velocity": 70})
    assert isinstance(item, Timed) and item == Timed(1.5, mido.Message("note_on", note=64, velocity=70))
