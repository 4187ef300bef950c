"""One piece -> one .mid file: music21 score to timed MIDI messages, parts mapped to instrument classes.

Times: music21 offsets are quarter notes; the score's metronome marks turn them into seconds (120 quarter notes
per minute where a score has no usable mark). Repeats are not expanded. Ties are joined, grace notes dropped.
The file keeps the score's tempo map and its time signatures (bar by bar, a pickup bar included), so bar lines
and beats can be found again. Velocity: a note's own velocity, else the part's last dynamic mark, else 80. Chord
symbols (folk tunes and lead sheets) become a guitar part: a bass note and a closed voicing above it, struck at
each symbol and again at each bar line while the symbol lasts. Each part gets its own MIDI channel (never
channel 10) and a program whose General MIDI family is the part's instrument class (see docs/corpus.md).
"""

from __future__ import annotations

import bisect
import logging
import re
from dataclasses import dataclass

import mido
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.instruments import DRUM_CHANNEL, INSTRUMENTS, instrument_class, instrument_index
from musebridge.engine.tokens.midifile import Conductor, MetreChange, TempoChange, write_midi

from .corpus_sources import PieceSpec, tune_text

log = logging.getLogger(__name__)

DEFAULT_BPM = 120.0  # quarter notes per minute when a score has no usable metronome mark
DEFAULT_VELOCITY = 80
CHORD_VELOCITY = 60
# A chord symbol as written in ABC and lead sheets ("G", "D7", "Am", "F#m7b5", "G7/b"). music21 also turns some
# text annotations into ChordSymbol objects (a forte mark "f", a section letter): those do not match.
CHORD_FIGURE = re.compile(
    r"^[A-G][#b-]?(?:m|min|maj|M|dim|aug|sus|add|alt|\+|o|ø|[0-9]|[#b()]|,)*(?:/[A-Ga-g][#b+-]?)?$"
)
CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)

# Part or instrument name keyword -> instrument class; the first rule that matches wins (so "contrabass"
# is strings before "bass" is a voice, "basso continuo" is organ before "basso" is a voice).
NAME_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("contrabass", "double bass", "violone", "violoncello", "cello", "viola", "violin", "fiddle", "string"),
        "strings",
    ),
    (("bass guitar", "electric bass", "fretless"), "bass"),
    (("continuo", "organ", "organo"), "organ"),
    (("piano", "pianoforte", "harpsichord", "cembalo", "clavier", "keyboard", "clavichord"), "piano"),
    (("celesta", "glockenspiel", "vibraphone", "marimba", "xylophone", "bells"), "chromatic"),
    (("guitar", "lute", "liuto", "theorbo", "mandolin", "banjo"), "guitar"),
    (("trumpet", "tromba", "trombone", "horn", "corno", "tuba", "cornet", "clarino", "sackbut", "brass"), "brass"),
    (("flute", "flauto", "traverso", "piccolo", "recorder", "fife", "whistle", "pipe"), "pipe"),
    (("oboe", "clarinet", "bassoon", "fagotto", "saxophone", "sax", "shawm", "reed"), "reed"),
    (
        (
            "soprano",
            "alto",
            "tenor",
            "bass",
            "cantus",
            "canto",
            "superius",
            "altus",
            "quintus",
            "quinto",
            "sextus",
            "contra",
            "triplum",
            "motetus",
            "discantus",
            "voice",
            "voce",
            "vox",
            "choir",
            "chorus",
            "sopran",
            "mezzo",
            "baritone",
        ),
        "voice",
    ),
)


class EmptyPiece(ValueError):
    """A score with no playable notes."""


@dataclass(frozen=True)
class PartNotes:
    """One part's notes as (start s, end s, pitch, velocity), its instrument class and MIDI program."""

    name: str
    instrument: int
    program: int
    notes: tuple[tuple[float, float, int, int], ...]


