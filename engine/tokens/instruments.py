"""Instrument classes: the mapping from General MIDI program / channel to the model's instrument classes.

Everything here is data. A class groups General MIDI program families that play a similar role in the music
(MuseNet did the same). Drums are their own class and are recognised by MIDI channel 10 (index 9), whatever the
program. Each class has a default General MIDI program and a default output channel used when decoding.
"""

from __future__ import annotations

from dataclasses import dataclass

DRUM_CHANNEL = 9  # MIDI channel 10, counted from 0


@dataclass(frozen=True)
class InstrumentClass:
    """One instrument class of the vocabulary.

    name: short identifier used on the command line and in the protocol.
    program: General MIDI program (0-127) used when decoding this class to MIDI.
    channel: default MIDI channel (0-15) used when decoding.
    low, high: the playable pitch range (MIDI note numbers 0-127), used by augmentation and constraints.
    """

    name: str
    program: int
    channel: int
    low: int
    high: int


# The order of this table is part of the vocabulary: never reorder, only append (and bump VOCAB_VERSION).
INSTRUMENTS: tuple[InstrumentClass, ...] = (
    InstrumentClass("piano", 0, 0, 21, 108),
    InstrumentClass("chromatic", 11, 1, 53, 96),  # celesta, glockenspiel, vibraphone, marimba, bells
    InstrumentClass("organ", 19, 2, 24, 96),
    InstrumentClass("guitar", 24, 3, 40, 88),
    InstrumentClass("bass", 32, 4, 28, 67),
    InstrumentClass("strings", 48, 5, 28, 103),  # violin .. contrabass, string ensembles
    InstrumentClass("voice", 52, 6, 36, 84),  # choir aahs, voice oohs: the music21 corpus is mostly vocal
    InstrumentClass("brass", 61, 7, 28, 84),
    InstrumentClass("reed", 68, 8, 34, 91),  # saxophones, oboe, bassoon, clarinet
    InstrumentClass("pipe", 73, 10, 48, 96),  # flutes, recorders
    InstrumentClass("synth", 80, 11, 24, 108),
    InstrumentClass("drums", 0, DRUM_CHANNEL, 27, 87),
)

INSTRUMENT_NAMES: tuple[str, ...] = tuple(i.name for i in INSTRUMENTS)
DRUMS = INSTRUMENT_NAMES.index("drums")

# General MIDI program ranges (inclusive) -> instrument class name.
_PROGRAM_RANGES: tuple[tuple[int, int, str], ...] = (
    (0, 7, "piano"),
    (8, 15, "chromatic"),
    (16, 23, "organ"),
    (24, 31, "guitar"),
    (32, 39, "bass"),
    (40, 51, "strings"),  # solo strings and string ensembles
    (52, 54, "voice"),  # choir aahs, voice oohs, synth voice
    (55, 55, "strings"),  # orchestra hit
    (56, 63, "brass"),
    (64, 71, "reed"),
    (72, 79, "pipe"),
    (80, 103, "synth"),  # leads, pads, effects
    (104, 107, "guitar"),  # sitar, banjo, shamisen, koto
    (108, 108, "chromatic"),  # kalimba
    (109, 109, "reed"),  # bagpipe
    (110, 110, "strings"),  # fiddle
    (111, 111, "reed"),  # shanai
    (112, 119, "chromatic"),  # tinkle bell, agogo, steel drums, woodblock, taiko, toms
    (120, 127, "synth"),  # sound effects
)

PROGRAM_TO_CLASS: tuple[int, ...] = tuple(
    INSTRUMENT_NAMES.index(name) for lo, hi, name in _PROGRAM_RANGES for _ in range(lo, hi + 1)
)
assert len(PROGRAM_TO_CLASS) == 128


def instrument_class(program: int, channel: int) -> int:
    """Instrument class index for a General MIDI program (0-127) playing on a MIDI channel (0-15)."""
    if channel == DRUM_CHANNEL:
        return DRUMS
    return PROGRAM_TO_CLASS[program]


def instrument_index(name: str) -> int:
    """Index of an instrument class by name (any case); raises ValueError listing the valid names."""
    try:
        return INSTRUMENT_NAMES.index(str(name).strip().lower())
    except ValueError:
        raise ValueError(
            f"unknown instrument {name!r}; choose from: {', '.join(INSTRUMENT_NAMES)}"
        ) from None
