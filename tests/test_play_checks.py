"""`musebridge play` checks its values and its ports before it starts an engine: a mistake costs no engine start.

Every Python process the test starts records its command line (a sitecustomize on PYTHONPATH), so the tests see
whether `play` started a `musebridge serve` child, however briefly it lived.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.jack import JACKD, JackServer
from tests.net import free_port

RECORDER = """import os, sys
with open(os.environ["MUSEBRIDGE_TEST_ARGV_LOG"], "a") as log:
    log.write(" ".join(sys.argv) + "\\n")
"""


def play(tmp_path: Path, *args: str, timeout: float = 60) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `musebridge play ARGS` (engine ports where nothing listens); its result and the command lines of
    every Python process it started."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(RECORDER)
    log = tmp_path / "argv.log"
    log.write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
           "MUSEBRIDGE_TEST_ARGV_LOG": str(log)}
    cmd = [sys.executable, "-m", "musebridge", "play", "--no-status", "--port", str(free_port()),
           "--pub-port", str(free_port()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp_path)
    started = log.read_text().splitlines()
    assert started and "play" in started[0].split(), "the recorder saw the play process itself"
    return proc, started[1:]


def one_play_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith("musebridge play:")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("args, problem", [
    (["--temperature", "0"], "argument --temperature: must be within 0.05..5, got 0"),
    (["--top-p", "1.5"], "argument --top-p: must be above 0 and at most 1, got 1.5"),
    (["--polyphony", "0"], "argument --polyphony: must be within 1..64, got 0"),
    (["--key", "H major"], "argument --key: unknown key 'H'"),
    (["--pitch-low", "90", "--pitch-high", "40"], "pitch_low 90 is above pitch_high 40; swap them"),
    (["--instruments", "piano"], "at least one instrument other than player_instrument"),
    (["--config", "CONFIG"], "[engine]: temperature must be within 0.05..5, got 0"),
    (["--style", "Swing"], "unknown style 'Swing'; choose from:"),
    (["--instruments", "Kazoo"], "unknown instrument 'Kazoo'; choose from:"),
])
def test_bad_values_exit_2_before_an_engine_starts(tmp_path, args, problem):
    (tmp_path / "live.toml").write_text("[engine]\ntemperature = 0\n")
    args = [str(tmp_path / "live.toml") if a == "CONFIG" else a for a in args]
    proc, started = play(tmp_path, *args)
    assert proc.returncode == 2 and problem in one_play_line(proc)
    assert "Traceback" not in proc.stderr and started == []


@pytest.fixture(scope="module")
def jack():
    if JACKD is None:
        pytest.skip("jackd not installed (apt install jackd2)")
    server = JackServer().start()
    yield server
    server.stop()


@pytest.mark.jack
@pytest.mark.parametrize("args, problem", [
    (["--in", "Nowhere Keys"], "no input port matching 'Nowhere Keys' (jack); available:"),
    (["--out", "Nowhere Synth"], "no output port matching 'Nowhere Synth' (jack); available:"),
])
def test_a_missing_port_exits_2_before_an_engine_starts(jack, tmp_path, args, problem):
    proc, started = play(tmp_path, "--api", "jack", *args)
    assert proc.returncode == 2 and problem in one_play_line(proc)
    assert started == []


@pytest.mark.jack
def test_with_good_values_and_ports_play_does_start_an_engine(jack, tmp_path):
    """The check above can see an engine start: here one starts (and fails on its missing model)."""
    proc, started = play(tmp_path, "--api", "jack", "--model", str(tmp_path / "missing.onnx"))
    assert proc.returncode == 1 and "the engine server exited" in one_play_line(proc)
    assert any(line.split()[:2] == ["-m", "serve"] for line in started), started
