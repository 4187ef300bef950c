"""What goes into the corpus: the music21 corpus folders (with a style and a default instrument each) and user
MIDI folders, enumerated as a sorted list of pieces with stable, filesystem-safe ids.

A piece is one file, or one tune of a multi-tune ABC file. Nothing here parses music; conversion is in
export/corpus_convert.py. See docs/corpus.md for the tables below in prose.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from musebridge.engine.tokens import vocab as V

log = logging.getLogger(__name__)

# Formats music21 parses into notes, best first: when one work exists in several formats, the first wins.
# .rntxt (Roman-numeral analyses), .mus / .musx (binary Finale / SCORE) and images are never read.
FORMATS = (".mxl", ".musicxml", ".xml", ".krn", ".abc")
MIDI_SUFFIXES = (".mid", ".midi", ".kar")


@dataclass(frozen=True)
class Source:
    """One folder (or file) of the music21 corpus.

    name: short id prefix of its pieces (within the style); "" uses the folder path.
    style: the style token (one of vocab.STYLES).
    path: folder or single file, relative to music21's corpus folder.
    kind: "file" (one piece per file), "tunes" (a multi-tune ABC file: one piece per X: tune),
          "voices" (an ABC file whose X: tunes are the voices of one piece: merged into one score).
    instrument: instrument class for parts that name no instrument.
    trust_instruments: use music21's instrument objects (False where editors left placeholders, e.g. the
          vocal repertoire encoded with a piano or saxophone default).
    chords: realize chord symbols as a guitar accompaniment part.
    """

    name: str
    style: str
    path: str
    kind: str = "file"
    instrument: str = "piano"
    trust_instruments: bool = True
    chords: bool = False


def _vocal(name: str, style: str, path: str, kind: str = "file") -> Source:
    return Source(name, style, path, kind, "voice", trust_instruments=False)


SOURCES: tuple[Source, ...] = (
    _vocal("", "bach", "bach"),
    _vocal("", "palestrina", "palestrina"),
    _vocal("trecento", "renaissance", "trecento"),
    _vocal("josquin", "renaissance", "josquin", kind="voices"),
    _vocal("ciconia", "renaissance", "ciconia"),
    _vocal("luca", "renaissance", "luca"),
    _vocal("lusitano", "renaissance", "lusitano"),
    _vocal("", "monteverdi", "monteverdi"),
    Source("beethoven", "classical", "beethoven"),
    Source("mozart", "classical", "mozart"),
    Source("haydn", "classical", "haydn"),
    Source("schubert", "classical", "schubert"),
    Source("cpebach", "classical", "cpebach"),
    Source("handel", "baroque", "handel"),
    Source("corelli", "baroque", "corelli", instrument="strings"),
    Source("chopin", "romantic", "chopin"),
    Source("clara", "romantic", "schumann_clara"),
    Source("schumann", "romantic", "schumann_robert"),
    Source("verdi", "romantic", "verdi"),
    Source("weber", "romantic", "weber"),
    Source("beach", "romantic", "beach"),
    Source("joplin", "romantic", "joplin"),
    Source("liliuokalani", "romantic", "liliuokalani"),
    Source("johnson", "romantic", "johnson_j_r"),
    Source("schoenberg", "modern", "schoenberg"),
    Source("webern", "modern", "webern", instrument="voice"),
    Source("leadsheet", "pop", "leadSheet", instrument="voice", chords=True),
    # Folk melodies: one instrument per collection, chosen for how the tunes were played (docs/corpus.md).
    Source("essen", "folk", "essenFolksong", "tunes", "voice"),  # German (and other) folk songs: sung
    Source("oneills", "folk", "oneills1850", "tunes", "pipe"),  # Irish dance tunes: flute / whistle
    Source("ryans", "folk", "ryansMammoth", "file", "strings", chords=True),  # fiddle tunes
    Source("airds", "folk", "airdsAirs", "tunes", "pipe"),  # Scottish airs for fife / flute / violin
    Source("fife", "folk", "miscFolk/americanfifeopus.abc", "tunes", "pipe"),
    Source("northumbrian", "folk", "miscFolk/northumbrianminstrelsyopus.abc", "tunes", "reed"),  # smallpipes
    Source("nottingham", "folk", "nottingham-dataset", "tunes", "strings", chords=True),
)


@dataclass(frozen=True)
class PieceSpec:
    """One piece to convert. path: absolute file path; tune: 1-based ordinal of the X: tune in a multi-tune
    ABC file (None for whole files); kind: "music21", "midi" or "band" (band parts over the corpus piece
    whose .mid is at path, export/band.py); source: what the index records as its origin; split_key: the id
    that decides the piece's split ("": its own id; a band piece: its source piece's id)."""

    id: str
    style: str
    source: str
    path: str
    kind: str = "music21"
    tune: int | None = None
    instrument: str = "piano"
    trust_instruments: bool = True
    chords: bool = False
    merge_voices: bool = False
    split_key: str = ""


def safe(text: str) -> str:
    """A filesystem-safe id fragment: letters, digits, '.', '_' and '-' only."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text.strip()).strip("._")
    return text or "x"


def music21_corpus_dir() -> Path:
    """The folder of music21's bundled corpus (imports music21)."""
    import music21  # noqa: PLC0415 - heavy import, only when the corpus is built

    return Path(music21.__file__).parent / "corpus"


