"""JACK helpers for real-port tests: a private `jackd -d dummy` server per test module, and a JACK MIDI peer
(another client, like a keyboard and a synth) that plays into the bridge and records what it sends back.

Each server gets its own name (JACK_DEFAULT_SERVER), so parallel runs never meet. Tests skip when jackd is
missing; `.ci/run` installs jackd2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import mido

JACKD = shutil.which("jackd")


# rtmidi objects of closed peers. Unregistering a JACK port races the client's process thread inside rtmidi
# (it can read a port that is being torn down: a rare segfault, seen once in CI on a peer's close). A peer's
# ports are therefore only torn down once jackd has stopped, when no process thread runs any more.
_RETIRED: list = []


class JackServer:
    """jackd with the dummy driver at `rate` Hz and `period` frames; start() waits until clients can connect.
    The tests use 128 frames (2.7 ms): on a loaded 2-core VM a 32-frame cycle (0.67 ms) is often missed, and
    JACK then drops or repeats that cycle's MIDI events in transit. bench/latency.py asks for 32."""

    def __init__(self, rate: int = 48000, period: int = 128):
        self.name = f"mbtest-{uuid.uuid4().hex[:8]}"
        self.rate, self.period = rate, period
        self.proc: subprocess.Popen | None = None
        self._previous = os.environ.get("JACK_DEFAULT_SERVER")
        self.log = tempfile.NamedTemporaryFile(prefix="jackd-", suffix=".log", delete=False)

    def start(self, wait_s: float = 15.0) -> JackServer:
        cmd = [JACKD, "-n", self.name, "-d", "dummy", "-r", str(self.rate), "-p", str(self.period)]
        env = {**os.environ, "JACK_NO_AUDIO_RESERVATION": "1"}
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        os.environ["JACK_DEFAULT_SERVER"] = self.name  # libjack reads it when a client opens
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"jackd exited: {open(self.log.name).read()[-500:]}")
            if self.usable():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("jackd did not accept clients in time")

    @staticmethod
    def usable() -> bool:
        import rtmidi

        try:
            probe = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "probe")
        except OSError:
            return False
        probe.delete()
        return True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        while _RETIRED:  # about a second per output port: rtmidi waits for a process cycle that never comes
            _RETIRED.pop().delete()
        if self._previous is None:
            os.environ.pop("JACK_DEFAULT_SERVER", None)
        else:
            os.environ["JACK_DEFAULT_SERVER"] = self._previous
        os.unlink(self.log.name)


def find(ports: list[str], name: str) -> int:
    hits = [i for i, p in enumerate(ports) if name in p]
    if not hits:
        raise LookupError(f"no JACK port containing {name!r} in {ports}")
    return hits[0]


def connect(midi, name: str) -> None:
    """Open the port containing `name`. rtmidi opens by index: when the port list changed between listing and
    opening (another client registering a port), the index may name another port, so check and let the caller
    retry."""
    ports = midi.get_ports()
    index = find(ports, name)
    midi.open_port(index)
    now = midi.get_ports()
    if index >= len(now) or now[index] != ports[index]:
        raise LookupError(f"port list changed while opening {name!r}")


def wait_gone(name: str, timeout: float = 10.0) -> None:
    """Wait until no JACK port contains `name` (a client that just exited is removed by the server a little
    later; a new client of the same name would be renamed, and a peer could connect to the old one)."""
    import rtmidi

    probe_in = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, "gone probe in")
    probe_out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, "gone probe out")
    try:
        deadline = time.monotonic() + timeout
        while any(name in p for p in probe_in.get_ports() + probe_out.get_ports()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"JACK ports containing {name!r} did not go away")
            time.sleep(0.05)
    finally:
        probe_in.delete()
        probe_out.delete()


class JackPeer:
    """A JACK MIDI client: `send` plays into the port named `to`, and everything the port named `listen` emits
    is kept in `heard` as (time.perf_counter() seconds, mido.Message).

    callback=True stamps each message in rtmidi's callback, on JACK's process thread: exact, but that thread then
    needs the GIL, and while other Python threads of this process hold it, a large burst arriving in one JACK
    cycle is garbled. callback=False lets rtmidi queue messages (in C++) and a thread here drains the queue every
    0.5 ms: nothing is lost, times are late by up to about a millisecond."""

    def __init__(self, to: str | None, listen: str | None, client: str = "peer", wait_s: float = 5.0,
                 callback: bool = True):
        import rtmidi

        self.heard: list[tuple[float, mido.Message]] = []
        self.out = self.inp = None
        self._callback = callback
        self._polling = threading.Event()
        self._poller: threading.Thread | None = None
        deadline = time.monotonic() + wait_s
        while True:  # the bridge's ports may take a moment to appear
            try:
                self._open(rtmidi, to, listen, client)
                break
            except LookupError:
                self.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _open(self, rtmidi, to, listen, client) -> None:
        if to is not None:
            self.out = rtmidi.MidiOut(rtmidi.API_UNIX_JACK, f"{client} out")
            connect(self.out, to)
        if listen is not None:
            self.inp = rtmidi.MidiIn(rtmidi.API_UNIX_JACK, f"{client} in", queue_size_limit=65536)
            self.inp.ignore_types(sysex=True, timing=False, active_sense=True)
            if self._callback:
                self.inp.set_callback(self._received)
            connect(self.inp, listen)
            if not self._callback:
                self._polling.set()
                self._poller = threading.Thread(target=self._poll, daemon=True)
                self._poller.start()

    def _poll(self) -> None:
        inp = self.inp
        while self._polling.is_set():
            event = inp.get_message()
            if event is None:
                time.sleep(0.0005)
                continue
            self.heard.append((time.perf_counter(), mido.Message.from_bytes(event[0])))

    def _received(self, event, _data) -> None:
        self.heard.append((time.perf_counter(), mido.Message.from_bytes(event[0])))

    def send(self, msg: mido.Message) -> float:
        """Send now; returns the time.perf_counter() just before sending."""
        t = time.perf_counter()
        self.out.send_message(msg.bytes())
        return t

    def messages(self) -> list[mido.Message]:
        return [m for _, m in list(self.heard)]

    def note_ons(self, channel: int | None = None, after: float = 0.0) -> list[tuple[float, mido.Message]]:
        """Note-ons heard at or after `after`, oldest first. `heard` only grows, in time order: it is read from
        the newest back to `after`, so a loop waiting for an answer costs what arrived since, not everything."""
        out = []
        for t, m in reversed(self.heard):  # appends meanwhile (the callback) are not visited
            if t < after:
                break
            if m.type == "note_on" and m.velocity > 0 and (channel is None or m.channel == channel):
                out.append((t, m))
        return out[::-1]

    def close(self) -> None:
        """Stop listening; the ports themselves are torn down when the JACK server stops (see _RETIRED)."""
        self._polling.clear()
        if self._poller is not None:
            self._poller.join(timeout=2.0)
            self._poller = None
        _RETIRED.extend(port for port in (self.out, self.inp) if port is not None)
        self.out = self.inp = None
