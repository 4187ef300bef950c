"""The play modes: respond, accompany, harmonize, generate, thru. Each decides when to ask the engine for notes.

A mode gets player notes (wall time, message), ticks (the worker calls tick(now) every few ms), triggers (a CC),
and transport changes, and acts only through its context (bridge/context.py ModeContext): ask the engine, play
its events on a timebase, release them, read the time and the tempo. The worker (bridge/worker.py) calls it; the
output stage (bridge/output.py) knows what sounds. No mode ever blocks the MIDI callback: all of this runs on the
bridge's engine worker thread. Times: `now`, `t` are seconds on the bridge clock.
"""

from __future__ import annotations

import logging
import math

import mido
from musebridge.engine.tokens.vocab import GRID_S

from .context import ModeContext
from .notes import is_note_off, is_note_on

log = logging.getLogger(__name__)

REF_SECONDS_PER_BEAT = 0.5  # generate mode: one engine second is two beats (the model's 120 bpm) at any tempo
ANSWER_FIRST_TOKENS = 2  # respond: tokens the model may take to its first answer note (else one is asked `now`)
ANSWER_NOW_TOKENS = 8  # respond: tokens for that `now` note (note-offs the model chooses first)
ANTICIPATE_LEAD_S = 0.0005  # harmonize: the next grid step's time shift is asked for this long before it starts


class Mode:
    """Base mode: feeds player notes to the engine, plays nothing by itself. state: shown in the status line."""

    name = "base"

    def __init__(self, ctx: ModeContext):
        self.ctx = ctx
        self.state = "idle"

    def enter(self, now: float) -> None:
        self.state = "idle"

    def leave(self, now: float) -> None:
        self.ctx.release()

    def player(self, t: float, msg: mido.Message, now: float) -> None:
        self.ctx.feed([(t, msg)])

    def trigger(self, now: float) -> None:
        pass

    def transport(self, running: bool, now: float) -> None:
        pass

    def tick(self, now: float) -> None:
        pass

    def wake_in(self, now: float) -> float:
        """Seconds until this mode wants its next tick (the worker also ticks every tick_s)."""
        return math.inf

    def silenced(self, now: float) -> None:
        """Everything was just silenced (panic, CC123, transport stop, engine loss)."""


class ThruMode(Mode):
    """Pass-through only: the input thread forwards the player's notes; the engine is not asked for anything."""

    name = "thru"

    def player(self, t, msg, now) -> None:
        pass


class RespondMode(Mode):
    """Call and response. listening: player notes go to the engine. After a pause with no keys down (or a
    trigger CC), answering: the engine plays for answer_s; the player cutting in stops the answer at once."""

    name = "respond"

    def enter(self, now: float) -> None:
        self.state = "listening"
        self._heard = False
        self.ctx.forget_keys()  # a key already down when listening starts does not hold the answer back
        self._last = now
        self._offset = 0.0  # wall time - session time during an answer
        self._end = 0.0  # session time where the answer ends
        self._planned = 0.0  # session time the engine has planned to
        self._tries = 0

    def player(self, t, msg, now) -> None:
        if self.state == "answering" and is_note_on(msg):
            self.ctx.release()  # the player cuts in: stop at once
            self.state = "listening"
        if is_note_on(msg):
            self._heard = True
        self._last = max(self._last, t)
        self.ctx.feed([(t, msg)])

    def _pause_s(self) -> float:
        beats = self.ctx.config.pause_beats
        return self.ctx.config.pause_s if beats is None else beats * self.ctx.tempo.seconds_per_beat

    def _answer_s(self) -> float:
        beats = self.ctx.config.answer_beats
        return self.ctx.config.answer_s if beats is None else beats * self.ctx.tempo.seconds_per_beat

    def trigger(self, now: float) -> None:
        if self.state == "listening":
            self._start_answer(now)

    def tick(self, now: float) -> None:
        if self.state == "listening":
            if self._heard and not self.ctx.keys_down() and now - self._last >= self._pause_s():
                self._start_answer(now)
        elif self.state == "answering":
            self._continue_answer(now)

    def _start_answer(self, now: float) -> None:
        """Ask for the first answer note and play it now; the rest follows in chunks from tick(). The model
        chooses it (usually at once: its first or second token); a model that would wait longer first (time
        shifts) is not waited for: the note is then asked for `now` (one model step)."""
        self._heard = False
        events, end = self.ctx.generate(notes=1, max_tokens=ANSWER_FIRST_TOKENS)
        if not any(is_note_on(m) for _, m in events):
            more, end = self.ctx.generate(notes=1, max_tokens=ANSWER_NOW_TOKENS, now=True)
            events += more
        first = next((t for t, m in events if is_note_on(m)), None)
        if first is None:
            self._tries += 1
            self._heard = self._tries < 5  # try again on the next tick, a few times
            return
        self._tries = 0
        self._offset = now - first
        self._end = first + self._answer_s()
        self._planned = end
        self.state = "answering"
        self.ctx.play(events, lambda s: s + self._offset, flush=True)
        self.ctx.measured(now)

    def _continue_answer(self, now: float) -> None:
        modes = self.ctx.config
        session_now = now - self._offset
        if session_now >= self._end:
            self.ctx.release()  # the answer is over: end what still sounds
            self.state = "listening"
            self._last = now
            return
        if self._planned < min(session_now + modes.horizon_s, self._end):
            until = min(self._planned + modes.chunk_s, self._end)
            events, self._planned = self.ctx.generate(until=until)
            self._planned = max(self._planned, until)
            self.ctx.play(events, lambda s: s + self._offset)

    def silenced(self, now: float) -> None:
        self.enter(now)