def _music_files(folder: Path) -> list[Path]:
    """Parsable files under `folder`, one per work (best format wins), '_old' drafts left out."""
    best: dict[Path, Path] = {}
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in FORMATS or not path.is_file() or path.stem.endswith("_old"):
            continue
        stem = path.with_suffix("")
        if stem not in best or FORMATS.index(path.suffix.lower()) < FORMATS.index(best[stem].suffix.lower()):
            best[stem] = path
    return sorted(best.values())


def count_tunes(path: Path) -> int:
    """Number of X: tunes in an ABC file."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return sum(1 for line in fh if line.startswith("X:"))


def tune_text(path: str | Path, ordinal: int) -> str:
    """The ABC text of tune `ordinal` (1-based, in file order) with the file header (lines before the first
    X:) prepended. Raises ValueError when the file has fewer tunes."""
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("X:")]
    if not 1 <= ordinal <= len(starts):
        raise ValueError(f"{path}: no tune number {ordinal} (the file has {len(starts)})")
    begin = starts[ordinal - 1]
    end = starts[ordinal] if ordinal < len(starts) else len(lines)
    return "\n".join(lines[: starts[0]] + lines[begin:end]) + "\n"


def _piece_id(source: Source, rel: Path, style: str) -> str:
    parts = list(rel.with_suffix("").parts)
    if source.name:
        parts = [source.name] + parts[1:]  # the collection name replaces the folder name
    elif parts and parts[0] == style:
        parts = parts[1:]
    return "-".join([style] + [safe(p) for p in parts])


def source_pieces(source: Source, corpus: Path) -> list[PieceSpec]:
    """The pieces of one source, sorted by id."""
    target = corpus / source.path
    if not target.exists():
        log.warning("music21 corpus has no %s; skipping it", source.path)
        return []
    files = [target] if target.is_file() else _music_files(target)
    common = dict(
        style=source.style,
        instrument=source.instrument,
        trust_instruments=source.trust_instruments,
        chords=source.chords,
    )
    pieces = []
    for path in files:
        rel = path.relative_to(corpus)
        base = _piece_id(source, rel, source.style)
        if source.kind == "tunes" and path.suffix == ".abc":
            for n in range(1, count_tunes(path) + 1):
                pieces.append(
                    PieceSpec(f"{base}-{n:04d}", source=f"{rel.as_posix()}#{n}", path=str(path), tune=n, **common)
                )
        else:
            pieces.append(
                PieceSpec(
                    base, source=rel.as_posix(), path=str(path), merge_voices=source.kind == "voices", **common
                )
            )
    return sorted(pieces, key=lambda p: p.id)


def music21_pieces(styles: tuple[str, ...] | None = None) -> list[PieceSpec]:
    """Every piece of the music21 sources whose style is in `styles` (all when None), grouped by source."""
    corpus = music21_corpus_dir()
    out = []
    for source in SOURCES:
        if styles is None or source.style in styles:
            out += source_pieces(source, corpus)
    return out


def midi_style(folder_name: str | None) -> str:
    """Style of a user MIDI file from its top-level sub-folder name: a vocab style name (any case) is that
    style; files directly in the folder, or in a folder named otherwise, get "unknown"."""
    if folder_name is None:
        return "unknown"
    name = folder_name.lower()
    return name if name in V.STYLES else "unknown"


def midi_pieces(folder: str | Path) -> list[PieceSpec]:
    """The MIDI files under `folder` (recursively), style from the first sub-folder, sorted by id.
    Ids: ``midi-<style>-<file stem>-<8 hex digits of sha1(relative path)>``, stable while files stay put."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder of MIDI files; check the --midi path")
    pieces, warned = [], set()
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in MIDI_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(root)
        top = rel.parts[0] if len(rel.parts) > 1 else None
        style = midi_style(top)
        if top is not None and style == "unknown" and top.lower() != "unknown" and top not in warned:
            warned.add(top)
            log.warning(
                "%s: folder %r is not a style; its files get style 'unknown' (rename it to one of: %s)",
                root,
                top,
                ", ".join(V.STYLES),
            )
        digest = hashlib.sha1(rel.as_posix().encode()).hexdigest()[:8]
        piece_id = f"midi-{style}-{safe(path.stem)[:60]}-{digest}"
        pieces.append(PieceSpec(piece_id, style, source=str(path), path=str(path), kind="midi"))
    return sorted(pieces, key=lambda p: p.id)


def interleave_limit(pieces: list[PieceSpec], limit: int | None) -> list[PieceSpec]:
    """At most `limit` pieces per style, taken round-robin across each style's sources (so a small limit
    still samples every collection); all pieces when limit is None. Deterministic."""
    if limit is None:
        return pieces
    by_style: dict[str, dict[str, list[PieceSpec]]] = {}
    for p in pieces:
        group = p.source.split("/")[0] if p.kind == "music21" else "midi"
        by_style.setdefault(p.style, {}).setdefault(group, []).append(p)
    chosen = []
    for groups in by_style.values():
        queues = [list(g) for _, g in sorted(groups.items())]
        taken = 0
        while taken < limit and any(queues):
            for q in queues:
                if q and taken < limit:
                    chosen.append(q.pop(0))
                    taken += 1
    return chosen
