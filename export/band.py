"""Band parts for the corpus's melodies: chords (export/harmony.py), a groove of `mma` (Musical MIDI
Accompaniment, Debian's `mma`) that fits the piece's metre, rendered by mma and merged with the melody.

A band piece is one source piece (a folk tune, a chorale, a lead sheet) played by a band in one style: the
melody, re-voiced onto an instrument of the style, plus mma's bass, drums (channel 10) and chords. Times: the
source file's seconds; chords and grooves are laid out in quarter notes through the file's tempo map and metre
(engine.midifile.Conductor), so the band follows the piece's bars, pickup and tempo. docs/corpus.md "Band parts".
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mido
import numpy as np
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, instrument_class
from musebridge.engine.tokens.midifile import Conductor, Note, notes_from_events, read_midi, write_midi

from .harmony import Chord, Metre, bar_slots, beat_slots, chords_from_voices, harmonize, metre_of

log = logging.getLogger(__name__)

MMA_HELP = (
    "band parts need mma (Musical MIDI Accompaniment), which is not installed; install it: on Debian/Ubuntu "
    "`sudo apt-get install mma`, on macOS from https://www.mellowood.ca/mma/"
)
BAND_STYLES = ("folk", "jazz", "pop", "rock", "world")
SOURCE_STYLES = ("folk", "bach", "pop")  # styles whose pieces are melodies a band can play
DRUM_CHANNEL = 9


class BandError(Exception):
    """A piece that gets no band part (its metre has no groove, mma failed ...); the message says why.
    reason: the corpus's skip reason, "no_band" (final) or "timeout" (tried again by the next build)."""

    def __init__(self, message: str, reason: str = "no_band") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class BandConfig:
    """Band parts in a corpus build. limit: melodies that get band parts (None: every one); per_piece: band
    versions per melody, each in another style; sources: styles whose pieces are melodies; mma: the mma
    command; timeout_s: seconds allowed to one mma run."""

    limit: int | None = 2500
    per_piece: int = 1
    sources: tuple[str, ...] = SOURCE_STYLES
    mma: str = "mma"
    timeout_s: float = 60.0


def mma_available(command: str = "mma") -> bool:
    """True when the mma command can be found on the PATH."""
    return shutil.which(command) is not None


@dataclass(frozen=True)
class Groove:
    """An mma groove. family: the metres it plays ("duple": 2/4, 4/4, 2/2 ..., "triple": 3/4 ..., "compound":
    6/8, 12/8 ...); time: mma beats per bar; beat: one mma beat as a share of the piece's beat (1; 1/3 where a
    6/8 groove counts eighths; 2/3 where it counts quarters); use: the library file to load for grooves
    outside mma's stdlib ("casio/pop")."""

    name: str
    style: str
    family: str
    time: int
    beat: float = 1.0
    use: str = ""


def _grooves(style: str, family: str, names: str, time: int, beat: float = 1.0) -> tuple[Groove, ...]:
    out = []
    for name in names.split():
        use, _, groove = name.rpartition(":")
        out.append(Groove(groove, style, family, time, beat, use))
    return tuple(out)