class AccompanyMode(Mode):
    """The engine plays along, planned horizon_s ahead of now. A player note earlier than the plan rolls the
    engine back; the scheduler drops the planned notes after it (those already sounded stay) and plans again.
    Silenced (stop CC, CC123, transport stop), it pauses until the player plays or the transport starts."""

    name = "accompany"

    def enter(self, now: float) -> None:
        self.state = "playing"
        self._planned = self.ctx.session_time(now)

    def player(self, t, msg, now) -> None:
        result = self.ctx.feed([(t, msg)])
        if self.state != "playing":
            self.enter(now)
        elif result.get("rolled_back"):
            self.ctx.cancel_after(t)
            self._planned = float(result.get("time", self.ctx.session_time(t)))
        self.tick(now)

    def transport(self, running: bool, now: float) -> None:
        if not running:
            self.state = "stopped"
        elif self.state != "playing":  # a Start while playing changes nothing: the plan is on session time
            self.enter(now)

    def silenced(self, now: float) -> None:
        self.state = "stopped"

    def tick(self, now: float) -> None:
        if self.state != "playing":
            return
        modes = self.ctx.config
        session_now = self.ctx.session_time(now)
        if self._planned < session_now - 1.0:  # far behind (after a pause): skip ahead, nothing to catch up
            self._planned = session_now
        if self._planned < session_now + modes.horizon_s:
            until = session_now + modes.horizon_s + modes.chunk_s
            events, end = self.ctx.generate(until=until)
            self._planned = max(end, until)
            self.ctx.play(events, self.ctx.wall_time)