def load_score(spec: PieceSpec):
    """Parse the piece with music21: a Score (multi-tune files: one tune; voice files: voices merged)."""
    from music21 import converter, stream  # noqa: PLC0415 - heavy import, only in workers

    if spec.tune is not None:
        parsed = converter.parseData(tune_text(spec.path, spec.tune), format="abc")
    else:
        parsed = converter.parse(spec.path, forceSource=True)
    if isinstance(parsed, stream.Opus):
        if spec.merge_voices:
            parsed = parsed.mergeScores()
        elif parsed.scores:
            parsed = parsed.scores[0]
        else:
            raise EmptyPiece("the file holds no score")
    return parsed


class TempoMap:
    """Quarter-note offsets -> seconds, from a score's metronome marks."""

    def __init__(self, score) -> None:
        self.starts, self.seconds, self.spq = [0.0], [0.0], [60.0 / DEFAULT_BPM]
        try:
            boundaries = score.metronomeMarkBoundaries()
        except (AttributeError, ValueError, TypeError, IndexError) as exc:
            log.debug("no tempo map (%s); using %s bpm", exc, DEFAULT_BPM)
            boundaries = []
        for start, _end, mark in boundaries:
            bpm = mark.getQuarterBPM() if mark.number is not None else None
            spq = 60.0 / min(300.0, max(20.0, bpm)) if bpm else self.spq[-1]
            start = float(start)
            if start <= self.starts[-1]:
                self.spq[-1] = spq
                continue
            self.seconds.append(self.at(start))
            self.starts.append(start)
            self.spq.append(spq)

    def at(self, offset: float) -> float:
        """Seconds at a quarter-note offset."""
        i = bisect.bisect_right(self.starts, offset) - 1
        return self.seconds[i] + (offset - self.starts[i]) * self.spq[i]

    def changes(self) -> tuple[TempoChange, ...]:
        """The map as MIDI tempo changes (seconds, microseconds per quarter note)."""
        pairs = zip(self.seconds, self.spq, strict=True)
        return tuple(TempoChange(round(t, 6), round(spq * 1e6)) for t, spq in pairs)


def metre_changes(score, tempo: TempoMap) -> tuple[MetreChange, ...]:
    """The metre of the score's first part, bar by bar, as MIDI time signatures in seconds. A first bar shorter
    than its time signature (a pickup) gets a time signature of its own length, so bar lines fall where the score
    has them. A score without measures gives no change (MIDI's default, 4/4)."""
    from music21 import meter  # noqa: PLC0415

    if not score.parts:
        return ()
    changes: list[MetreChange] = []
    current: tuple[int, int] | None = None
    for i, bar in enumerate(score.parts[0].getElementsByClass("Measure")):
        signature = bar.timeSignature or bar.getContextByClass(meter.TimeSignature)
        if signature is None:
            continue
        sig = (int(signature.numerator), int(signature.denominator))
        if sig[1] & (sig[1] - 1) or not 0 < sig[0] < 256:
            continue  # MIDI writes only power-of-two denominators (an ABC "M:3/3"): the bar keeps the last one
        length = float(bar.duration.quarterLength)
        full = 4.0 * sig[0] / sig[1]
        units = length * sig[1] / 4.0
        if i == 0 and 0 < length < full - 1e-6 and abs(units - round(units)) < 1e-6:
            sig = (round(units), sig[1])  # a pickup bar
        if sig != current:
            changes.append(MetreChange(round(tempo.at(float(bar.offset)), 6), *sig))
            current = sig
    return tuple(changes)


def classify_part(part, spec: PieceSpec) -> tuple[int, int]:
    """(instrument class, MIDI program) for a part: its name, else its music21 instrument (when the source's
    instruments are trusted: only then is the instrument's own name read too), else the source's default. A
    meaningful music21 program of the same class is kept (e.g. cello 42 rather than the strings default 48)."""
    inst = part.getInstrument(returnDefault=False)
    fields = [part.partName, getattr(inst, "partName", None)]
    if spec.trust_instruments:
        fields.append(getattr(inst, "instrumentName", None))
    names = " ".join(str(x) for x in fields if x).lower()
    cls = _class_from_names(names)
    program = getattr(inst, "midiProgram", None) if spec.trust_instruments else None
    if cls is None and program is not None and type(inst).__name__ != "Instrument":
        cls = instrument_class(program, 0)
    if cls is None:
        cls = instrument_index(spec.instrument)
    if program is None or instrument_class(program, 0) != cls:
        program = INSTRUMENTS[cls].program
    return cls, program