# Which groove plays which metre in which style (read from mma's library: `mma -Djs FILE.mma` lists a file's
# grooves, their tracks and instruments). A 2/4 piece plays a 4-beat groove two bars at a time, 6/8 the
# 12/8 grooves likewise.
GROOVES: tuple[Groove, ...] = (
    *_grooves("folk", "duple", "Folk FolkArticulated BlueGrass CountrySwing Polka SlowCountry", 4),
    *_grooves("folk", "triple", "Waltz CountryWaltz FrenchWaltz", 3),
    *_grooves("folk", "compound", "68March", 2),
    *_grooves("jazz", "duple", "Swing SwingWalk JazzCombo EasySwingWalk SlowJazz2 JazzGuitarWalk", 4),
    *_grooves("jazz", "triple", "JazzWaltz ModernJazzWaltz FastJazzWaltz", 3),
    *_grooves("jazz", "compound", "68Swing 68Swing1", 6, 1 / 3),
    *_grooves("rock", "duple", "BasicRock 60sRock 8Beat BVFunk FolkRock 50sRock Twist casio/funk1:Funk1", 4),
    *_grooves("rock", "triple", "RockWaltz RockWaltzWalk", 3),
    *_grooves("rock", "compound", "Rock128 Blues128", 4),
    *_grooves("rock", "compound", "Blues68", 6, 1 / 3),
    *_grooves("pop", "duple", "PopBallad PopBallad2 SoftRock PianoBallad2 casio/pop:Pop", 4),
    *_grooves("pop", "duple", "casio/8beatpop1:8BeatPop1", 4),
    *_grooves("pop", "triple", "casio/popwaltz:PopWaltz BroadwayWaltz", 3),
    *_grooves("pop", "compound", "Ballad128", 4),
    *_grooves("pop", "compound", "casio/68ballad:68Ballad", 6, 1 / 3),
    *_grooves("world", "duple", "BossaNova Samba Rhumba ChaCha Calypso Mambo Merengue Beguine Son", 4),
    *_grooves("world", "triple", "LatinWaltz", 3),
    *_grooves("world", "compound", "Afro-Cuban", 3, 2 / 3),
)
# General MIDI programs the melody is played on, per style (one chosen per piece):
# folk: fiddle, flute, accordion, harmonica, steel guitar, voice, banjo, whistle;
# jazz: tenor and alto sax, trumpet, vibraphone, piano, jazz guitar, clarinet, muted trumpet;
# rock: overdriven, distortion and clean guitar, saw lead, rock organ, piano, synth voice;
# pop: piano, electric piano, voice, strings, flute, square lead, nylon guitar;
# world: nylon guitar, flute, trumpet, marimba, accordion, alto sax, pan flute, steel drums.
MELODY_PROGRAMS: dict[str, tuple[int, ...]] = {
    "folk": (40, 73, 21, 22, 25, 52, 105, 78),
    "jazz": (66, 65, 56, 11, 0, 26, 71, 59),
    "rock": (29, 30, 27, 81, 18, 0, 54),
    "pop": (0, 4, 53, 48, 73, 80, 24),
    "world": (24, 73, 56, 12, 21, 65, 75, 114),
}
BASS_PROGRAM = {"folk": 32, "jazz": 32, "world": 32, "rock": 33, "pop": 33}  # acoustic / fingered bass


def pick(key: str, n: int) -> int:
    """A deterministic choice among n from a string: sha1 of the key, modulo n."""
    return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) % n


def band_styles(piece_id: str, count: int) -> list[str]:
    """The styles of a melody's band versions: `count` of BAND_STYLES, starting at one chosen by the id."""
    first = pick(piece_id + "/style", len(BAND_STYLES))
    return [BAND_STYLES[(first + i) % len(BAND_STYLES)] for i in range(min(count, len(BAND_STYLES)))]


def fits(groove: Groove, metre: Metre) -> bool:
    """True when the groove's bars line up with the piece's: one, two or more piece bars per mma bar or the
    other way round."""
    if groove.family != metre.family:
        return False
    per_bar = metre.beats / groove.beat  # mma beats per piece bar
    if abs(per_bar - round(per_bar)) > 1e-6:
        return False
    per_bar = round(per_bar)
    return per_bar % groove.time == 0 or groove.time % per_bar == 0


def choose_groove(piece_id: str, style: str, metre: Metre) -> Groove:
    """The groove of a band piece: one of the style's grooves that fit the metre, chosen by the id."""
    choices = [g for g in GROOVES if g.style == style and fits(g, metre)]
    if not choices:
        raise BandError(f"no {style} groove plays {metre.numerator}/{metre.denominator}")
    return choices[pick(piece_id + "/groove", len(choices))]


@dataclass(frozen=True)
class Source:
    """What a band needs from a source piece: its melody notes, the notes that give its chords (another part
    or the other voices; none: harmonize the melody), how they were found, and the file's conductor and end."""

    melody: list[Note]
    harmony: list[Note]
    chords_from: str  # "symbols", "voices" or "melody"
    conductor: Conductor
    end_s: float


