"""The material the judge measures on: held-out pieces, cut into a prompt and its real continuation, and split
into a melody and its real accompaniment; each as notated and as played live-like on piano.

Pieces come from the corpus test split (`<root>/midi/<style>/<id>.mid` whose id export.corpus.split_of puts in
"test"), taken style by style in turn so every style is represented, or from MIDI files and folders given by the
user. Times are seconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from musebridge.engine.errors import MidiFileError
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.instruments import DRUM_CHANNEL
from musebridge.engine.tokens.midifile import Conductor, Note, notes_from_events, read_midi, release_held

from ..errors import ExportError

log = logging.getLogger(__name__)

NOTATED, LIVE = "notated", "live-like"
RENDERINGS = (NOTATED, LIVE)
MIN_SPAN_S = 4.0  # a prompt or continuation shorter than this says too little; such a piece is skipped


@dataclass(frozen=True)
class Source:
    """A piece on disk: its id, the style token it is generated with, and its file."""

    id: str
    style: str
    path: Path


@dataclass(frozen=True)
class Piece:
    """A piece as rendered: all its messages (seconds), its conductor (bar lines; empty when the timing is a
    performance's), and where the prompt ends and the continuation ends."""

    source: Source
    rendering: str
    events: tuple[Timed, ...]
    conductor: Conductor
    prompt_end: float
    end: float

    @property
    def notes(self) -> list[Note]:
        return notes_from_events(self.events)

    def prompt_events(self) -> list[Timed]:
        """The messages before prompt_end, with the notes still sounding there ended at prompt_end."""
        return crop(self.events, 0.0, self.prompt_end)

    def prompt_notes(self) -> list[Note]:
        return notes_from_events(self.prompt_events(), self.prompt_end)

    def continuation_notes(self) -> list[Note]:
        """The real continuation: notes starting in [prompt_end, end), with their real durations."""
        return [n for n in self.notes if self.prompt_end <= n.start < self.end]


@dataclass(frozen=True)
class Duet:
    """A melody (the player's part) and its real accompaniment (the other parts), over [0, end) seconds."""

    source: Source
    rendering: str
    melody: tuple[Timed, ...]
    accompaniment: tuple[Note, ...]
    conductor: Conductor
    end: float

    @property
    def melody_notes(self) -> list[Note]:
        return notes_from_events(self.melody)


def crop(events: Iterable[Timed], start: float, end: float) -> list[Timed]:
    """Messages in [start, end) seconds, shifted to start at 0; notes sounding at `end` end there."""
    return release_held([Timed(t - start, m) for t, m in events if start <= t < end], end - start)


def corpus_sources(root: str | os.PathLike, split: str, seed: int = 0) -> dict[str, list[Source]]:
    """The corpus's pieces of one split by style token (band folders join their style), each style's order
    shuffled by `seed`."""
    from ..corpus import split_of  # noqa: PLC0415 - only here: the corpus module reads the index

    midi = Path(root) / "midi"
    if not midi.is_dir():
        raise ExportError(f"{root}: no corpus here (no midi/ folder); build it with `musebridge corpus build` "
                          "or give MIDI files to judge")
    by_style: dict[str, list[Source]] = {}
    for folder in sorted(p for p in midi.iterdir() if p.is_dir()):
        style = style_token(folder.name)
        for path in sorted(folder.glob("*.mid")):
            if split_of(path.stem) == split:
                by_style.setdefault(style, []).append(Source(path.stem, style, path))
    rng = random.Random(seed)
    for sources in by_style.values():
        rng.shuffle(sources)
    return by_style


def interleave(groups: Iterable[list[Source]]) -> list[Source]:
    """One source of each group in turn: the first of every group, then the second, ..."""
    groups = list(groups)
    out: list[Source] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out += [g[i] for g in groups if i < len(g)]
    return out


def file_sources(paths: Sequence[str | os.PathLike], style: str = "unknown") -> list[Source]:
    """MIDI files, and the .mid/.midi files under folders, in name order."""
    found: list[Source] = []
    for given in map(Path, paths):
        if given.is_dir():
            files = sorted(p for p in given.rglob("*") if p.suffix.lower() in (".mid", ".midi") and p.is_file())
        elif given.exists():
            files = [given]
        else:
            raise ExportError(f"{given}: no such file or folder; check the path")
        found += [Source(p.stem, style, p) for p in files]
    return found


def style_token(name: str) -> str:
    """The style token for a corpus folder name ("band-jazz" -> "jazz"); unknown names give "unknown"."""
    name = name.lower().removeprefix("band-")
    return name if name in V.STYLES else "unknown"




def piece_seed(piece_id: str, seed: int) -> int:
    """A stable per-piece seed: the same piece is performed the same way in every run with the same seed."""
    return int(hashlib.sha1(f"{seed}:{piece_id}".encode()).hexdigest()[:8], 16)


def read_source(source: Source):
    try:
        return read_midi(source.path)
    except MidiFileError as exc:
        log.warning("skipped %s", exc)
        return None


def perform(events: Sequence[Timed], conductor: Conductor, piece_id: str, seed: int) -> list[Timed]:
    """The events played live-like on piano by the project's performer (export/perform.py)."""
    from ..perform import perform as render  # noqa: PLC0415 - the performer is only needed for live-like prompts

    return render(list(events), conductor, seed=piece_seed(piece_id, seed))


def rendered_notes(source: Source, seed: int) -> list[list[Note]]:
    """The notes of a whole source in each of RENDERINGS (as notated, as performed live-like); [] when
    unreadable."""
    midi = read_source(source)
    if midi is None:
        return []
    performed = perform(midi.events, midi.conductor, source.id, seed)
    return [notes_from_events(midi.events if r == NOTATED else performed) for r in RENDERINGS]


def piece(source: Source, rendering: str, prompt_s: float, continuation_s: float, seed: int) -> Piece | None:
    """A source cut into prompt and continuation (each shortened to half the piece when it is short); None when
    the piece is unreadable or too short to say anything."""
    midi = read_source(source)
    if midi is None:
        return None
    events, conductor = list(midi.events), midi.conductor
    if rendering == LIVE:
        events, conductor = perform(events, conductor, source.id, seed), Conductor()
    notes = notes_from_events(events)
    if not notes:
        return None
    length = max(n.end for n in notes)
    prompt_end = min(prompt_s, length / 2)
    end = min(prompt_end + continuation_s, length)
    if prompt_end < MIN_SPAN_S or end - prompt_end < MIN_SPAN_S:
        return None
    return Piece(source, rendering, tuple(events), conductor, prompt_end, end)


def duet(source: Source, rendering: str, seconds: float, seed: int) -> Duet | None:
    """The piece's highest part (by mean pitch) as the melody over its first `seconds`, the other pitched parts
    as its real accompaniment; None for a piece with one part. Live-like: the melody is performed on piano, the
    accompaniment stays notated (the performer renders one part at a time, so two renderings would not align)."""
    midi = read_source(source)
    if midi is None:
        return None
    notes = [n for n in notes_from_events(midi.events) if n.start < seconds and n.channel != DRUM_CHANNEL]
    channels = sorted({n.channel for n in notes})
    if len(channels) < 2:
        return None
    top = max(channels, key=lambda c: sum(n.pitch for n in notes if n.channel == c)
              / max(1, sum(1 for n in notes if n.channel == c)))
    melody = [Timed(t, m) for t, m in crop(midi.events, 0.0, seconds) if getattr(m, "channel", -1) == top]
    accompaniment = tuple(n for n in notes if n.channel != top)
    end = min(seconds, max(n.end for n in notes))
    if end < MIN_SPAN_S or len(melody) < 4:
        return None
    conductor = midi.conductor
    if rendering == LIVE:
        melody, conductor = perform(melody, conductor, source.id, seed), Conductor()
    return Duet(source, rendering, tuple(melody), accompaniment, conductor, end)
