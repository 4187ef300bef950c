"""The bridge with the real engine server and in-process ports (no MIDI system needed, as in `musebridge demo`):
engine link, watcher (mode switch by `set`, server stopping), session reclaim, launcher, status line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace

import mido
import pytest
from musebridge.bridge.config import BridgeConfig, ModeConfig
from musebridge.bridge.engine_link import EngineLink
from musebridge.bridge.errors import EngineLost, EngineSlow
from musebridge.bridge.launcher import EngineTarget, ensure_engine, reachable
from musebridge.bridge.live import LiveSession
from musebridge.bridge.ports import MemoryBackend, MemoryMidi
from musebridge.bridge.status import status_text
from musebridge.engine.server.client import Client

from tests.bridge_fakes import unreleased_note_ons
from tests.model_fixtures import export_small
from tests.net import free_port, wait_until

STRINGS = 5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_small(tmp_path_factory.mktemp("model"))[1]


class Server:
    def __init__(self, model, *extra, target=None):
        self.target = target or EngineTarget(port=free_port(), pub_port=free_port(), timeout=2.0)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "musebridge", "serve", "--model", str(model), "--port", str(self.target.port),
             "--pub-port", str(self.target.pub_port), *extra], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(200):
            if reachable(self.target, timeout=0.3):
                return
            assert self.proc.poll() is None, self.proc.stderr.read()
        raise AssertionError("server did not start")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(20)


@pytest.fixture()
def server(model):
    s = Server(model, "--session-timeout", "1")
    yield s
    s.stop()


class Memory:
    """A LiveSession on in-memory ports: keyboard in, what the bridge plays out (perf_counter, message)."""

    def __init__(self, target, mode, **config):
        self.midi = MemoryMidi()
        self.config = replace(BridgeConfig(mode=mode, engine={"instruments": ["strings"],
                                                               "player_instrument": "piano", "seed": 5}), **config)
        self.live = LiveSession(self.config, MemoryBackend(self.midi), target)
        self.bridge = self.live.start()
        self.heard: list[tuple[float, mido.Message]] = []
        self.midi.listen("MuseBridge Out", lambda d: self.heard.append((time.perf_counter(),
                                                                        mido.Message.from_bytes(d))))
        self.keyboard = self.midi.sender("MuseBridge In")

    def phrase(self, notes=(60, 64, 67)):
        for n in notes:
            self.keyboard.send(mido.Message("note_on", note=n, velocity=80))
            time.sleep(0.1)
            self.keyboard.send(mido.Message("note_off", note=n))
            time.sleep(0.05)

    def engine_notes(self, after=0.0):
        return [m for t, m in list(self.heard) if t >= after and m.type == "note_on" and m.velocity
                and m.channel == STRINGS]

    def wait(self, predicate, timeout=10.0) -> bool:
        return wait_until(predicate, timeout)


def test_respond_on_memory_ports_records_both_parts(server, tmp_path):
    path = tmp_path / "demo.mid"
    mem = Memory(server.target, "respond", record=str(path), modes=ModeConfig(pause_s=0.3, answer_s=1.0))
    mem.phrase()
    assert mem.wait(lambda: mem.engine_notes()), "the engine answered"
    line = status_text(mem.bridge)
    assert "respond" in line and "engine s" in line
    assert f"key {mem.bridge.link.key}" in line and mem.bridge.link.key != "-"  # the key the engine heard
    mem.live.stop()
    assert not unreleased_note_ons(m for _, m in mem.heard)
    tracks = {t.name for t in mido.MidiFile(path).tracks}
    assert {"player", "strings"} <= tracks


def test_mode_switch_through_the_control_protocol(server):
    mem = Memory(server.target, "respond")
    try:
        time.sleep(0.3)  # the watcher's subscription reaches the server
        with Client(server.target.client_config()) as c:
            c.call("set", session=mem.live.link.session, mode="accompany")
        assert mem.wait(lambda: mem.bridge.mode.name == "accompany")
        assert mem.wait(lambda: mem.engine_notes()), "accompany plays without waiting for the player"
    finally:
        mem.live.stop()
    assert not unreleased_note_ons(m for _, m in mem.heard)


def test_server_stopping_silences_at_once(server):
    mem = Memory(server.target, "accompany")
    try:
        assert mem.wait(lambda: mem.engine_notes())
        time.sleep(0.2)
        server.stop()  # SIGTERM: the server publishes "stopping"
        assert mem.wait(lambda: not mem.bridge.engine_ok, timeout=5.0)
        time.sleep(0.1)
        assert not unreleased_note_ons(m for _, m in mem.heard)
        assert "engine lost" in status_text(mem.bridge)
    finally:
        mem.live.stop()


def test_a_killed_server_silences_at_once_even_with_nothing_to_ask_it(server):
    """kill -9 publishes no "stopping": the dropped events connection is the news. A held harmonize note's voices
    are silenced with no further input (before, only the next engine request, or keepalive after 20 s, noticed)."""
    mem = Memory(server.target, "harmonize", modes=ModeConfig(voices=2))
    try:
        time.sleep(0.3)  # the watcher's connection is up
        mem.keyboard.send(mido.Message("note_on", note=60, velocity=80))  # held: its voices sound
        assert mem.wait(lambda: mem.engine_notes())
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        # nothing is asked of the engine now (anticipations are posted, their loss unseen): only the watcher
        # can notice, and it says why
        assert mem.wait(lambda: not mem.bridge.engine_ok, timeout=5.0)
        assert "connection to the engine server dropped" in mem.bridge.lost_reason
        time.sleep(0.1)
        assert not unreleased_note_ons(m for _, m in mem.heard if m.channel == STRINGS)
    finally:
        mem.live.stop()


def test_a_reclaimed_session_is_recreated(server):
    mem = Memory(server.target, "harmonize")
    try:
        first = mem.live.link.session
        time.sleep(2.5)  # the server reclaims sessions idle for 1 s
        start = time.perf_counter()
        mem.keyboard.send(mido.Message("note_on", note=60, velocity=80))
        assert mem.wait(lambda: mem.engine_notes(after=start)), "harmony after the session came back"
        assert mem.live.link.session != first and mem.bridge.engine_ok
        mem.keyboard.send(mido.Message("note_off", note=60))
    finally:
        mem.live.stop()
    assert not unreleased_note_ons(m for _, m in mem.heard)


def _live_context(target, params: dict) -> int:
    link = EngineLink(target.client_config(), {"instruments": ["strings"], **params}, time.monotonic)
    try:
        sid = link.open()
        with Client(target.client_config()) as c:
            return next(s["params"]["context"] for s in c.call("session.list")["sessions"] if s["session"] == sid)
    finally:
        link.close()


def test_a_live_session_sees_256_tokens_unless_told(server, tmp_path):
    assert _live_context(server.target, {}) == 128  # this model's whole block is shorter
    assert _live_context(server.target, {"context": 64}) == 64
    longer = Server(export_small(tmp_path, block_size=512)[1])
    try:
        assert _live_context(longer.target, {}) == 256
        assert _live_context(longer.target, {"context": 512}) == 512
    finally:
        longer.stop()


def test_launcher_starts_a_server_and_reports_a_bad_model(model, tmp_path):
    target = EngineTarget(port=free_port(), pub_port=free_port(), model=str(model))
    started = ensure_engine(target)
    try:
        assert started is not None and reachable(target)
        if hasattr(os, "sched_getscheduler") and os.sched_getscheduler(started.proc.pid) == os.SCHED_FIFO:
            # where the system grants real-time priority: above JACK's client threads (5 under a default jackd)
            assert os.sched_getparam(started.proc.pid).sched_priority > 5
        assert ensure_engine(target) is None, "a running server is reused"
        assert started.direct.startswith("unix://") and reachable(replace(target, direct=started.direct))
    finally:
        started.stop()
    assert not reachable(target) and not os.path.exists(started.folder)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EngineLost, match="the engine server exited"):
        ensure_engine(EngineTarget(port=free_port(), pub_port=free_port(), model=str(bad)))


def test_without_unix_sockets_a_started_engine_is_reached_over_direct_tcp(model, monkeypatch):
    """Where Python has no AF_UNIX (some Windows builds), `play` talks to its own engine over loopback TCP with
    the same frames (serve --direct-port), not over ZeroMQ."""
    monkeypatch.delattr(socket, "AF_UNIX")
    target = EngineTarget(port=free_port(), pub_port=free_port(), model=str(model))
    started = ensure_engine(target)
    try:
        assert started.direct.startswith("direct://127.0.0.1:") and started.folder is None
        fast = replace(target, direct=started.direct)
        assert reachable(fast)
        with Client(fast.client_config()) as c:
            assert c.call("status")["sessions"] == 0
    finally:
        started.stop()


def test_a_session_re_created_after_a_loss_hears_the_players_last_seconds(model):
    """The engine dies and comes back on the same ports: the bridge's new session is fed what the player played
    in the last seconds (re-timed from 0), so it resumes in context, and the bridge's session time follows."""
    first = Server(model)
    link = EngineLink(first.target.client_config(), {"instruments": ["strings"], "player_instrument": "piano"},
                      time.monotonic)
    link.open()
    played = [{"t": 20.0 + k, "type": "note_on", "note": 60 + k, "velocity": 80} for k in range(4)]
    link.feed([{"t": 1.0, "type": "note_on", "note": 50, "velocity": 80}, *played])  # 1.0: too old to replay
    first.proc.kill()
    first.proc.wait()
    with pytest.raises(EngineSlow):  # over ZeroMQ a dead engine first looks busy; the events watcher tells
        link.feed([])
    link.drop()
    second = Server(model, target=first.target)  # a server on the same ports
    try:
        link.open()
        assert link.opened == 2 and link.resumed_at == 3.0
        assert link.feed([])["time"] >= 3.0  # the replayed notes are on the new session's timeline
    finally:
        link.close()
        second.stop()
