"""Who can reach a real `musebridge serve` and what it costs: named CURVE client keys, private --ipc sockets,
and bounded memory for replies that clients never read."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import zmq
from musebridge.engine.server.client import Client, ClientConfig

from musebridge.commands.keys import make_keys
from tests.model_fixtures import export_small
from tests.test_server import Served

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from unread_replies import measure  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_small(tmp_path_factory.mktemp("model"))[1]


def ctl(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "musebridge", "ctl", *args], capture_output=True, text=True,
                          timeout=60)


def test_ctl_uses_a_client_key_made_with_keys_client(model, tmp_path):
    keys = tmp_path / "keys"
    make_keys(keys)
    make_keys(keys, "alice")
    (keys / "client.key_secret").unlink()  # only alice's pair is left on this "client machine"
    s = Served(model, "--keys", str(keys), host="0.0.0.0")
    try:
        with s.client(keys=str(keys), client="alice", timeout=0.5) as c:
            assert any(c.ping(timeout=0.5) for _ in range(120)), s.proc.stderr
        run = ctl("status", "--port", str(s.port), "--keys", str(keys), "--client", "alice")
        assert run.returncode == 0, run.stderr
        assert "protocol" in json.loads(run.stdout)
        missing = ctl("status", "--port", str(s.port), "--keys", str(keys), "--client", "bob", "--timeout", "1")
        assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1
        assert "--client bob" in missing.stderr
        bad = ctl("status", "--port", str(s.port), "--keys", str(keys), "--client", "../x")
        assert bad.returncode == 2 and "letters, digits" in bad.stderr
    finally:
        s.stop()


def _serve_ipc(model, folder: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "musebridge", "serve", "--model", str(model), "--ipc",
                             str(folder)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("exists", [True, False])
def test_ipc_sockets_are_the_owners_alone(model, tmp_path, exists):
    folder = tmp_path / "ipc"
    if exists:
        folder.mkdir(mode=0o755)
        folder.chmod(0o755)
    old = os.umask(0o022)
    try:
        proc = _serve_ipc(model, folder)
    finally:
        os.umask(old)
    try:
        config = ClientConfig(endpoint=f"ipc://{folder}/musebridge-rep",
                              events_endpoint=f"ipc://{folder}/musebridge-pub", timeout=0.5)
        with Client(config, zmq.Context()) as c:
            assert any(c.ping(timeout=0.5) for _ in range(120)), proc.stderr
        for name in ("musebridge-rep", "musebridge-pub"):
            st = os.stat(folder / name)
            assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert stat.S_IMODE(os.stat(folder).st_mode) == (0o755 if exists else 0o700)
    finally:
        proc.terminate()
        proc.communicate(timeout=20)


def test_ipc_in_a_folder_others_can_write_is_refused_in_one_line(model, tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o777)
    proc = _serve_ipc(model, folder)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and len(err.strip().splitlines()) == 1
    assert "writable by others" in err and str(folder) in err


def test_ten_clients_that_never_read_cannot_grow_the_servers_memory(model):
    """10 clients post 3,000 `session.list` (3.3 KB of reply each, over 16 sessions) and 2 `generate`s with
    `notes`, never reading: with the per-client queue of 1,000 the server grew by 42 MB; now at most REPLY_HWM
    replies wait per client."""
    result = measure(str(model), clients=10, requests=3000, generates=2, reply_hwm=None)
    assert result["growth_mb"] < 25, result