def read_source(path: str | os.PathLike) -> Source:
    """Split a corpus .mid into melody and harmony: the melody is the part named soprano, else the highest
    part (by mean pitch) among those with at least half the notes of the busiest; a part named "chords"
    (realized chord symbols) gives the chords, else all parts do when there are three or more, or a second one
    with at least half as many notes as the melody, else the melody alone."""
    midi = read_midi(path)
    notes = notes_from_events(midi.events, midi.end_time)
    notes = [n for n in notes if n.channel != DRUM_CHANNEL and n.end > n.start]
    parts: dict[int, list[Note]] = {}
    for n in notes:
        parts.setdefault(n.channel, []).append(n)
    names = {ch: midi.track_names.get(ch, "").lower() for ch in parts}
    chord_part = next((ch for ch, name in names.items() if name == "chords"), None)
    voices = {ch: p for ch, p in parts.items() if ch != chord_part}
    if not voices:
        raise BandError("no melody (no part with notes)")
    busiest = max(len(p) for p in voices.values())
    soprano = [ch for ch in voices if "soprano" in names[ch]]
    candidates = [ch for ch, p in voices.items() if len(p) >= busiest / 2]
    melody_ch = soprano[0] if soprano else max(candidates, key=lambda ch: np.mean([n.pitch for n in voices[ch]]))
    melody = voices[melody_ch]
    if chord_part is not None:
        harmony, how = parts[chord_part], "symbols"
    elif len(voices) >= 3 or (len(voices) == 2 and sum(len(p) for p in voices.values()) > 1.5 * len(melody)):
        harmony, how = [n for p in voices.values() for n in p], "voices"
    else:
        harmony, how = melody, "melody"
    end_s = max(n.end for n in melody)
    return Source(melody, harmony, how, midi.conductor, end_s)


def as_quarters(notes: list[Note], conductor: Conductor) -> np.ndarray:
    """Notes as an (n, 3) array: start and end in quarter notes (through the tempo map), pitch."""
    return np.array([(conductor.quarters_at(n.start), conductor.quarters_at(n.end), n.pitch) for n in notes],
                    dtype=float).reshape(-1, 3)


@dataclass(frozen=True)
class Layout:
    """Where the band plays, in the piece's quarter notes: the piece's full bars of its metre, as (start, end)
    spans, up to `end` (where the melody ends). Shorter bars are left to the melody: a pickup, and the partial
    bars some tunes carry at a repeat; the band's bars are laid end to end over the full ones."""

    end: float
    metre: Metre
    bars: tuple[tuple[float, float], ...]

    @property
    def start(self) -> float:
        return self.bars[0][0]

    def beats(self, beat_q: float) -> int:
        """Beats of beat_q quarter notes the band plays."""
        return math.ceil(((len(self.bars) - 1) * self.metre.bar_q + self.bars[-1][1] - self.bars[-1][0]) / beat_q
                         - 1e-6)

    def piece_quarters(self, band_q: float) -> float:
        """The piece's quarter note at `band_q` quarter notes of the band (counted over full bars only)."""
        k = min(max(math.floor(band_q / self.metre.bar_q + 1e-9), 0), len(self.bars) - 1)
        return self.bars[k][0] + band_q - k * self.metre.bar_q


def layout(source: Source) -> Layout:
    """The band's bars and metre: the metre that fills most of the piece; BandError when it has no groove or
    when, after a pickup, the piece has bars of another metre that are not short (each at most half a bar, in
    all at most 10% of the piece)."""
    bars = source.conductor.bars(source.end_s)
    end = source.conductor.quarters_at(source.end_s)
    starts = [source.conductor.quarters_at(t) for t, _, _ in bars] + [end]
    length: dict[tuple[int, int], float] = {}
    for (_, n, d), q, q_next in zip(bars, starts, starts[1:], strict=False):
        length[(n, d)] = length.get((n, d), 0.0) + q_next - q
    if not length:
        raise BandError("no bars")
    main = max(length, key=lambda sig: length[sig])
    metre = metre_of(*main)
    if metre is None:
        raise BandError(f"no groove plays {main[0]}/{main[1]}")
    pickup = 4 * bars[0][1] / bars[0][2] < metre.bar_q - 1e-6
    odd = [(n, d) for _, n, d in bars[int(pickup):] if (n, d) != main]
    odd_q = sum(4 * n / d for n, d in odd)
    others = set(odd) | ({tuple(bars[0][1:])} if pickup else set())
    if any(4 * n / d > metre.bar_q / 2 + 1e-6 for n, d in odd) or odd_q > 0.1 * sum(length.values()):
        listed = ", ".join(f"{n}/{d}" for n, d in sorted(others | {main}))
        raise BandError(f"the metre changes ({listed}); a groove keeps one metre")
    spans = tuple((q, min(q + metre.bar_q, end)) for (_, n, d), q in zip(bars, starts, strict=False)
                  if (n, d) == main and q < end - 1e-6)
    if not spans:
        raise BandError("the melody ends before its first full bar")
    return Layout(end, metre, spans)


