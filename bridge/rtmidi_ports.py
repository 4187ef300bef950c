"""Real MIDI ports through python-rtmidi: ALSA or JACK on Linux, CoreMIDI on macOS, Windows MultiMedia.

rtmidi is used directly (mido's message objects carry the data): it lets the bridge pick the MIDI API, name its
JACK/ALSA client, receive MIDI clock (rtmidi ignores timing messages unless told) and drop sysex floods before
they reach Python. The API is chosen when a port is opened, never at import time.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque

import mido

from .errors import PortError
from .ports import IN_NAME, OUT_NAME, InputCallback, match_port

log = logging.getLogger(__name__)

JACK_BURST = 16  # messages ...
JACK_WINDOW_S = 0.002  # ... per this many seconds at most on JACK (one small period's MIDI buffer holds ~32)
POLL_S = 0.0005  # on JACK, input messages are drained from rtmidi's queue this often (seconds)
JACK_QUEUE = 65536  # messages rtmidi may queue for the poller (C++ side; no GIL needed to fill it)
FLUSH_S = 0.1  # wait before closing an output port, seconds (a few JACK periods even at 1024 frames)
API_NAMES = {"alsa": "LINUX_ALSA", "jack": "UNIX_JACK", "coremidi": "MACOSX_CORE", "winmm": "WINDOWS_MM"}


def _rtmidi():
    import rtmidi  # noqa: PLC0415 - imported when ports are needed, not at import time

    return rtmidi


def compiled_apis() -> list[str]:
    """Names (keys of API_NAMES) of the MIDI APIs this python-rtmidi was built with."""
    rt = _rtmidi()
    have = set(rt.get_compiled_api())
    return [name for name, const in API_NAMES.items() if getattr(rt, f"API_{const}", None) in have]


def api_constant(name: str) -> int:
    """rtmidi API constant for an API name; PortError naming the compiled ones when unknown or missing."""
    choices = compiled_apis()
    if name not in API_NAMES or name not in choices:
        raise PortError(f"MIDI API {name!r} is not available; this python-rtmidi has: {', '.join(choices)}")
    return getattr(_rtmidi(), f"API_{API_NAMES[name]}")


def api_usable(name: str) -> bool:
    """True when a client of that API can be created now (ALSA: a sequencer exists; JACK: a server runs)."""
    try:
        probe = _rtmidi().MidiOut(api_constant(name), "MuseBridge probe")
    except (PortError, OSError) as exc:  # rtmidi.RtMidiError is an OSError
        log.debug("MIDI API %s not usable: %s", name, exc)
        return False
    probe.delete()
    return True


def auto_api() -> str:
    """The API a user expects: CoreMIDI on macOS, WinMM on Windows; on Linux ALSA, else a running JACK."""
    if sys.platform == "darwin":
        return "coremidi"
    if sys.platform.startswith("win"):
        return "winmm"
    for name in ("alsa", "jack"):
        if name in compiled_apis() and api_usable(name):
            return name
    raise PortError("no MIDI system found: no ALSA sequencer (/dev/snd/seq) and no JACK server running; "
                    "load snd-seq, or start JACK (e.g. `jackd -d dummy`) and pass --api jack")


class RtmidiInput:
    """An input port: the callback gets the raw bytes (list of ints), on rtmidi's thread, or with poll_s on a
    thread of ours that drains rtmidi's queue every poll_s seconds.

    Why poll on JACK: rtmidi calls the callback on JACK's real-time process thread, which must then take the GIL.
    When another Python thread holds it for longer than one JACK period, the cycle is missed and the MIDI events
    of that cycle are lost (measured: 233 of 6,000 messages at a 32-frame period with one busy Python thread;
    none when polled). Polled, rtmidi queues in C++ without the GIL; timestamps are late by up to poll_s."""

    def __init__(self, midi, name: str, callback: InputCallback | None = None, poll_s: float | None = None):
        self._midi, self.name = midi, name
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        if poll_s is not None and callback is not None:
            self._poller = threading.Thread(target=self._poll, args=(callback, poll_s), daemon=True,
                                            name="musebridge-midi-in")
            self._poller.start()

    def _poll(self, callback: InputCallback, poll_s: float) -> None:
        get = self._midi.get_message
        while not self._stop.is_set():
            event = get()
            if event is None:
                time.sleep(poll_s)
            else:
                callback(event[0])

    def close(self) -> None:
        if self._poller is not None:
            self._stop.set()
            self._poller.join(timeout=1.0)
            self._poller = None
        else:
            self._midi.cancel_callback()
        self._midi.close_port()
        self._midi.delete()


class RtmidiOutput:
    """An output port. paced: at most JACK_BURST messages per JACK_WINDOW_S (JACK drops or garbles the rest of a
    larger burst within one period, e.g. a panic's note-offs); other APIs queue bursts themselves."""

    def __init__(self, midi, name: str, paced: bool = False):
        self._midi, self.name = midi, name
        self._recent: deque[float] | None = deque(maxlen=JACK_BURST) if paced else None

    def send(self, msg: mido.Message) -> None:
        recent = self._recent
        if recent is not None:
            if len(recent) == JACK_BURST:
                wait_until = recent[0] + JACK_WINDOW_S
                while time.perf_counter() < wait_until:
                    time.sleep(0)
            recent.append(time.perf_counter())
        self._midi.send_message(msg.bytes())

    def close(self) -> None:
        time.sleep(FLUSH_S)  # JACK sends queued messages on its next cycles: the final note-offs must leave
        self._midi.close_port()
        self._midi.delete()


class RtmidiBackend:
    """Ports of one rtmidi API ("alsa", "jack", "coremidi", "winmm"; None: auto_api())."""

    def __init__(self, api: str | None = None, client_name: str = "MuseBridge"):
        self.name = api or auto_api()
        self._api = api_constant(self.name)
        self.client_name = client_name

    def _new(self, cls, client: str, **kwargs):
        try:
            return cls(self._api, client, **kwargs)
        except OSError as exc:
            raise PortError(f"cannot open the {self.name} MIDI system: {exc}") from None

    def _names(self, cls) -> list[str]:
        midi = self._new(cls, f"{self.client_name} list")
        try:
            return list(midi.get_ports())
        finally:
            midi.delete()

    def inputs(self) -> list[str]:
        return self._names(_rtmidi().MidiIn)

    def outputs(self) -> list[str]:
        return self._names(_rtmidi().MidiOut)

    def _open(self, midi, kind: str, name: str | None, virtual_name: str) -> str:
        try:
            if name is None:
                midi.open_virtual_port(virtual_name)
                return virtual_name
            ports = list(midi.get_ports())
            found = match_port(kind, name, ports, self.name)
            midi.open_port(ports.index(found), f"{self.client_name} {kind}")
            return found
        except PortError:
            midi.delete()
            raise
        except (OSError, NotImplementedError) as exc:
            midi.delete()
            if name is None:
                raise PortError(f"cannot create a virtual {kind} port on {self.name} ({exc}); on Windows create "
                                "loopMIDI ports and pass --in/--out NAME") from None
            raise PortError(f"cannot open {kind} port {name!r} on {self.name}: {exc}") from None

    def open_input(self, name: str | None, callback: InputCallback, virtual_name: str = IN_NAME) -> RtmidiInput:
        client = virtual_name if name is None else self.client_name
        polled = self.name == "jack"  # see RtmidiInput
        midi = self._new(_rtmidi().MidiIn, client, **({"queue_size_limit": JACK_QUEUE} if polled else {}))
        midi.ignore_types(sysex=True, timing=False, active_sense=True)  # keep MIDI clock, drop sysex floods
        if not polled:
            midi.set_callback(lambda event, _data: callback(event[0]))
        opened = self._open(midi, "input", name, virtual_name)
        return RtmidiInput(midi, opened, callback, POLL_S if polled else None)

    def open_output(self, name: str | None, virtual_name: str = OUT_NAME) -> RtmidiOutput:
        midi = self._new(_rtmidi().MidiOut, virtual_name if name is None else self.client_name)
        return RtmidiOutput(midi, self._open(midi, "output", name, virtual_name), paced=self.name == "jack")


def open_backend(api: str | None) -> RtmidiBackend:
    """The rtmidi backend for --api (None: automatic)."""
    if api is not None and api not in API_NAMES:
        raise PortError(f"unknown MIDI API {api!r}; choose from: {', '.join(API_NAMES)}")
    if api is not None and not api_usable(api):
        fix = {"jack": "start JACK first (e.g. `jackd -d dummy`)", "alsa": "load the snd-seq kernel module"}
        raise PortError(f"the {api} MIDI system is not running; {fix.get(api, 'choose another --api')} "
                        "(`musebridge ports` shows what works)")
    return RtmidiBackend(api)