def _class_from_names(names: str) -> int | None:
    if not names:
        return None
    words = set(names.replace(".", " ").replace("-", " ").split())
    for keywords, cls_name in NAME_RULES:
        for key in keywords:
            if (" " in key and key in names) or key in words or any(w.startswith(key) for w in words):
                return instrument_index(cls_name)
    return None


def _velocity(element, current: int) -> int:
    vol = getattr(element, "volume", None)
    vel = getattr(vol, "velocity", None) if vol is not None else None
    return max(1, min(127, int(vel))) if vel else current


def part_notes(part, tempo: TempoMap) -> list[tuple[float, float, int, int]]:
    """A part's sounding notes (start s, end s, pitch, velocity), ties joined, grace notes and unpitched
    notes dropped."""
    from music21 import chord, dynamics, harmony, note  # noqa: PLC0415

    notes: list[list] = []  # [start_ql, end_ql, pitch, velocity]
    open_ties: dict[int, int] = {}  # pitch -> index in notes of the tied note being extended
    velocity = DEFAULT_VELOCITY
    for el in part.flatten().getElementsByClass((note.Note, chord.Chord, dynamics.Dynamic)):
        if isinstance(el, dynamics.Dynamic):
            if el.volumeScalar:
                velocity = max(1, min(127, round(el.volumeScalar * 127)))
            continue
        if isinstance(el, harmony.Harmony) or el.duration.isGrace or el.quarterLength <= 0:
            continue
        start, end = float(el.offset), float(el.offset + el.quarterLength)
        members = el.notes if isinstance(el, chord.Chord) else (el,)
        vel = _velocity(el, velocity)
        for member in members:
            pitch = getattr(member, "pitch", None)
            if pitch is None or not 0 <= round(pitch.ps) <= 127:
                continue
            midi = int(round(pitch.ps))
            tie = (member.tie or el.tie) if isinstance(el, chord.Chord) else el.tie
            kind = tie.type if tie is not None else None
            if kind in ("stop", "continue") and midi in open_ties:
                notes[open_ties[midi]][1] = max(notes[open_ties[midi]][1], end)
                if kind == "stop":
                    del open_ties[midi]
                continue
            notes.append([start, end, midi, vel])
            if kind == "start":
                open_ties[midi] = len(notes) - 1
    return [(tempo.at(s), tempo.at(e), p, v) for s, e, p, v in notes if e > s]


def chord_notes(part, tempo: TempoMap, end_ql: float) -> list[tuple[float, float, int, int]]:
    """The chord symbols of a part realized as block chords: bass note (root in E2..D#3) plus the chord's
    pitch classes in closed position from G3 up (at most four), re-struck at each bar line."""
    from music21 import harmony, stream  # noqa: PLC0415

    flat = part.flatten()
    symbols = [(float(s.offset), s) for s in flat.getElementsByClass(harmony.ChordSymbol)]
    if not symbols:
        return []
    bars = sorted({float(m.offset) for m in part.getElementsByClass(stream.Measure)})
    out = []
    for i, (start, symbol) in enumerate(symbols):
        stop = symbols[i + 1][0] if i + 1 < len(symbols) else end_ql
        if isinstance(symbol, harmony.NoChord) or stop <= start or not CHORD_FIGURE.match(symbol.figure or ""):
            continue
        voicing = _voicing(symbol)
        cuts = [start] + [b for b in bars if start < b < stop] + [stop]
        for a, b in zip(cuts, cuts[1:], strict=False):
            out += [(tempo.at(a), tempo.at(b), p, CHORD_VELOCITY) for p in voicing]
    return out