def chord_timeline(source: Source, lay: Layout) -> list[tuple[float, float, Chord | None]]:
    """(start, end, chord) spans in quarter notes over the band's bars: from the chord part or the voices per
    beat, else the harmonizer per bar or half bar (half bars where a bar has an even number of beats)."""
    metre = lay.metre
    if source.chords_from == "melody":
        slots = bar_slots(list(lay.bars), halves=metre.beats % 2 == 0)
        chords: list[Chord | None] = list(harmonize(as_quarters(source.melody, source.conductor), slots,
                                                    beat_q=metre.beat_q))
    else:
        slots = beat_slots(list(lay.bars), metre.beat_q)
        chords = chords_from_voices(as_quarters(source.harmony, source.conductor), slots, metre.beat_q)
    return [(s.start, s.end, c) for s, c in zip(slots, chords, strict=True)]


def mma_text(piece_id: str, groove: Groove, lay: Layout, timeline, tempo_qpm: float) -> str:
    """An mma song: the groove, the tempo in mma beats per minute, and one line of chords per mma bar (one
    chord or "/" per beat), over the band's bars."""
    beat_q = lay.metre.beat_q * groove.beat  # one mma beat in quarter notes
    starts = np.array([s for s, _, _ in timeline])
    lines = [f"// {piece_id}: {groove.name}", f"RndSeed {pick(piece_id + '/seed', 1_000_000)}"]
    lines += [f"Use {groove.use}"] if groove.use else []
    lines += [f"Groove {groove.name}", f"Tempo {tempo_qpm / beat_q:.2f}"]
    for bar in range(math.ceil(lay.beats(beat_q) / groove.time)):
        words, previous = [], None
        for beat in range(groove.time):
            q = lay.piece_quarters((bar * groove.time + beat) * beat_q) + 1e-6
            chord = timeline[max(0, int(np.searchsorted(starts, q, side="right")) - 1)][2]
            name = chord.name if chord is not None else "z"
            words.append("/" if name == previous else name)
            previous = name
        lines.append(" ".join(words))
    return "\n".join(lines) + "\n"


def run_mma(text: str, config: BandConfig):
    """Run mma on a song text in a temporary folder; its MIDI file as engine.midifile.MidiEvents."""
    with tempfile.TemporaryDirectory(prefix="musebridge-mma-") as tmp:
        song, out = Path(tmp) / "band.mma", Path(tmp) / "band.mid"
        song.write_text(text)
        bars = text.count("\n") + 10
        command = [config.mma, "-f", str(out), "-m", str(bars), str(song)]
        try:
            proc = subprocess.run(command, cwd=tmp, capture_output=True, text=True, timeout=config.timeout_s)
        except FileNotFoundError:
            raise BandError(MMA_HELP) from None
        except subprocess.TimeoutExpired:
            raise BandError(f"mma took more than {config.timeout_s:.0f} s", "timeout") from None
        if proc.returncode != 0 or not out.is_file():
            said = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines() if "Error" in ln]
            raise BandError(f"mma failed: {(said or ['exit status ' + str(proc.returncode)])[-1][:200]}")
        return read_midi(out)


ROLES = {"chord": "chords", "plectrum": "chords", "arpeggio": "arpeggio", "scale": "scale", "solo": "solo",
         "melody": "solo", "bass": "bass", "walk": "bass"}
KEPT_CONTROLS = (7, 10, 91, 93)  # volume, pan, reverb, chorus: mma's mix, which produces no tokens


