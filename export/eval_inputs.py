"""What `musebridge eval` scores: a corpus split, or MIDI files and folders, as written or played live-like.

Every input becomes a TokenData (export/dataset.py) whose pieces are a conditioning prefix, the events and EOS,
exactly as the corpus build writes them (engine.midifile.encode_file, then EOS). A file that cannot be used
(corrupt, empty, without notes) is named through `skip` and left out.

Live-like: the piece is played on piano by the rule-based performer (export/perform.py `perform_file`, with a
seed drawn from the piece's name, so a piece is always played the same way) and the performance is encoded with
engine.codec.EventEncoder, as encode_file encodes a file's messages.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from musebridge.engine.errors import EngineError
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import EventEncoder
from musebridge.engine.tokens.midifile import encode_file

from .dataset import TokenData, load_split, piece_source
from .errors import ExportError

log = logging.getLogger(__name__)

MIDI_SUFFIXES = (".mid", ".midi")


class NoInput(ExportError):
    """Nothing usable to score (no corpus split, or no usable MIDI file)."""


def _log_skip(message: str) -> None:
    log.warning("%s", message)


def piece_seed(name: str) -> int:
    """The performer's seed for a piece: a stable function of its name (32 bits of sha1)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:4], "big")


def subset(data: TokenData, limit: int | None) -> TokenData:
    """The first `limit` pieces of a split (all when limit is None)."""
    if limit is None or limit >= len(data):
        return data
    end = int(data.offsets[limit])
    return TokenData(data.tokens[:end], data.offsets[: limit + 1], data.ids[:limit], data.styles[:limit])


def of_sources(data: TokenData, sources: Sequence[str]) -> TokenData:
    """The pieces of `data` from these sources (dataset.piece_source); all of them when `sources` is empty.
    NoInput when none is left."""
    if not sources:
        return data
    keep = [i for i, (pid, style) in enumerate(zip(data.ids, data.styles, strict=True))
            if piece_source(pid, style) in sources]
    if not keep:
        raise NoInput(f"no {' or '.join(sources)} pieces in the split; choose other --sources")
    return from_pieces([data.piece(i) for i in keep], [data.ids[i] for i in keep], [data.styles[i] for i in keep])


def from_pieces(pieces: Sequence[Sequence[int]], ids: Sequence[str], styles: Sequence[str]) -> TokenData:
    """A TokenData in memory from token sequences."""
    offsets = np.concatenate(([0], np.cumsum([len(p) for p in pieces]))).astype(np.int64)
    tokens = np.concatenate([np.asarray(p, np.int64) for p in pieces]) if pieces else np.zeros(0, np.int64)
    return TokenData(tokens, offsets, tuple(ids), tuple(styles))


def find_midi(paths: Sequence[str], skip: Callable[[str], None]) -> list[tuple[Path, str]]:
    """(path, name) of every MIDI file among `paths`: files as given, folders searched recursively (sorted).
    The name is the file's path inside the folder given (its own name for a file given directly)."""
    found = []
    for given in map(Path, paths):
        if given.is_dir():
            files = sorted(p for p in given.rglob("*") if p.is_file() and p.suffix.lower() in MIDI_SUFFIXES)
            if not files:
                skip(f"{given}: no .mid or .midi files in this folder")
            found += [(p, str(p.relative_to(given))) for p in files]
        elif given.is_file():
            found.append((given, given.name))
        else:
            skip(f"{given}: no such file or folder")
    return found


def live_like_tokens(path: str | Path, style: str, seed: int) -> tuple[list[int], int]:
    """(tokens, note-ons) of a piece played live-like on piano: prefix, events, EOS."""
    from .perform import perform_file

    encoder = EventEncoder()
    events: list[int] = []
    for time_s, msg in perform_file(path, seed=seed):
        events += encoder.feed(time_s, msg)
    events += encoder.finish()
    return V.conditioning(style, sorted(encoder.instruments)) + events + [V.EOS], encoder.notes


def _encode(path: Path, name: str, style: str, live_like: bool) -> tuple[list[int], int]:
    if live_like:
        return live_like_tokens(path, style, piece_seed(name))
    encoded = encode_file(path, style)
    return list(encoded.tokens) + [V.EOS], encoded.notes


def file_pieces(paths: Sequence[str], style: str = "unknown", limit: int | None = None, live_like: bool = False,
                skip: Callable[[str], None] = _log_skip) -> TokenData:
    """The usable MIDI files among `paths` (at most `limit`), encoded with `style`; NoInput if there is none."""
    V.style_token(style)  # ValueError naming the styles
    pieces, ids = [], []
    for path, name in find_midi(paths, skip):
        if limit is not None and len(pieces) >= limit:
            break
        try:
            tokens, notes = _encode(path, name, style, live_like)
        except EngineError as exc:  # MidiFileError names the file and the problem
            skip(str(exc))
            continue
        if notes == 0:
            skip(f"{path}: no notes to score")
            continue
        pieces.append(tokens)
        ids.append(str(path))
    if not pieces:
        raise NoInput(f"no usable MIDI file in {', '.join(map(str, paths))}; "
                      "give .mid files or folders holding them")
    return from_pieces(pieces, ids, [style] * len(pieces))


def corpus_pieces(root: str | Path, split: str, limit: int | None = None, live_like: bool = False,
                  skip: Callable[[str], None] = _log_skip) -> TokenData:
    """A corpus split's first `limit` pieces; on request its notated pieces played live-like from
    <root>/midi/<style>/<id>.mid (band pieces are left out: mma already played them, as a band, not on piano)."""
    if not (Path(root) / "tokens" / f"{split}.npy").is_file():
        raise NoInput(f"no corpus split {split!r} in {root}: build one with `musebridge corpus build`, pass "
                      "--data DIR, or give MIDI files or folders to score")
    data = subset(load_split(root, split), limit)
    if not live_like:
        return data
    pieces, ids, styles = [], [], []
    band = sum(piece_source(pid, style) == "band" for pid, style in zip(data.ids, data.styles, strict=True))
    if band:
        log.info("live-like: %d band pieces left out (already played, by mma's band)", band)
    for piece_id, style in zip(data.ids, data.styles, strict=True):
        if piece_source(piece_id, style) == "band":
            continue
        path = Path(root) / "midi" / style / f"{piece_id}.mid"
        if not path.is_file():
            skip(f"{path}: missing (run `musebridge corpus build` to restore the corpus's MIDI files)")
            continue
        try:
            tokens, _ = live_like_tokens(path, style, piece_seed(piece_id))
        except EngineError as exc:
            skip(str(exc))
            continue
        pieces.append(tokens)
        ids.append(piece_id)
        styles.append(style)
    if not pieces:
        raise NoInput(f"no piece of split {split!r} could be read from {Path(root) / 'midi'}; "
                      "run `musebridge corpus build` again")
    return from_pieces(pieces, ids, styles)
