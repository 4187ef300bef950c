"""Which following rules steer a session's model, and how strongly: one frozen dataclass (engine/sessions/follow.py
applies it; the protocol's `follow` parameters and the CLIs' --follow options build it)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..tokens import vocab as V
from ..tokens.instruments import INSTRUMENTS
from ..tokens.tonality import parse_key
from .lifetimes import DEFAULT_LIFETIMES

FOLLOW_PARTS = ("key", "register", "dynamics", "density", "polyphony", "lifetime", "harmony", "onsets",
                "instruments", "pedal")


@dataclass(frozen=True)
class FollowConfig:
    """Which rules steer the model, and how strongly (nats added to or taken from a token's logit).

    key: "auto" (the key heard), "off", or a fixed key such as "E minor" or "Bb major".
    key_strength: nats taken from out-of-key note-ons (inf: masked).
    register_strength: nats per (octave outside the role's register) squared.
    centre_strength: nats per octave from the reference's centre, per octave the engine's recent notes drifted
        from it (a pull back toward the centre: linear in the pitch).
    dynamics_strength: nats per (velocity bins / 4 away from the reference's) squared.
    density_strength: nats added to time shifts per unit of log(engine onset rate / reference rate).
    polyphony_strength: nats taken from note-ons per note sounding beyond the reference's polyphony.
    lifetime_strength: nats added to a note's note-off at its limit (quadratic in its age before).
    harmony_strength: nats taken from note-ons that clash with a sounding player note (and added to the note-off
        of an engine note that clashes with one).
    self_harmony_strength: nats taken from note-ons that clash with a sounding engine note (the engine's own
        clusters; weaker than with the player, since a performer's legato and chords hold some seconds).
    onsets_strength: nats taken from time shifts at the step of a player's note-on, and from note-ons off the
        player's pulse (added to the time shift that lands on it).
    prompt_pulse_strength: the same for a continuation, off its prompt's pulse counted from the engine's own last
        onset (weaker: at the player's strength a continuation's rhythm moved away from its prompt's).
    instrument_strength: nats per second of silence added to the note-ons of a silent engine instrument.
    pedal_strength: nats taken from a pedal press per unit of log(engine presses per second, the press included /
        the reference's).
    lifetimes: (class name, seconds) overrides of DEFAULT_LIFETIMES.
    """

    enabled: bool = True
    key: str = "auto"
    key_strength: float = 3.0
    register: bool = True
    register_strength: float = 2.0
    centre_strength: float = 8.0
    dynamics: bool = True
    dynamics_strength: float = 1.0
    density: bool = True
    density_strength: float = 1.5
    polyphony: bool = True
    polyphony_strength: float = 1.5
    lifetime: bool = True
    lifetime_strength: float = 4.0
    harmony: bool = True
    harmony_strength: float = 2.0
    self_harmony_strength: float = 1.0
    onsets: bool = True
    onsets_strength: float = 8.0
    prompt_pulse_strength: float = 5.0
    instruments: bool = True
    instrument_strength: float = 2.0
    pedal: bool = True
    pedal_strength: float = 2.0
    lifetimes: tuple[tuple[str, float], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.key not in ("auto", "off"):
            parse_key(self.key)  # raises ValueError naming the valid keys

    def lifetime_steps(self) -> np.ndarray:
        """(classes,) longest note per instrument class, in grid steps."""
        table = DEFAULT_LIFETIMES | dict(self.lifetimes)
        return np.array([V.grid_step(table[i.name]) for i in INSTRUMENTS])
