"""The direct transport (engine/server/local.py): frames over a Unix socket (`musebridge serve --local`) or
loopback TCP (`--direct-port`), answered like ZeroMQ requests; bad bytes, stale socket files, unsafe folders,
clients that stop reading, and the direct port's refusals."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from musebridge.engine.errors import EngineError
from musebridge.engine.server import protocol as P
from musebridge.engine.server.client import Client, ClientConfig, ClientError
from musebridge.engine.server.local import HEADER, MAX_CONNECTIONS, FrameReader, LocalListener, frame

from tests.model_fixtures import export_small
from tests.net import free_port, wait_until
from tests.test_server import Served, abandoned_work_stops, run_cli


@given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(1, 50), min_size=1, max_size=20))
@settings(max_examples=200, deadline=None)
def test_frames_survive_any_chunking(payloads, cuts):
    stream = b"".join(frame(p) for p in payloads)
    reader, got, i, k = FrameReader(), [], 0, 0
    while i < len(stream):
        step = cuts[k % len(cuts)]
        got += reader.feed(stream[i : i + step])
        i, k = i + step, k + 1
    assert got == payloads


def test_an_oversized_frame_is_refused_before_it_is_read():
    with pytest.raises(P.ProtocolError) as info:
        FrameReader().feed(HEADER.pack(P.MAX_MESSAGE_BYTES + 1))
    assert info.value.code == "too_large"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_small(tmp_path_factory.mktemp("model"))[1]


@pytest.fixture()
def local_server(model, tmp_path):
    path = tmp_path / "engine.sock"
    s = Served(model, "--local", str(path))
    s.wait_ready()
    yield s, path
    s.stop()


def unix_client(path, timeout=5.0) -> Client:
    return Client(ClientConfig(endpoint=f"unix://{path}", timeout=timeout))


@pytest.fixture(params=["unix", "direct"])
def stream_server(model, tmp_path, request):
    """A server that also answers on its Unix socket (--local) or on loopback TCP (--direct-port):
    (server, endpoint, connect() -> a raw socket connected there)."""
    if request.param == "unix":
        path = tmp_path / "engine.sock"
        server, endpoint = Served(model, "--local", str(path)), f"unix://{path}"

        def connect():
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.connect(str(path))
            return raw
    else:
        port = free_port()
        server, endpoint = Served(model, "--direct-port", str(port)), f"direct://127.0.0.1:{port}"

        def connect():
            return socket.create_connection(("127.0.0.1", port))
    server.wait_ready()
    yield server, endpoint, connect
    server.stop()


def direct_client(endpoint, timeout=5.0) -> Client:
    return Client(ClientConfig(endpoint=endpoint, timeout=timeout))


def test_the_local_socket_is_its_owners_alone(local_server):
    _, path = local_server
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_direct_transports_answer_like_zeromq(stream_server):
    server, endpoint, _ = stream_server
    with direct_client(endpoint) as c, server.client() as z:
        sid = c.call("session.create", instruments=["strings"], player_instrument="piano", seed=4)["session"]
        c.post("feed", session=sid, events=[{"t": 0.0, "type": "note_on", "note": 60, "velocity": 80}])
        out = c.call("generate", session=sid, notes=2, now=True)
        assert [n["t"] for n in out["notes"] if n["type"] == "note_on"] == [0.0, 0.0]
        assert sid in [s["session"] for s in z.call("session.list")["sessions"]]  # one server, two paths
        with pytest.raises(ClientError) as info:
            c.call("generate", session="nope", notes=1)
        assert info.value.code == "session_not_found"


def test_posts_leave_no_backlog_of_replies_on_any_transport(stream_server):
    """A bridge posts `anticipate` every 10 ms and calls rarely: each post first drops the replies that have
    arrived, so the next call does not read through hundreds of them."""
    server, endpoint, _ = stream_server
    with direct_client(endpoint) as c, server.client() as z:
        for client in (c, z):
            sid = client.call("session.create", instruments=["strings"], player_instrument="piano")["session"]
            for i in range(50):
                client.post("anticipate", session=sid, t=0.01 * (i + 1))
                time.sleep(0.003)  # the reply arrives meanwhile
            time.sleep(0.05)
            left = 0
            while client._recv(0) is not None:  # what a call would have had to read first
                left += 1
            assert left <= 5, f"{left} replies waiting: posts left a backlog"  # 50 without the drain
            assert client.call("session.list")["sessions"]


def test_ctl_reaches_a_server_on_its_direct_transport_or_ipc_folder(stream_server, model, tmp_path):
    _, endpoint, _ = stream_server
    where = (["--local", endpoint[len("unix://"):]] if endpoint.startswith("unix://")
             else ["--direct-port", endpoint.rsplit(":", 1)[1]])
    status = run_cli("ctl", "status", *where, "--port", str(free_port()))  # no ZeroMQ server there
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["sessions"] == 0
    folder = tmp_path / "ipc"
    folder.mkdir()
    ipc = Served(model, "--ipc", str(folder))
    try:
        with Client(ClientConfig(endpoint=f"ipc://{folder}/musebridge-rep", timeout=0.5)) as c:
            for _ in range(120):
                if c.ping(timeout=0.5):
                    break
        listed = run_cli("ctl", "sessions", "--ipc", str(folder))
        assert listed.returncode == 0 and json.loads(listed.stdout) == {"sessions": []}
    finally:
        ipc.stop()


def test_garbage_on_the_socket_never_stops_the_server(stream_server):
    server, endpoint, connect = stream_server
    for junk in (b"\x00\x00\x00", b"garbage that is no frame", frame(b"{not json"), HEADER.pack(2**31) + b"x",
                 frame(b'{"v": 1, "id": "1", "cmd": "status", "args": {}}') * 3):
        with connect() as raw:
            raw.sendall(junk)
            raw.settimeout(0.5)
            try:
                raw.recv(65536)
            except TimeoutError:
                pass
    with direct_client(endpoint) as c:
        assert c.call("status")["protocol"] == P.PROTOCOL_VERSION


def test_a_direct_client_that_stops_reading_stalls_nobody(stream_server):
    server, endpoint, connect = stream_server
    with connect() as lazy:
        request = frame(P.encode_request(P.Request("x", "session.list", {})))
        lazy.sendall(request * 2000)  # thousands of replies nobody reads
        t0 = time.monotonic()
        with direct_client(endpoint) as c, server.client() as z:
            assert c.ping(timeout=5.0) and z.ping(timeout=5.0)
        assert time.monotonic() - t0 < 10.0


def test_stale_socket_files_are_replaced_and_live_ones_refused(tmp_path):
    path = tmp_path / "e.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays, nobody listens: what a killed server leaves
    first = LocalListener(str(path))
    try:
        with pytest.raises(EngineError, match="another server is listening"):
            LocalListener(str(path))
    finally:
        first.close()
    assert not path.exists()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(EngineError, match="not a socket"):
        LocalListener(str(tmp_path / "plain"))


def test_a_folder_others_can_write_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(EngineError, match="writable by others"):
        LocalListener(str(shared / "e.sock"))


def test_no_server_at_a_local_path_is_one_clear_error(tmp_path):
    with unix_client(tmp_path / "none.sock", timeout=0.5) as c:
        assert not c.ping(timeout=0.5)
        with pytest.raises(ClientError, match="musebridge serve"):
            c.call("status")


def test_the_direct_port_refuses_what_it_cannot_protect(model, tmp_path):
    """No authentication on the direct port: never with CURVE keys; loopback only; a taken port and a malformed
    endpoint are one-line errors."""
    keys = tmp_path / "keys"
    assert run_cli("keys", str(keys)).returncode == 0
    refused = run_cli("serve", "--model", str(model), "--keys", str(keys), "--port", str(free_port()),
                      "--pub-port", str(free_port()), "--direct-port", str(free_port()))
    assert refused.returncode == 2 and "--direct-port has no authentication" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    listener = LocalListener(port=free_port())
    try:
        (host, port), = [s.getsockname() for s in listener.listeners]
        assert host == "127.0.0.1"
        with pytest.raises(EngineError, match="choose another --direct-port"):
            LocalListener(port=port)
    finally:
        listener.close()
    with pytest.raises(ClientError, match="direct://HOST:PORT"):
        ClientConfig(endpoint="direct://127.0.0.1")
    with direct_client(f"direct://127.0.0.1:{free_port()}", timeout=0.5) as c:
        with pytest.raises(ClientError, match="serve --direct-port PORT"):
            c.call("status")


def _raw_reply(sock: socket.socket) -> P.Reply | None:
    """The one reply frame a refused connection gets before it is closed (None: closed without one)."""
    sock.settimeout(5.0)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    frames = FrameReader().feed(data) if data else []
    return P.decode_reply(frames[0]) if frames else None


def test_connections_above_the_cap_are_refused_and_the_rest_served(model):
    port = free_port()
    server = Served(model, "--direct-port", str(port))
    server.wait_ready()
    socks = []
    try:
        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(MAX_CONNECTIONS + 8)]
        with direct_client(f"direct://127.0.0.1:{port}") as probe:  # one more, above the cap as well
            with pytest.raises(ClientError):
                probe.call("status", timeout=5.0)
        refused = [_raw_reply(s) for s in socks[MAX_CONNECTIONS:]]
        assert all(r is not None and r.error_code == "overloaded" for r in refused), refused
        for s in socks[:4]:
            s.close()
        with direct_client(f"direct://127.0.0.1:{port}") as c:
            assert wait_until(lambda: _status_ok(c), timeout=10.0), "a freed place is given to the next client"
    finally:
        for s in socks:
            s.close()
        code, _, err = server.stop()
    assert code == 0 and "Traceback" not in err


def _status_ok(client) -> bool:
    try:
        return "sessions" in client.call("status", timeout=1.0)
    except ClientError:
        return False


def test_running_out_of_file_descriptors_does_not_end_the_server(model):
    port = free_port()
    soft = 48  # the server needs about 20 descriptors; the rest run out well below MAX_CONNECTIONS
    cmd = [sys.executable, "-m", "musebridge", "serve", "--model", str(model), "--port", str(free_port()),
           "--pub-port", str(free_port()), "--direct-port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, soft)))
    socks = []
    try:
        with direct_client(f"direct://127.0.0.1:{port}", timeout=1.0) as c:
            assert wait_until(lambda: _status_ok(c), timeout=60.0), proc.stderr.read() if proc.poll() else ""
        failed = 0
        while len(socks) < soft + 20 and failed < 3:  # once it rests, the listen backlog fills: connect fails
            try:
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=0.5))
            except OSError:
                failed += 1
        time.sleep(1.0)
        assert proc.poll() is None, proc.communicate()[1]
        for s in socks:
            s.close()
        socks = []
        with direct_client(f"direct://127.0.0.1:{port}") as c:
            assert wait_until(lambda: _status_ok(c), timeout=10.0), "serving again once descriptors are free"
    finally:
        for s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert "Traceback" not in err and "cannot accept a connection" in err


def test_a_direct_clients_requests_end_when_it_hangs_up(model):
    port = free_port()
    server = Served(model, "--direct-port", str(port))
    server.wait_ready()
    try:
        abandoned_work_stops(server, direct_client(f"direct://127.0.0.1:{port}"))
    finally:
        server.stop()
