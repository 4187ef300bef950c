"""Test doubles for the bridge: a scripted engine link, in-memory ports wired to a FakeClock, note checks."""

from __future__ import annotations

from dataclasses import replace

import mido
from musebridge.bridge.clock import FakeClock
from musebridge.bridge.config import BridgeConfig
from musebridge.bridge.core import Bridge
from musebridge.bridge.errors import EngineLost
from musebridge.bridge.notes import note_off
from musebridge.bridge.ports import MemoryBackend, MemoryMidi

STEP_S = 0.05  # the fake engine advances in steps of 50 ms: a note-on every other step, NOTE_S long
NOTE_S = 0.08


class FakeLink:
    """A deterministic stand-in for EngineLink: notes on channel 5 (strings), pitch cycling from 60.
    Feeding an event earlier than the plan rolls back; each plan epoch uses velocity 100 + epoch."""

    def __init__(self, params: dict | None = None):
        self.params = dict(params or {"instruments": ["strings"], "player_instrument": "piano"})
        self.session = None
        self.key = "-"
        self.slow = 0  # timed-out requests (EngineLink.slow)
        self.opened = 0
        self.resumed_at = 0.0
        self.alive = True
        self.time = 0.0
        self.epoch = 0
        self.fed: list[dict] = []
        self.anticipated: list[float] = []  # session times of `anticipate` calls
        self.calls: list[str] = []
        self.generates: list[dict] = []  # the arguments of every generate call
        self._pending: list[tuple[float, mido.Message]] = []
        self._count = 0

    def _check(self, cmd: str) -> None:
        self.calls.append(cmd)
        if not self.alive:
            raise EngineLost("fake engine is gone")

    def open(self) -> str:
        self._check("session.create")
        self.session = "s1"
        self.opened += 1
        return self.session

    def set(self, **params) -> dict:
        self._check("set")
        self.params.update(params)
        return {"params": self.params}

    def feed(self, events: list[dict]) -> dict:
        self._check("feed")
        self.fed += events
        rolled = 0
        for e in events:
            if e["t"] < self.time:
                rolled += 1
                self.time = round(e["t"], 6)
                self.epoch += 1
                # like the engine's rollback: the notes planned after t are gone, and so are their note-offs
                self._pending = [p for p in self._pending if p[0] - NOTE_S <= self.time + 1e-9]
        return {"fed": len(events), "rolled_back": rolled, "time": self.time}

    @property
    def last_generate(self) -> dict:
        return self.generates[-1]

    def anticipate(self, t: float) -> None:
        self._check("anticipate")
        self.anticipated.append(t)

    def generate(self, until=None, notes=None, max_tokens=None, now=False, feed=()):
        if feed:  # like the engine: fed first, in the same request
            self.feed(feed)
        self._check("generate")
        self.generates.append({"until": until, "notes": notes, "max_tokens": max_tokens, "now": now,
                               "feed": list(feed)})
        if now:  # like the engine: note-ons at the current time, one step each
            first = [] if self._count else [(self.time, mido.Message("program_change", channel=5, program=48))]
            return first + [(self.time, self._note_on()) for _ in range(notes or max_tokens)], self.time
        out, made, steps = [], 0, 0
        while (until is None or self.time < until - 1e-9) and (notes is None or made < notes):
            if max_tokens is not None and steps >= max_tokens:
                break
            steps += 1
            self.time = round(self.time + STEP_S, 6)
            for off in [p for p in self._pending if p[0] <= self.time + 1e-9]:
                out.append(off)
                self._pending.remove(off)
            if round(self.time / STEP_S) % 2 == 0:
                if not self._count:  # like the engine: a program change before the instrument's first note
                    out.append((self.time, mido.Message("program_change", channel=5, program=48)))
                out.append((self.time, self._note_on()))
                self._pending.append((round(self.time + NOTE_S, 6), note_off(5, out[-1][1].note)))
                made += 1
        return out, self.time

    def _note_on(self) -> mido.Message:
        pitch = 60 + self._count % 12
        self._count += 1
        return mido.Message("note_on", channel=5, note=pitch, velocity=100 + self.epoch)

    def keepalive(self) -> None:
        pass

    def close(self) -> None:
        self.calls.append("close")

    def drop(self) -> None:
        self.calls.append("drop")


class Rig:
    """A Bridge on in-memory ports with a FakeClock (or time_source). keyboard: sends into the bridge's in port;
    heard: what the bridge's out port sent, as (clock time, message)."""

    def __init__(self, mode: str = "respond", link=None, time_source=None, **config):
        self.clock = time_source or FakeClock()
        self.midi = MemoryMidi()
        self.link = link or FakeLink()
        self.config = replace(BridgeConfig(mode=mode), **config)
        self.bridge = Bridge(self.config, MemoryBackend(self.midi), self.link, self.clock)
        self.bridge.open()
        self.keyboard = self.midi.sender("MuseBridge In")
        self.heard: list[tuple[float, mido.Message]] = []
        self.midi.listen("MuseBridge Out", lambda data: self.heard.append(
            (self.clock.now(), mido.Message.from_bytes(data))))

    def play(self, *msgs: mido.Message) -> None:
        for msg in msgs:
            self.keyboard.send(msg)
        self.bridge.pump()

    def run(self, seconds: float, step: float = 0.005) -> None:
        """Advance the clock in steps, pumping the bridge at each."""
        end = self.clock.now() + seconds
        while self.clock.now() < end - 1e-9:
            self.clock.advance(step)
            self.bridge.pump()

    def note_ons(self, channel: int | None = None, after: float = float("-inf")) -> list:
        return [(t, m) for t, m in self.heard if m.type == "note_on" and m.velocity > 0 and t >= after
                and (channel is None or m.channel == channel)]


def on(note: int, channel: int = 0, velocity: int = 90) -> mido.Message:
    return mido.Message("note_on", channel=channel, note=note, velocity=velocity)


def off(note: int, channel: int = 0) -> mido.Message:
    return mido.Message("note_off", channel=channel, note=note)


def cc(control: int, value: int = 127, channel: int = 0) -> mido.Message:
    return mido.Message("control_change", channel=channel, control=control, value=value)


def stuck_notes(messages) -> set[tuple[int, int]]:
    """(channel, note) pairs left sounding by a message sequence: a note-on without a later note-off for the same
    key (CC123 all-notes-off on a channel ends that channel's notes)."""
    sounding: set[tuple[int, int]] = set()
    for msg in messages:
        if msg.type == "note_on" and msg.velocity > 0:
            sounding.add((msg.channel, msg.note))
        elif msg.type in ("note_on", "note_off"):
            sounding.discard((msg.channel, msg.note))
        elif msg.type == "control_change" and msg.control == 123:
            sounding = {k for k in sounding if k[0] != msg.channel}
    return sounding


def unreleased_note_ons(messages) -> set[tuple[int, int]]:
    """Stricter than stuck_notes: ignores CC123, so every note-on needs its own note-off."""
    return stuck_notes([m for m in messages if not (m.type == "control_change" and m.control == 123)])