def _band_parts(band, style: str) -> tuple[dict[int, int], dict[int, int], dict[int, str]]:
    """For mma's channels: the channel each gets in the band piece (drums stay on 10, the others take 2, 3 ...
    after the melody's 1), its program, and its track name. A bass or walking-bass track below E3 on average
    is the bass line and plays a bass program; other bass-type tracks (a guitar or strings figure) keep theirs."""
    notes = notes_from_events(band.events, band.end_time)
    programs: dict[int, int] = {}
    for _, msg in band.events:
        if msg.type == "program_change":
            programs.setdefault(msg.channel, msg.program)
    used = sorted({n.channel for n in notes})
    free = iter(ch for ch in range(1, 16) if ch != DRUM_CHANNEL)
    channels, names = {}, {}
    for ch in used:
        if ch == DRUM_CHANNEL:
            channels[ch], names[DRUM_CHANNEL] = DRUM_CHANNEL, "drums"
            continue
        channels[ch] = next(free)
        kind = ROLES.get(band.track_names.get(ch, "chord").split("-")[0].lower(), "chords")
        program = programs.get(ch, 0)
        if kind == "bass" and np.mean([n.pitch for n in notes if n.channel == ch]) < 52:
            program = program if 32 <= program <= 39 else BASS_PROGRAM[style]
            names[channels[ch]] = "bass"
        else:
            kind = "line" if kind == "bass" else kind
            names[channels[ch]] = f"{kind} ({INSTRUMENT_NAMES[instrument_class(program, 0)]})"
        programs[ch] = program
    return channels, {channels[ch]: programs.get(ch, 0) for ch in used if ch != DRUM_CHANNEL}, names


def merge(source: Source, band, lay: Layout, groove: Groove, style: str, melody_program: int):
    """The band piece's events (seconds of the source) and track names: the melody on channel 1 with its new
    program, mma's parts after it, cut where the melody ends; every note released (each note is written as a
    note-on and its note-off)."""
    beat_q = lay.metre.beat_q * groove.beat

    def at(t: float) -> float:
        return source.conductor.seconds_at(lay.piece_quarters(band.conductor.quarters_at(t) * beat_q))

    channels, programs, names = _band_parts(band, style)
    programs[0] = melody_program
    names[0] = f"melody ({INSTRUMENT_NAMES[instrument_class(melody_program, 0)]})"
    items = [(0.0, 0, mido.Message("program_change", channel=ch, program=p)) for ch, p in programs.items()]
    for _, msg in band.events:  # mma's channel mix; its times matter little, so they stay at the start
        if msg.type == "control_change" and msg.control in KEPT_CONTROLS and msg.channel in channels:
            items.append((0.0, 1, msg.copy(channel=channels[msg.channel])))
    notes = [(n.start, n.end, n.pitch, n.velocity, 0) for n in source.melody]
    for n in notes_from_events(band.events, band.end_time):
        start, end = at(n.start), min(at(n.end), source.end_s)
        if n.channel in channels and start < source.end_s - 1e-3 and end > start:
            notes.append((start, end, n.pitch, n.velocity, channels[n.channel]))
    for start, end, pitch, velocity, ch in notes:
        items.append((start, 3, mido.Message("note_on", channel=ch, note=pitch, velocity=velocity)))
        items.append((end, 2, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
    items.sort(key=lambda item: (item[0], item[1]))
    return [Timed(t, msg) for t, _, msg in items], names


def render_band(source_path: str | os.PathLike, target: str | os.PathLike, piece_id: str, style: str,
                config: BandConfig) -> Groove:
    """Write the band piece `piece_id` in `style` for the corpus .mid at source_path to target (atomically):
    chords, groove, mma, merge. Returns the groove; raises BandError when the piece gets no band part."""
    source = read_source(source_path)
    lay = layout(source)
    groove = choose_groove(piece_id, style, lay.metre)
    timeline = chord_timeline(source, lay)
    if all(chord is None for _, _, chord in timeline):
        raise BandError("no chords found")
    tempo_qpm = 60.0 / (source.conductor.seconds_at(lay.start + 1.0) - source.conductor.seconds_at(lay.start))
    band = run_mma(mma_text(piece_id, groove, lay, timeline, tempo_qpm), config)
    programs = MELODY_PROGRAMS[style]
    events, names = merge(source, band, lay, groove, style, programs[pick(piece_id + "/melody", len(programs))])
    write_midi(events, target, ticks_per_beat=960, track_names=names, conductor=source.conductor)
    log.debug("%s: %s groove, chords from the %s", piece_id, groove.name, source.chords_from)
    return groove
