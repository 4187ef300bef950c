"""Following the player: the engine listens to what is played and steers the model's choices toward it.

The model hears the player only through its token stream; these rules add what it does not infer on its own.
Each is an additive bias on the next token's logits (nats; -inf where a rule is a guarantee), computed from the
timeline's state (engine/sessions/timeline.py `State`: the last note-ons of both parts, the engine's sounding notes
and when each started), so a rollback rolls the rules back too. The reference is what the engine follows: the
player's notes (as last heard, once the engine's own have pushed them out of the state's recent note-ons), or,
in a session without a player, a primed prompt's (a continuation), else the engine's own.

- key: a Krumhansl-Kessler key profile correlated with the reference's recent pitch classes (weighted by
  velocity and recency), kept until another key fits clearly better (hysteresis; from the engine's own notes,
  the first key they establish is kept until a player or a prompt is heard); out-of-key note-ons lose
  `key_strength` nats, or are masked (`key_strength` = inf), or follow a key the musician fixes;
- register: each engine instrument keeps its role's register relative to the reference: a bass below the
  reference's lowest notes, every other pitched part within its range and drawn to its pitch centre, the more
  so the further the engine's recent notes have drifted from that centre; only a player's or a prompt's
  register is followed (against its own notes the bass sank below them, and every part after it);
- dynamics: velocity tokens are drawn toward the reference's recent velocity bin;
- density: time shifts gain (or lose) weight as the engine plays more (or fewer) onsets per second than the
  reference, when that is the player or a prompt (measured against its own last notes the engine's rate fed on
  itself);
- polyphony: note-ons lose weight once the engine sounds as many notes as the reference does, and are masked at
  POLYPHONY_CAP_FACTOR times that; a note-off is never masked;
- lifetime: a note-off gains weight as its note ages, and no engine note outlives its instrument's limit: at the
  limit only note-offs may follow, and no time shift may jump past it;
- harmony: while the player sounds notes, engine note-ons a second, a tritone or a seventh away from any of them
  lose weight, and engine notes that clash with them are favoured to end; note-ons that clash with the engine's
  own sounding notes lose weight too, more gently;
- onsets: right after a player's note-on the engine is favoured to strike with it rather than let time pass, and
  between them its onsets keep to the player's pulse (the median inter-onset interval, counted from the
  player's last onset): time shifts that land on the pulse gain weight, note-ons off it lose weight; a
  continuation keeps its prompt's pulse the same way, counted from its own last onset;
- every instrument plays: an engine instrument gains weight the longer it stays silent;
- pedal: the engine presses the sustain pedal about as often as the reference does (not at all when the
  reference never does): a press loses weight as the engine's presses per second exceed the reference's.
Whatever the rules, no engine note ends at the step it started, no key is struck twice in one step, and no
velocity token follows another or repeats the current bin.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..tokens import vocab as V
from ..tokens.instruments import DRUMS, INSTRUMENT_NAMES
from ..tokens.tonality import key_scores, parse_key, scale_of
from .follow_config import FollowConfig
from .hearing import CHORD_STEPS, MIN_PULSE_STEPS, PEDAL_WINDOW_S, Heard, hear, merged_onsets
from .timeline import Onset, State

KEY_MARGIN = 0.08  # another key must correlate this much better to replace the current one
# following its own notes the engine keeps the first key they establish: its key followed its own drift, and a
# band piece from scratch kept to its seven main pitch classes 0.78-0.84 of the time (real: 0.99)
OWN_KEY_MARGIN = math.inf
REFERENCE_NOTES = 24  # the reference's last this many note-ons describe it
ENGINE_WINDOW_S = 4.0  # the engine's own density is measured over this many seconds
MIN_RATE_SPAN_S = 1.0  # ... or since its first onset in them, but over at least this long
POLYPHONY_CAP_FACTOR = 1.5
PULSE_TOLERANCE_STEPS = 3  # an onset this close to the pulse is on it
BASS = INSTRUMENT_NAMES.index("bass")
DISSONANT = np.array([i % 12 in (1, 2, 6, 10, 11) for i in range(12)])  # interval classes that clash


class Follower:
    """One session's rules (FollowConfig) and what it keeps across steps: the key it hears, and the descriptions
    of a primed prompt and of the player's last notes."""

    def __init__(self, config: FollowConfig, instruments: tuple[int, ...]):
        self.config = config
        self.instruments = tuple(instruments)
        self.key: tuple[int, str] | None = None if config.key in ("auto", "off") else parse_key(config.key)
        self._prompt: Heard | None = None  # a primed prompt's description, followed when no player plays
        self._cache: tuple[Onset | None, Heard | None] = (None, None)
        self._base_cache: tuple[Heard | None, np.ndarray | None] = (None, None)
        self._centre_cache: tuple[tuple, np.ndarray | None] = ((None, None), None)  # ((last onset, heard), pull)
        self._origin_cache: tuple[Onset | None, int | None] = (None, None)  # (last onset, its chord's start)
        self._clash_cache: dict[frozenset, np.ndarray] = {}  # pitch classes -> pitches clashing with them
        self._player: Heard | None = None  # the player's last description, kept after their notes leave
        self._player_heard = False  # whether the last heard() followed the player
        self._limits = config.lifetime_steps()
        self._midi = np.arange(V.N_PITCHES)
        self._pitch_class = self._midi % 12
        self._pitches = self._midi.astype(np.float32)

    @property
    def steering_key(self) -> tuple[int, str] | None:
        """The key the engine's notes are steered toward now: the one heard or fixed; None when following or its
        key rule is off (what `play`'s status line and the protocol's replies show)."""
        return self.key if self.config.enabled and self.config.key != "off" else None

    def inherit(self, old: Follower) -> None:
        """Keep what `old` heard (a primed prompt, the player; the key, unless this follower's key is another)."""
        self._prompt, self._player = old._prompt, old._player
        if self.config.key == old.config.key:
            self.key = old.key

    def prime(self, state: State) -> None:
        """Remember the prompt just primed (the last note-ons of `state`) as what to follow until a player
        plays: a continuation follows its prompt, not its own drift."""
        found = hear(list(state.recent[-REFERENCE_NOTES:]), state.step, tuple(p for p, _ in state.pedals))
        self._prompt = self._with_key(*found, KEY_MARGIN) if found else None
        self._cache = (None, None)

    def heard(self, state: State) -> Heard | None:
        """What the reference sounds like now: the player's last notes (as last heard, once the engine's own
        notes have pushed them out of the timeline's recent note-ons), else the prompt, else the engine's own.
        Recomputed only when a reference note-on arrives."""
        played = [o for o in state.recent if o.player]
        self._player_heard = bool(played) or self._player is not None
        remembered = self._player if self._player is not None else self._prompt
        if not played and remembered is not None:
            return remembered
        notes = (played or list(state.recent))[-REFERENCE_NOTES:]
        last = notes[-1] if notes else None
        if last is None or self._cache[0] is not last:
            pedals = tuple(p for p, player in state.pedals if player or not played)
            found = hear(notes, state.step, pedals) if notes else None
            margin = KEY_MARGIN if played else OWN_KEY_MARGIN
            self._cache = (last, self._with_key(*found, margin) if found else None)
        if played:
            self._player = self._cache[1]
        return self._cache[1]

    def _with_key(self, heard: Heard, profile: np.ndarray, margin: float) -> Heard:
        """`heard` with the key: a fixed one, or the best-fitting profile when it beats the current by `margin`
        ("auto"), or none ("off")."""
        if self.config.key == "off":
            return heard
        if self.config.key == "auto":
            scores = key_scores(profile)
            best = int(np.argmax(scores))
            current = None if self.key is None else self.key[0] + (12 if self.key[1] == "minor" else 0)
            if current is None or scores[best] > scores[current] + margin:
                self.key = (best % 12, "major" if best < 12 else "minor")
        return replace(heard, key=self.key)

    def bias(self, state: State, now: bool = False) -> np.ndarray | None:
        """Additive (vocab,) float32 logit bias for the next engine token, or None when no rule applies."""
        c = self.config
        if not c.enabled:
            return None
        heard = self.heard(state)
        out = self._base(heard).copy()
        if heard is not None:
            self._polyphony(out, heard, state)
            if c.register and self._external(heard):
                self._centre(out, state, heard)
            if c.pedal:
                self._pedal(out, state, heard)
            if c.density and not now and heard.rate > 0 and self._external(heard):
                out[V.OFFSETS["time"] : V.OFFSETS["time"] + V.MAX_SHIFT_STEPS] += (
                    c.density_strength * self._density_term(state, heard.rate))
        if c.harmony and state.player_held:
            self._harmony(out, state)
        if c.harmony and state.started:
            self._self_harmony(out, state)
        if c.onsets and not now and heard is not None:
            self._onsets(out, state, heard)
        if c.instruments:
            self._silent_instruments(out, state)
        if c.lifetime:
            self._lifetimes(out, state, now)
        self._no_empty_churn(out, state)
        return out

    def _external(self, heard: Heard) -> bool:
        """Whether `heard` is the player or a primed prompt, not the engine's own notes."""
        return self._player_heard or heard is self._prompt

    @staticmethod
    def _no_empty_churn(out: np.ndarray, state: State) -> None:
        """No engine note ends at the step it started, no key is struck twice in one step, and no velocity token
        follows another or repeats the current bin: otherwise rules that hold back note-ons and time shifts
        could leave the model making tokens without time passing or a note sounding."""
        velocity = V.OFFSETS["velocity"]
        if state.last_kind == "velocity":
            out[velocity : velocity + V.VELOCITY_BINS] = -np.inf
        elif state.vel_bin is not None:
            out[velocity + state.vel_bin] = -np.inf
        for o in reversed(state.recent):
            if o.step != state.step:
                break
            if not o.player:
                out[V.note_on_token(o.cls, o.pitch)] = -np.inf
                if (o.cls, o.pitch) in state.started:
                    out[V.note_off_token(o.cls, o.pitch)] = -np.inf

    def _base(self, heard: Heard | None) -> np.ndarray:
        """The terms that change only with what is heard (key, register, dynamics), cached until it changes."""
        if self._base_cache[0] is heard and self._base_cache[1] is not None:
            return self._base_cache[1]
        c = self.config
        out = np.zeros(V.VOCAB_SIZE, np.float32)
        if heard is not None:
            outside = None if heard.key is None else ~np.isin(self._pitch_class, scale_of(heard.key))
            external = self._external(heard)
            for inst in self.instruments:
                if inst == DRUMS:
                    continue
                row = out[V.note_on_token(inst, 0) : V.note_on_token(inst, 0) + V.N_PITCHES]
                if outside is not None and c.key_strength > 0:
                    row[outside] -= c.key_strength
                if c.register and external:
                    row -= c.register_strength * self._register(inst, heard)
            if c.dynamics:
                bins = np.arange(V.VELOCITY_BINS, dtype=np.float32)
                out[V.OFFSETS["velocity"] : V.OFFSETS["velocity"] + V.VELOCITY_BINS] -= (
                    c.dynamics_strength * ((bins - heard.vel_bin) / 4.0) ** 2)
        self._base_cache = (heard, out)
        return out

    def _polyphony(self, out: np.ndarray, heard: Heard, state: State) -> None:
        """Note-ons lose weight once the engine sounds as many notes as the reference, and are masked at
        POLYPHONY_CAP_FACTOR times that (+1)."""
        if not self.config.polyphony:
            return
        sounding = state.decoder.sounding
        # while the player holds notes the engine accompanies them: a texture of its own, at least 3 voices
        target = max(heard.polyphony, 3.0) if state.player_held else heard.polyphony
        if sounding < target:
            return
        cap = sounding >= POLYPHONY_CAP_FACTOR * target + 1
        for inst in self.instruments:
            start = V.note_on_token(inst, 0)
            if cap:
                out[start : start + V.N_PITCHES] = -np.inf
            else:
                out[start : start + V.N_PITCHES] -= self.config.polyphony_strength * (sounding - target + 1)

    def _register(self, inst: int, heard: Heard) -> np.ndarray:
        """(pitches,) squared octaves outside the register of the instrument's role."""
        if inst == BASS:
            low, high = heard.low - 24, heard.low - 5
        else:
            low, high = min(heard.low, heard.centre - 6) - 3, max(heard.high, heard.centre + 6) + 3
        outside = np.maximum(low - self._pitches, 0) + np.maximum(self._pitches - high, 0)
        centre = heard.low - 12 if inst == BASS else heard.centre
        return (outside / 12.0) ** 2 + 0.5 * ((self._pitches - centre) / 12.0) ** 2

    def _centre(self, out: np.ndarray, state: State, heard: Heard) -> None:
        """Pull the note-ons of the pitched parts (the bass keeps its own role) back toward the reference's centre
        when the engine's recent notes drifted from it: linear in the pitch, in proportion to the drift. The pull
        changes only with a note-on or what is heard, so it is kept until then (this runs every step)."""
        last = state.recent[-1] if state.recent else None
        (seen_last, seen_heard), pull = self._centre_cache
        if seen_last is not last or seen_heard is not heard:
            pull = None
            mine = [o.pitch for o in state.recent if not o.player and o.cls != DRUMS and o.cls != BASS]
            if len(mine) >= 4:
                mine = mine[-REFERENCE_NOTES:]
                drift = min(1.0, max(-1.0, (sum(mine) / len(mine) - heard.centre) / 12.0))
                pull = (-self.config.centre_strength * drift / 12.0) * (self._pitches - heard.centre)
            self._centre_cache = ((last, heard), pull)
        if pull is None:
            return
        for inst in self.instruments:
            if inst != DRUMS and inst != BASS:
                start = V.note_on_token(inst, 0)
                out[start : start + V.N_PITCHES] += pull

    def _pedal(self, out: np.ndarray, state: State, heard: Heard) -> None:
        """A pedal press loses weight as the engine's presses per second over the last PEDAL_WINDOW_S (this one
        included) exceed the reference's, and gains a little below it."""
        window = V.grid_step(PEDAL_WINDOW_S)
        mine = (1 + sum(not player and state.step - p < window for p, player in state.pedals)) / PEDAL_WINDOW_S
        term = min(2.0, max(-1.0, math.log((mine + 0.05) / (heard.pedal_rate + 0.05))))
        for inst in self.instruments:
            out[V.pedal_token(inst, True)] -= self.config.pedal_strength * term

    def _density_term(self, state: State, reference_rate: float) -> float:
        """log(engine onsets per second / the reference's), clipped to +-2: positive favours time shifts. The
        engine's rate is over the last ENGINE_WINDOW_S, or since its first onset in them (MIN_RATE_SPAN_S at
        least): an answer that has just begun is not taken for a slow one and pushed to crowd its first
        seconds."""
        window = V.grid_step(ENGINE_WINDOW_S)
        mine = [o for o in state.recent if not o.player and state.step - o.step < window]
        onsets = merged_onsets(mine)
        since = (state.step - onsets[0]) * V.GRID_S if onsets else ENGINE_WINDOW_S
        span = min(ENGINE_WINDOW_S, max(MIN_RATE_SPAN_S, since))
        rate = len(onsets) / span
        return min(2.0, max(-2.0, math.log((rate + 0.25) / (reference_rate + 0.25))))

    def _onsets(self, out: np.ndarray, state: State, heard: Heard) -> None:
        """Strike with the player's note-on; between them keep to the reference's pulse."""
        times = slice(V.OFFSETS["time"], V.OFFSETS["time"] + V.MAX_SHIFT_STEPS)
        strength = self.config.onsets_strength if self._player_heard else self.config.prompt_pulse_strength
        last = state.recent[-1] if state.recent else None
        if last is not None and last.player and last.step == state.step:
            out[times] -= strength
            return
        # the pulse: the reference's median inter-onset interval, not its halves (they made the engine's rhythm
        # busier than the reference's: docs/quality.md, "A continuation's rhythm")
        if self._player_heard:
            origin = heard.last if state.step >= heard.last else None
        elif heard is self._prompt:
            origin = self._own_origin(state)  # a continuation's tempo may drift as a player's does
        else:
            return  # the engine following its own notes: a pulse from them would only entrench its own rhythm
        period = heard.period
        if period < MIN_PULSE_STEPS or origin is None:
            return
        phase = (state.step - origin) % period
        if min(phase, period - phase) <= PULSE_TOLERANCE_STEPS:
            return  # on the pulse: strike, or let time pass, as the model likes
        for inst in self.instruments:
            start = V.note_on_token(inst, 0)
            out[start : start + V.N_PITCHES] -= strength
        ahead = period - phase
        if ahead <= V.MAX_SHIFT_STEPS:
            out[times.start + ahead - 1] += strength

    def _own_origin(self, state: State) -> int | None:
        """The step of the engine's last onset (a chord's spread counted once, as hearing.py counts it), or None
        while that chord may still grow. Called only while the engine continues a prompt, when every recent
        onset is its own; kept until the next note-on."""
        last = state.recent[-1] if state.recent else None
        if last is None or state.step - last.step <= CHORD_STEPS:
            return None
        if self._origin_cache[0] is not last:
            mine = [o for o in state.recent if not o.player]
            self._origin_cache = (last, merged_onsets(mine)[-1] if mine else None)
        return self._origin_cache[1]

    def _harmony(self, out: np.ndarray, state: State) -> None:
        """Note-ons clashing with a sounding player note lose weight; sounding engine notes that clash with one
        are favoured to end."""
        clash = self._clashing(frozenset(pitch % 12 for pitch in state.player_held))
        strength = self.config.harmony_strength
        self._lower_note_ons(out, strength * clash)
        for cls, pitch in state.started:
            if cls != DRUMS and clash[pitch]:
                out[V.note_off_token(cls, pitch)] += strength

    def _self_harmony(self, out: np.ndarray, state: State) -> None:
        """Note-ons clashing with a sounding engine note lose weight (at a model's unguided rate the engine's own
        notes clashed half as often again as a performer's: docs/quality.md, "Clashes among its own notes")."""
        classes = frozenset(pitch % 12 for cls, pitch in state.started if cls != DRUMS)
        if classes:
            self._lower_note_ons(out, self.config.self_harmony_strength * self._clashing(classes))

    def _clashing(self, classes: frozenset) -> np.ndarray:
        """(pitches,) float32 1.0 where a pitch is a second, tritone or seventh from one of the pitch classes;
        kept per set of classes (they change only with a note-on or note-off, and this runs every step)."""
        found = self._clash_cache.get(classes)
        if found is None:
            mask = np.zeros(12, bool)
            for pc in classes:
                mask |= DISSONANT[(np.arange(12) - pc) % 12]
            found = self._clash_cache[classes] = mask[self._pitch_class].astype(np.float32)
        return found

    def _lower_note_ons(self, out: np.ndarray, penalty: np.ndarray) -> None:
        """Subtract the (pitches,) penalty from every pitched engine instrument's note-ons."""
        for inst in self.instruments:
            if inst != DRUMS:
                start = V.note_on_token(inst, 0)
                out[start : start + V.N_PITCHES] -= penalty

    def _silent_instruments(self, out: np.ndarray, state: State) -> None:
        """An engine instrument silent for a while gains instrument_strength nats per second of its silence
        (counted from its last note-on among the recent ones, or the oldest of those), at most four times that."""
        last: dict[int, int] = {}
        for o in state.recent:
            if not o.player:
                last[o.cls] = o.step
        since = state.recent[0].step if state.recent else 0
        for inst in self.instruments:
            silent_s = (state.step - last.get(inst, since)) * V.GRID_S
            if silent_s > 0.5:
                start = V.note_on_token(inst, 0)
                out[start : start + V.N_PITCHES] += self.config.instrument_strength * min(silent_s, 4.0)

    def _lifetimes(self, out: np.ndarray, state: State, now: bool) -> None:
        """Note-offs favoured as notes age; at a note's limit only note-offs may follow, and no time shift may
        carry any note past its limit."""
        if not state.started:
            return
        remaining = V.MAX_SHIFT_STEPS
        for (cls, pitch), first in state.started.items():
            limit = int(self._limits[cls])
            age = state.step - first
            out[V.note_off_token(cls, pitch)] += self.config.lifetime_strength * min(age / limit, 1.0) ** 2
            remaining = min(remaining, limit - age)
        if remaining <= 0:
            keep = out[V.OFFSETS["note_off"] : V.OFFSETS["note_off"] + V.N_INSTRUMENTS * V.N_PITCHES].copy()
            out[:] = -np.inf
            out[V.OFFSETS["note_off"] : V.OFFSETS["note_off"] + V.N_INSTRUMENTS * V.N_PITCHES] = keep
        elif not now and remaining < V.MAX_SHIFT_STEPS:
            out[V.OFFSETS["time"] + remaining : V.OFFSETS["time"] + V.MAX_SHIFT_STEPS] = -np.inf
