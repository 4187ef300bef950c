"""MIDI ports behind one small interface, and an in-memory MIDI system for tests and for `musebridge demo`.

A Backend lists port names and opens ports:
    backend.inputs(), backend.outputs()                 # names of existing ports
    backend.open_input(name_or_None, callback)          # None: a virtual port others can send to
    backend.open_output(name_or_None)                   # None: a virtual port others can listen to
The input callback receives the raw message bytes (list of ints) on the backend's own thread; the bridge only
timestamps and enqueues them there. Real ports live in bridge/rtmidi_ports.py; MemoryBackend needs no MIDI system.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol

import mido

from .errors import PortError

IN_NAME = "MuseBridge In"
OUT_NAME = "MuseBridge Out"

InputCallback = Callable[[list[int]], None]


class InPort(Protocol):
    name: str

    def close(self) -> None: ...


class OutPort(Protocol):
    name: str

    def send(self, msg: mido.Message) -> None: ...

    def close(self) -> None: ...


class Backend(Protocol):
    name: str

    def inputs(self) -> list[str]: ...

    def outputs(self) -> list[str]: ...

    def open_input(self, name: str | None, callback: InputCallback, virtual_name: str = IN_NAME) -> InPort: ...

    def open_output(self, name: str | None, virtual_name: str = OUT_NAME) -> OutPort: ...


def match_port(kind: str, wanted: str, available: Sequence[str], backend: str = "") -> str:
    """The port named `wanted`: an exact name, else the one name containing it (case-insensitive).
    kind: "input" or "output". PortError lists what exists when nothing or several ports match."""
    where = f" ({backend})" if backend else ""
    if wanted in available:
        return wanted
    hits = [name for name in available if wanted.lower() in name.lower()]
    if len(hits) == 1:
        return hits[0]
    listing = ", ".join(repr(n) for n in available) or "none"
    if not hits:
        raise PortError(f"no {kind} port matching {wanted!r}{where}; available: {listing}")
    raise PortError(f"{wanted!r} matches several {kind} ports{where}: {', '.join(map(repr, hits))}; "
                    "give more of the name")


def check_ports(backend: Backend, in_port: str | None, out_port: str | None) -> None:
    """PortError (one line, listing what exists) unless each port asked for by name matches exactly one existing
    port of `backend`; None asks for a virtual port, always possible. `play` calls it before it starts an
    engine, so a mistyped --in or --out costs no engine start."""
    if in_port is not None:
        match_port("input", in_port, backend.inputs(), backend.name)
    if out_port is not None:
        match_port("output", out_port, backend.outputs(), backend.name)


# --- in-memory MIDI system ----------------------------------------------------------------------------------


class _Source:
    """Something that emits MIDI (a keyboard, the bridge's virtual out): listeners get every message."""

    def __init__(self, system: MemoryMidi, name: str):
        self.system, self.name = system, name
        self.listeners: list[InputCallback] = []

    def send(self, msg: mido.Message) -> None:
        data = msg.bytes()
        for listener in list(self.listeners):
            listener(list(data))

    def close(self) -> None:
        self.system._remove(self.system._sources, self.name)


class _Destination:
    """Something that receives MIDI (a synth, the bridge's virtual in)."""

    def __init__(self, system: MemoryMidi, name: str, callback: InputCallback):
        self.system, self.name, self.callback = system, name, callback

    def close(self) -> None:
        self.system._remove(self.system._destinations, self.name)


class _Sender:
    """An output port opened on an existing destination."""

    def __init__(self, dest: _Destination):
        self.dest, self.name = dest, dest.name

    def send(self, msg: mido.Message) -> None:
        self.dest.callback(list(msg.bytes()))

    def close(self) -> None:
        pass


class _Listener:
    """An input port opened on an existing source."""

    def __init__(self, source: _Source, callback: InputCallback):
        self.source, self.name, self.callback = source, source.name, callback
        source.listeners.append(callback)

    def close(self) -> None:
        if self.callback in self.source.listeners:
            self.source.listeners.remove(self.callback)


class MemoryMidi:
    """An in-process MIDI system: named sources and destinations, delivery is a direct call in the sender's
    thread (like an rtmidi callback thread). Thread-safe registry."""

    def __init__(self) -> None:
        self._sources: dict[str, _Source] = {}
        self._destinations: dict[str, _Destination] = {}
        self._lock = threading.Lock()

    def _remove(self, table: dict, name: str) -> None:
        with self._lock:
            table.pop(name, None)

    def sources(self) -> list[str]:
        with self._lock:
            return list(self._sources)

    def destinations(self) -> list[str]:
        with self._lock:
            return list(self._destinations)

    def create_source(self, name: str) -> _Source:
        """A new port that others can listen to (e.g. a virtual keyboard in a test)."""
        with self._lock:
            if name in self._sources:
                raise PortError(f"a source named {name!r} already exists")
            self._sources[name] = src = _Source(self, name)
            return src

    def create_destination(self, name: str, callback: InputCallback) -> _Destination:
        """A new port that others can send to (e.g. a virtual synth in a test)."""
        with self._lock:
            if name in self._destinations:
                raise PortError(f"a destination named {name!r} already exists")
            self._destinations[name] = dest = _Destination(self, name, callback)
            return dest

    def sender(self, name: str) -> _Sender:
        """An output port to an existing destination, by name or substring."""
        with self._lock:
            found = match_port("output", name, list(self._destinations), "memory")
            return _Sender(self._destinations[found])

    def listen(self, name: str, callback: InputCallback) -> _Listener:
        """An input port on an existing source, by name or substring."""
        with self._lock:
            found = match_port("input", name, list(self._sources), "memory")
            return _Listener(self._sources[found], callback)


class MemoryBackend:
    """Backend over a MemoryMidi: virtual ports become destinations/sources others can reach by name."""

    name = "memory"

    def __init__(self, system: MemoryMidi | None = None):
        self.system = system or MemoryMidi()

    def inputs(self) -> list[str]:
        return self.system.sources()

    def outputs(self) -> list[str]:
        return self.system.destinations()

    def open_input(self, name: str | None, callback: InputCallback, virtual_name: str = IN_NAME) -> InPort:
        if name is None:
            return self.system.create_destination(virtual_name, callback)
        return self.system.listen(name, callback)

    def open_output(self, name: str | None, virtual_name: str = OUT_NAME) -> OutPort:
        if name is None:
            return self.system.create_source(virtual_name)
        return self.system.sender(name)