def _voicing(symbol) -> list[int]:
    try:
        pitches = list(symbol.pitches)
        root = symbol.root()
    except (AttributeError, ValueError, TypeError):
        return []
    if not pitches or root is None:
        return []
    bass = 40 + (root.pitchClass - 40) % 12
    upper, last = [], 54
    for p in sorted(pitches, key=lambda p: (p.pitchClass - root.pitchClass) % 12)[:4]:
        last += 1 + (p.pitchClass - (last + 1)) % 12
        upper.append(last)
    return [bass] + upper


def score_parts(score, spec: PieceSpec) -> list[PartNotes]:
    """Every part of the score with its notes and instrument; plus the chord part where asked for."""
    tempo = TempoMap(score)
    parts = []
    for i, part in enumerate(score.parts):
        notes = part_notes(part, tempo)
        if notes:
            cls, program = classify_part(part, spec)
            parts.append(PartNotes(part.partName or f"part {i + 1}", cls, program, tuple(notes)))
    if spec.chords and score.parts:
        end_ql = float(score.highestTime)
        chords = chord_notes(score.parts[0], tempo, end_ql)
        if chords:
            guitar = instrument_index("guitar")
            parts.append(PartNotes("chords", guitar, INSTRUMENTS[guitar].program, tuple(chords)))
    return parts


def assign_channels(parts: list[PartNotes]) -> list[tuple[int, PartNotes]]:
    """One channel per part, never the drum channel. Beyond 15 parts, a part shares the channel of an earlier
    part with the same program, or is dropped (logged)."""
    out: list[tuple[int, PartNotes]] = []
    for i, part in enumerate(parts):
        if i < len(CHANNELS):
            out.append((CHANNELS[i], part))
            continue
        same = [ch for ch, p in out if p.program == part.program]
        if same:
            out.append((same[0], part))
        else:
            log.info("dropping part %r: no MIDI channel left", part.name)
    return out


def to_events(parts: list[PartNotes]) -> tuple[list[Timed], dict[int, str]]:
    """Timed messages (program changes first, note-offs before note-ons at equal times) and track names."""
    keyed = []
    names = {}
    for channel, part in assign_channels(parts):
        names.setdefault(channel, part.name)
        keyed.append((0.0, 0, channel, 0, mido.Message("program_change", channel=channel, program=part.program)))
        for start, end, pitch, vel in part.notes:
            keyed.append(
                (start, 2, channel, pitch, mido.Message("note_on", channel=channel, note=pitch, velocity=vel))
            )
            keyed.append((end, 1, channel, pitch, mido.Message("note_off", channel=channel, note=pitch)))
    keyed.sort(key=lambda k: k[:4])
    return [Timed(round(t, 6), msg) for t, _, _, _, msg in keyed], names


def convert_score(spec: PieceSpec, out_path: str, max_seconds: float) -> None:
    """Parse `spec` with music21 and write it to `out_path` (atomically). Raises EmptyPiece, or ValueError
    when the piece is longer than `max_seconds`."""
    score = load_score(spec)
    parts = score_parts(score, spec)
    if not parts:
        raise EmptyPiece("no notes")
    end = max(n[1] for p in parts for n in p.notes)
    if end > max_seconds:
        raise TooLong(f"{end / 60:.1f} min is longer than the {max_seconds / 60:.0f} min limit")
    events, names = to_events(parts)
    tempo = TempoMap(score)
    try:
        metres = metre_changes(score, tempo)
    except (AttributeError, ValueError, TypeError, IndexError, ZeroDivisionError) as exc:
        log.debug("no metre (%s): the file gets none", exc)
        metres = ()
    conductor = Conductor(tempo.changes(), metres)
    write_midi(events, out_path, ticks_per_beat=960, track_names=names, conductor=conductor)


class TooLong(ValueError):
    """A piece longer than the configured limit."""
