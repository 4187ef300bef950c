"""The bridge on real MIDI ports: a private JACK server (dummy driver), the real engine server, and another JACK
client playing into the bridge and listening to it. Skipped when jackd is not installed.

No wall-clock thresholds: these tests check that answers arrive, ordering, tempo within a tolerance derived from
the clock source, and that no note is left hanging."""

from __future__ import annotations

import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace

import mido
import pytest
from musebridge.bridge.clock import MonotonicClock
from musebridge.bridge.config import BridgeConfig, ModeConfig
from musebridge.bridge.core import Bridge
from musebridge.bridge.engine_link import EngineLink, EngineWatcher
from musebridge.bridge.midiclock import ClockConfig
from musebridge.bridge.rtmidi_ports import RtmidiBackend
from musebridge.engine.server.client import Client, ClientConfig

from tests.bridge_fakes import unreleased_note_ons
from tests.jack import JACKD, JackPeer, JackServer, wait_gone
from tests.model_fixtures import export_small
from tests.net import free_port, wait_until

pytestmark = [pytest.mark.jack,
              pytest.mark.skipif(JACKD is None, reason="jackd not installed (apt install jackd2)")]

STRINGS = 5


class Engine:
    """A `musebridge serve` subprocess on free loopback ports."""

    def __init__(self, model):
        self.port, self.pub_port = free_port(), free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "musebridge", "serve", "--model", str(model), "--port", str(self.port),
             "--pub-port", str(self.pub_port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.config = ClientConfig(endpoint=f"tcp://127.0.0.1:{self.port}",
                                   events_endpoint=f"tcp://127.0.0.1:{self.pub_port}", timeout=1.0)
        with Client(self.config) as c:
            for _ in range(200):
                if c.ping(timeout=0.3):
                    return
                assert self.proc.poll() is None, self.proc.stderr.read()
        raise AssertionError("engine did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def jack():
    server = JackServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_small(tmp_path_factory.mktemp("model"))[1]


@pytest.fixture()
def engine(model):
    e = Engine(model)
    yield e
    e.stop()


class Live:
    """An in-process Bridge on JACK ports with its engine watcher, and a peer wired to it."""

    def __init__(self, engine: Engine, mode: str, **config):
        tag = uuid.uuid4().hex[:6]
        self.config = replace(BridgeConfig(mode=mode, api="jack", in_name=f"MB In {tag}",
                                           out_name=f"MB Out {tag}"), **config)
        clock = MonotonicClock()
        params = {"instruments": ["strings"], "player_instrument": "piano", "seed": 1, "mode": mode}
        self.link = EngineLink(engine.config, params, clock.now)
        self.bridge = Bridge(self.config, RtmidiBackend("jack"), self.link, clock)
        self.bridge.open()
        self.watcher = EngineWatcher(engine.config, lambda: self.link.session, self.bridge.engine_lost,
                                     self.bridge.engine_params)
        self.watcher.start()
        self.bridge.start()
        self.peer = JackPeer(self.config.in_name, self.config.out_name, client=f"peer {tag}", callback=False)

    def play(self, notes, length=0.15, gap=0.05, channel=0):
        for n in notes:
            self.peer.send(mido.Message("note_on", channel=channel, note=n, velocity=90))
            time.sleep(length)
            self.peer.send(mido.Message("note_off", channel=channel, note=n))
            time.sleep(gap)

    def wait_for(self, predicate, timeout=10.0) -> bool:
        return wait_until(predicate, timeout)

    def close(self) -> None:
        self.watcher.stop()
        self.bridge.stop()
        time.sleep(0.1)  # let the final note-offs cross JACK
        self.peer.close()


@pytest.fixture()
def live(jack, engine):
    made = []

    def make(mode, **config):
        made.append(Live(engine, mode, **config))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_input_port_loses_nothing_while_python_threads_are_busy(jack):
    """On JACK the input port is polled (bridge/rtmidi_ports.py): a callback would need the GIL on JACK's
    process thread and lose whole cycles of messages while another Python thread holds it."""
    got: list[list[int]] = []
    backend = RtmidiBackend("jack")
    port = backend.open_input(None, got.append, virtual_name=f"burst in {uuid.uuid4().hex[:6]}")
    peer = JackPeer(port.name, None, client="burst peer")
    stop = threading.Event()

    def busy():  # pure-Python work: holds the GIL for its whole switch interval
        while not stop.is_set():
            sum(range(20000))

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    try:
        sent = []
        for burst in range(200):
            for k in range(10):
                for msg in (mido.Message("note_on", note=40 + k, velocity=1 + burst % 127),
                            mido.Message("note_off", note=40 + k)):
                    peer.send(msg)
                    sent.append(msg.bytes())
            time.sleep(0.005)
        wait_until(lambda: len(got) >= len(sent), 10.0)
        missing = sum((Counter(map(tuple, sent)) - Counter(map(tuple, got))).values())
        # through a callback 96-233 of the 4,000 were lost; a starved VM can make JACK itself drop or repeat
        # events in transit when a cycle is missed, which is not the port's doing (rtmidi's queue holds 65,536):
        # 19 once in a clean-clone CI run, so the allowance is 1%, still well below what a callback loses
        assert missing <= 40, f"{missing} of {len(sent)} messages lost"
    finally:
        stop.set()
        peer.close()
        port.close()


def test_respond_answers_a_phrase_through_jack(live):
    rig = live("respond", modes=ModeConfig(pause_s=0.3, answer_s=1.0))
    rig.play([60, 64, 67])
    end = time.perf_counter()
    assert rig.wait_for(lambda: rig.peer.note_ons(STRINGS)), "no answer on the out port"
    assert all(t > end for t, _ in rig.peer.note_ons(STRINGS)), "the answer comes after the phrase"
    assert rig.wait_for(lambda: rig.bridge.mode.state == "listening" and not rig.bridge.scheduler.held.sounding)
    assert rig.wait_for(lambda: not unreleased_note_ons(rig.peer.messages()), timeout=2.0)


def test_harmonize_voices_each_note_through_jack(live):
    rig = live("harmonize", modes=ModeConfig(voices=2))
    for note in (60, 62, 64):
        before = time.perf_counter()
        rig.peer.send(mido.Message("note_on", note=note, velocity=90))
        assert rig.wait_for(lambda b=before: rig.peer.note_ons(STRINGS, after=b)), f"no voices for {note}"
        time.sleep(0.1)
        rig.peer.send(mido.Message("note_off", note=note))
        time.sleep(0.05)
    assert rig.wait_for(lambda: not unreleased_note_ons(rig.peer.messages()), timeout=2.0)
    assert len(rig.bridge.latencies) == 3, "one measured latency per harmonized note"


def test_accompany_plays_along_through_jack(live):
    rig = live("accompany", modes=ModeConfig(horizon_s=0.3, chunk_s=0.2))
    start = time.perf_counter()
    rig.play([60, 62, 64, 65, 67], length=0.2)
    assert rig.peer.note_ons(STRINGS, after=start), "the engine played while the player played"
    rig.watcher.stop()
    rig.bridge.stop()
    time.sleep(0.1)
    assert not unreleased_note_ons(rig.peer.messages())


def test_generate_follows_an_external_midi_clock(live):
    bpm = 150.0
    rig = live("generate", clock=ClockConfig(quantize="1/16"), modes=ModeConfig(horizon_s=0.3, chunk_s=0.2))
    spt = 60 / bpm / 24
    rig.peer.send(mido.Message("start"))
    t0 = time.perf_counter() + spt
    for i in range(int(6.0 / spt)):  # six seconds of clock, each tick sent at its own time
        while time.perf_counter() < t0 + i * spt:
            time.sleep(0.0005)
        rig.peer.send(mido.Message("clock"))
    rig.peer.send(mido.Message("stop"))
    time.sleep(0.2)
    assert rig.bridge.follower.bpm == pytest.approx(bpm, rel=0.03)
    grid = 60 / bpm / 4
    onsets = [t for t, _ in rig.peer.note_ons(STRINGS, after=t0 + 1.0) if t < t0 + 6.0]
    assert len(onsets) >= 3, "generate played in time with the clock"
    errors = sorted(abs((t - t0) - grid * round((t - t0) / grid)) for t in onsets)
    assert errors[len(errors) // 2] < grid / 4, f"onsets off the source's 1/16 grid: {errors}"
    assert not unreleased_note_ons(rig.peer.messages()), "transport stop silenced everything"


def test_no_stuck_notes_after_random_input_and_kill_9_of_the_engine(live, engine):
    rig = live("accompany", thru=True)
    rng = random.Random(3)
    held: set[int] = set()
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        note = rng.randrange(48, 72)
        if note in held and rng.random() < 0.7:
            rig.peer.send(mido.Message("note_off", note=note))
            held.discard(note)
        else:
            rig.peer.send(mido.Message("note_on", note=note, velocity=rng.randrange(1, 128)))
            held.add(note)
        time.sleep(rng.uniform(0.0, 0.06))
    assert rig.peer.note_ons(STRINGS), "the engine was playing"
    os.kill(engine.proc.pid, signal.SIGKILL)
    engine.proc.wait()
    assert rig.wait_for(lambda: not rig.bridge.engine_ok, timeout=10.0), "engine loss noticed"
    # engine_ok goes false before the silencing is sent; its note-offs then cross JACK a period or more later
    released = rig.wait_for(lambda: not unreleased_note_ons(rig.peer.messages()), timeout=5.0)
    assert released, f"every note-on has its note-off: {unreleased_note_ons(rig.peer.messages())} hang"


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float) -> bool:
    """Read the process's stdout until a line containing `text` (True) or the timeout/EOF (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                return False
            if text in line:
                return True
    return False


def end_play(proc: subprocess.Popen, peer) -> None:
    """After a test, whatever happened: play killed if still running, the JACK peer closed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    if peer is not None:
        peer.close()


def start_play(model, port: int, pub: int, *extra: str) -> subprocess.Popen:
    """`musebridge play` in harmonize mode on JACK, starting its own engine on these ports; strings answer."""
    cmd = [sys.executable, "-m", "musebridge", "play", "--api", "jack", "--mode", "harmonize", "--model",
           str(model), "--port", str(port), "--pub-port", str(pub), "--no-status", "--instruments", "strings",
           "--seed", "2", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_play_command_spawns_the_engine_records_and_silences_on_a_signal(jack, model, tmp_path, sig):
    port, pub = free_port(), free_port()
    record = tmp_path / "take.mid"
    wait_gone("MuseBridge")  # the previous play's ports
    proc = start_play(model, port, pub, "--record", str(record))
    peer = None
    try:
        assert wait_for_line(proc, "Ctrl-C to stop", timeout=90.0), "play reports it is ready"
        peer = JackPeer("MuseBridge In", "MuseBridge Out", client="cli peer", wait_s=60.0, callback=False)
        time.sleep(0.5)
        # hold notes until voices sound (on a loaded machine the first voices may come too late to be played)
        for note in range(60, 84):
            peer.send(mido.Message("note_on", note=note, velocity=80))
            time.sleep(0.3)
            if note >= 67 and peer.note_ons(STRINGS):
                break
        # the signal comes while the player still holds notes and the voices sound
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
        time.sleep(0.1)
        assert proc.returncode == 0, err
        assert peer.note_ons(STRINGS), (err, peer.messages())
        assert not unreleased_note_ons(peer.messages()), "the signal silenced everything"
    finally:
        end_play(proc, peer)
    mid = mido.MidiFile(record)
    assert {"player", "strings"} <= {t.name for t in mid.tracks}
    with Client(ClientConfig(endpoint=f"tcp://127.0.0.1:{port}", timeout=0.3)) as c:
        assert not c.ping(timeout=0.3), "the engine started by play was stopped with it"


def test_a_take_survives_a_kill_of_play_and_is_recovered_at_the_next_start(jack, model, tmp_path):
    from musebridge.bridge.journal import recover_takes

    port, pub = free_port(), free_port()
    record = tmp_path / "take.mid"
    wait_gone("MuseBridge")
    proc = start_play(model, port, pub, "--record", str(record))
    peer = None
    try:
        assert wait_for_line(proc, "Ctrl-C to stop", timeout=90.0), "play reports it is ready"
        peer = JackPeer("MuseBridge In", "MuseBridge Out", client="kill peer", wait_s=60.0, callback=False)
        played = list(range(60, 72))
        for note in played:
            peer.send(mido.Message("note_on", note=note, velocity=80))
            time.sleep(0.1)
            peer.send(mido.Message("note_off", note=note))
        time.sleep(2.5)  # the journal is flushed once a second
        proc.kill()
        proc.wait(timeout=10)
    finally:
        end_play(proc, peer)
    assert not record.exists(), "killed: the take itself was never written"
    recovered = recover_takes(record)
    assert len(recovered) == 1
    mid = mido.MidiFile(recovered[0])
    player = [m.note for m in mido.merge_tracks(mid.tracks) if m.type == "note_on" and m.velocity
              and m.channel == 0]
    assert player == played, "every note played a second before the kill is in the recovered take"
    assert not unreleased_note_ons(list(mido.merge_tracks(mid.tracks)))
    with Client(ClientConfig(endpoint=f"tcp://127.0.0.1:{port}", timeout=0.3)) as c:
        assert wait_until(lambda: not c.ping(timeout=0.3), timeout=15.0), "the engine follows its parent"


def _children(pid: int, word: str) -> list[int]:
    """Processes whose parent is `pid` and whose command line has `word`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and word in cmdline:
            found.append(int(entry))
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds the engine process in /proc")
def test_play_restarts_the_engine_it_started_after_a_kill_and_harmony_returns(jack, model, tmp_path):
    port, pub = free_port(), free_port()
    wait_gone("MuseBridge")
    proc = start_play(model, port, pub)
    peer = None

    def voices_answer(first_note: int) -> bool:
        """Play notes until strings answer one (up to 40 tries); every note is released."""
        before = len(peer.note_ons(STRINGS))
        for note in range(first_note, first_note + 40):
            peer.send(mido.Message("note_on", note=note % 24 + 60, velocity=80))
            time.sleep(0.4)
            peer.send(mido.Message("note_off", note=note % 24 + 60))
            if len(peer.note_ons(STRINGS)) > before:
                return True
        return False

    try:
        assert wait_for_line(proc, "Ctrl-C to stop", timeout=90.0), "play reports it is ready"
        peer = JackPeer("MuseBridge In", "MuseBridge Out", client="restart peer", wait_s=60.0, callback=False)
        assert voices_answer(0), "harmony before the engine is killed"
        engines = _children(proc.pid, "serve")
        assert len(engines) == 1
        os.kill(engines[0], signal.SIGKILL)
        assert voices_answer(100), "harmony returns once play has restarted its engine"
        restarted = _children(proc.pid, "serve")
        assert restarted and restarted != engines
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        time.sleep(0.1)
        assert proc.returncode == 0, err
        assert "starting it again" in err and "engine back after" in err
        assert not unreleased_note_ons(peer.messages()), "no note hangs across the engine's death"
    finally:
        end_play(proc, peer)


def test_status_shows_the_key_heard_and_ctl_fixes_it_and_turns_following_off_and_on(live, engine):
    from musebridge.bridge.status import status_text

    rig = live("harmonize", modes=ModeConfig(voices=1))
    ctl = [sys.executable, "-m", "musebridge", "ctl", "--port", str(engine.port),
           "--pub-port", str(engine.pub_port)]

    def set_(*words):
        done = subprocess.run([*ctl, "set", *words], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr

    def key_after(notes) -> str:
        rig.play(notes, length=0.08, gap=0.02)
        assert rig.wait_for(lambda: len(rig.bridge.latencies) >= len(notes)), "every note harmonized"
        rig.bridge.latencies.clear()
        return status_text(rig.bridge).split(" | ")[2]

    e_minor = [64, 66, 67, 71, 69, 67, 66, 64, 59, 64, 67, 71, 72, 71, 69, 66, 63, 64]
    assert key_after(e_minor) == "key E minor"
    set_("follow_key", "Bb major")  # the musician fixes the key
    assert key_after([64, 67, 71]) == "key Bb major"
    set_("follow", "false")
    assert key_after([64, 67, 71]) == "key -"  # not following: no key is imposed
    set_("follow", "true")
    set_("follow_key", "auto")
    assert key_after(e_minor) == "key E minor"
    assert rig.wait_for(lambda: not unreleased_note_ons(rig.peer.messages()), timeout=2.0)


def test_a_slow_engine_skips_one_answer_and_keeps_its_session(live, engine):
    rig = live("harmonize", modes=ModeConfig(voices=1))
    rig.play([60, 64])
    assert rig.wait_for(lambda: len(rig.bridge.latencies) == 2), "harmonized before the stall"
    session = rig.link.session
    engine.proc.send_signal(signal.SIGSTOP)  # alive, connected, answering nothing: a machine too busy
    try:
        rig.play([67], length=1.6)  # the request times out (1 s) while the key is down
        assert rig.wait_for(lambda: rig.link.slow >= 1, timeout=3.0)
    finally:
        engine.proc.send_signal(signal.SIGCONT)
    assert rig.bridge.engine_ok and not rig.bridge.lost_reason, "a slow reply is not a lost engine"
    before = len(rig.bridge.latencies)
    rig.play([72, 76])
    assert rig.wait_for(lambda: len(rig.bridge.latencies) >= before + 2), "harmony goes on after the stall"
    assert rig.link.session == session, "the same session, not a re-created one"
    assert rig.wait_for(lambda: not unreleased_note_ons(rig.peer.messages()), timeout=2.0)