class HarmonizeMode(Mode):
    """Each player note-on at once gets `voices` notes from the model, asked for with `now` (the engine samples
    only note-ons at the player's time: one model step per voice); they sound at the player's velocity and end
    with the player's note-off, which is fed to the engine together with the voices' ends (`"engine": true`
    note-offs), so the engine's timeline matches what sounded. The engine's own note-offs are not used."""

    name = "harmonize"

    def enter(self, now: float) -> None:
        self.state = "listening"
        self.ctx.forget_voices()
        self._last_player = -math.inf  # bridge clock time of the player's last note
        self._anticipated: int | None = None  # the grid step the engine was last told the player may play at

    def player(self, t, msg, now) -> None:
        self._last_player = now
        key = (getattr(msg, "channel", 0), getattr(msg, "note", -1))
        if is_note_on(msg):
            self._voice(key, t, msg)
            return
        made = self.ctx.end_voices(key if is_note_off(msg) else None, now)  # silenced before the round trip
        ends = [(t, mido.Message("note_off", channel=m.channel, note=m.note)) for m in made]
        self.ctx.feed([(t, msg)], engine_ends=ends)

    def _voice(self, key: tuple[int, int], t: float, msg: mido.Message) -> None:
        """The player's note is fed in the request for the first voice (one round trip), which sounds at once;
        the others follow from a second request."""
        voices = self.ctx.config.voices
        first = self._sound(key, 1, msg.velocity, feed=[(t, msg)])
        if first:
            self.ctx.measured(t)
        if voices - first > 0:
            self._sound(key, voices - first, msg.velocity)

    def _sound(self, key: tuple[int, int], n: int, velocity: int, feed: list | None = None) -> int:
        """Ask for n voices (the player's note fed first in the same request, when given) and sound them now,
        off the grid; returns how many sounded."""
        events, _ = self.ctx.generate(feed=feed or (), notes=n, max_tokens=8 * n + 8, now=True)
        now = self.ctx.now()
        chosen = [(now, m.copy(velocity=velocity) if is_note_on(m) else m) for _, m in events
                  if is_note_on(m) or m.type == "program_change"]
        sent = self.ctx.play(chosen, lambda w: w, quantize=False, voices_of=key, flush=True)
        return sum(1 for _, m in sent if is_note_on(m))

    def _coming_step(self, now: float) -> int | None:
        """The grid step a player event would land on ANTICIPATE_LEAD_S from now; None when the player has been
        quiet for longer than anticipate_s (or it is 0)."""
        window = self.ctx.config.anticipate_s
        if not window or now - self._last_player > window:
            return None
        return round((self.ctx.session_time(now) + ANTICIPATE_LEAD_S) / GRID_S)

    def tick(self, now: float) -> None:
        """At each grid step, tell the engine the player may play there (docs/protocol.md, "Anticipation")."""
        step = self._coming_step(now)
        if step is not None and step != self._anticipated:
            self._anticipated = step
            self.ctx.anticipate(step * GRID_S)

    def wake_in(self, now: float) -> float:
        if self._coming_step(now) is None:
            return math.inf
        x = (self.ctx.session_time(now) + ANTICIPATE_LEAD_S) / GRID_S
        return (math.floor(x - 0.5) + 1.5 - x) * GRID_S + 1e-5  # just past the next step's start

    def silenced(self, now: float) -> None:
        self.ctx.forget_voices()


class GenerateMode(Mode):
    """The model plays alone in time with the clock: one engine second is two beats, so the music follows the
    tempo of the MIDI clock (or the internal clock); stops with the transport, resumes with it. Silenced (stop CC,
    CC123), it pauses until the transport starts or the trigger CC."""

    name = "generate"

    def enter(self, now: float) -> None:
        session = self.ctx.engine_time()  # first: a lost engine leaves the mode idle (it is entered again)
        self.state = "playing" if self.ctx.tempo.running else "stopped"
        self._anchor(now, session)

    def _anchor(self, now: float, session: float) -> None:
        self._s0, self._b0 = session, self.ctx.tempo.beat_at(now)
        self._planned = session

    def _wall(self, s: float) -> float:
        return self.ctx.tempo.time_of_beat(self._b0 + (s - self._s0) / REF_SECONDS_PER_BEAT)

    def player(self, t, msg, now) -> None:
        pass  # the model plays alone

    def transport(self, running: bool, now: float) -> None:
        self.state = "playing" if running else "stopped"
        if running:  # what was planned on the old beat mapping would overlap what is planned on the new one
            self.ctx.release()
            self._anchor(now, self._planned)

    def trigger(self, now: float) -> None:
        """The trigger CC resumes playing after a stop CC or CC123 (the clock permitting)."""
        self.transport(self.ctx.tempo.running, now)

    def silenced(self, now: float) -> None:
        self.state = "stopped"

    def tick(self, now: float) -> None:
        if self.state != "playing" or not self.ctx.tempo.running:
            return
        modes = self.ctx.config
        beats_now = self.ctx.tempo.beat_at(now)
        session_now = self._s0 + (beats_now - self._b0) * REF_SECONDS_PER_BEAT
        if self._planned < session_now + modes.horizon_s:
            until = session_now + modes.horizon_s + modes.chunk_s
            events, end = self.ctx.generate(until=until)
            self._planned = max(end, until)
            self.ctx.play(events, self._wall)


MODE_CLASSES = {cls.name: cls for cls in (RespondMode, AccompanyMode, HarmonizeMode, GenerateMode, ThruMode)}
