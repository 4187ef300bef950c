"""The training corpus on disk: build it (music21 corpus and MIDI folders -> .mid files + token arrays), load
a split, summarize it. Format (docs/corpus.md; other modules code against it, keep it exact):

    <root>/midi/<style>/<piece_id>.mid      one file per piece, written atomically
    <root>/index.jsonl                      one JSON object per piece, sorted by id: id, style, split, path
                                            (relative to root), source, notes, seconds, tokens, instruments
    <root>/tokens/<split>.npy               uint16: every piece's tokens (prefix + events + EOS), index order
    <root>/tokens/<split>.offsets.npy       int64, pieces + 1 offsets into <split>.npy
    <root>/tokens/<split>.json              {"ids": [...], "styles": [...]} aligned with the offsets
    <root>/skipped.jsonl                    pieces left out, with the reason (parse error, empty, too long ...)
    <root>/manifest.json                    what the last build did (selection, counts, vocabulary, time)

Splits are by piece: sha1(piece id) -> 90% train, 5% valid, 5% test (split_of); a band piece (band parts over
a melody, <root>/midi/band-<style>/) takes its source piece's split. A re-run skips finished pieces (their .mid
exists) and known failures, so an interrupted build completes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from musebridge.engine.files import atomic_write
from musebridge.engine.tokens import vocab as V

from .band import MMA_HELP, band_styles, mma_available
from .corpus_build import BuildConfig, PieceResult, piece_path, run_pieces
from .corpus_sources import PieceSpec, interleave_limit, midi_pieces, music21_pieces

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
RETRYABLE = ("timeout", "duplicate")  # skip reasons that a re-run tries again


class CorpusError(Exception):
    """A corpus folder that is missing or incomplete. The message names the folder and the fix."""


def default_root() -> Path:
    """$MUSEBRIDGE_DATA/corpus when MUSEBRIDGE_DATA is set, else data/corpus under the current folder."""
    data = os.environ.get("MUSEBRIDGE_DATA")
    return Path(data) / "corpus" if data else Path("data") / "corpus"


def codec_fingerprint() -> str:
    """sha1 of the engine code that turns .mid files into tokens (codec, MIDI reader, vocabulary, instruments):
    token files made with another fingerprint may be stale."""
    from musebridge.engine.tokens import codec, instruments, midifile  # noqa: PLC0415

    digest = hashlib.sha1()
    for module in (codec, midifile, V, instruments):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()


def stale_tokens(root: str | os.PathLike) -> str | None:
    """A one-line warning when the corpus at `root` was tokenized by other codec code than this one, else None."""
    try:
        made_with = json.loads((Path(root) / "manifest.json").read_text()).get("codec")
    except (OSError, ValueError):
        return None
    if made_with and made_with != codec_fingerprint():
        return (
            f"corpus at {root} was tokenized by another version of the codec; "
            f"run `musebridge corpus build --root {root}` to re-tokenize it (about two minutes)"
        )
    return None


def split_of(piece_id: str) -> str:
    """The piece's split: the first 8 hex digits of sha1(id) mod 100: 0-89 train, 90-94 valid, 95-99 test."""
    bucket = int(hashlib.sha1(piece_id.encode()).hexdigest()[:8], 16) % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


@dataclass(frozen=True)
class TokenSplit:
    """One split's tokens: piece i is tokens[offsets[i]:offsets[i + 1]] (prefix ... EOS)."""

    tokens: np.ndarray  # uint16
    offsets: np.ndarray  # int64, len(ids) + 1
    ids: list[str]
    styles: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def piece(self, i: int) -> np.ndarray:
        """Tokens of piece i (a view)."""
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]


def load_split(root: str | os.PathLike, split: str) -> TokenSplit:
    """Load one split ("train", "valid" or "test") of the corpus at `root`; raises CorpusError with the fix."""
    if split not in SPLITS:
        raise CorpusError(f"unknown split {split!r}; choose from: {', '.join(SPLITS)}")
    folder = Path(root) / "tokens"
    paths = [folder / f"{split}.npy", folder / f"{split}.offsets.npy", folder / f"{split}.json"]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise CorpusError(
            f"corpus at {root} has no {split} split ({', '.join(missing)} missing); "
            f"run `musebridge corpus build --root {root}`"
        )
    try:
        tokens = np.load(paths[0], mmap_mode="r")
        offsets = np.load(paths[1])
        meta = json.loads(paths[2].read_text())
        ids, styles = list(meta["ids"]), list(meta["styles"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(
            f"corpus at {root}: cannot read the {split} split ({exc}); "
            f"run `musebridge corpus build --root {root}` again"
        ) from None
    if (
        tokens.dtype != np.uint16
        or len(offsets) != len(ids) + 1
        or len(styles) != len(ids)
        or (len(offsets) and int(offsets[-1]) != len(tokens))
    ):
        raise CorpusError(
            f"corpus at {root}: the {split} split is incomplete or inconsistent; "
            f"run `musebridge corpus build --root {root}` again"
        )
    warning = stale_tokens(root)
    if warning:
        log.warning(warning)
    return TokenSplit(tokens, offsets.astype(np.int64), ids, styles)


def read_index(root: str | os.PathLike) -> list[dict]:
    """The index records of the corpus at `root`, sorted by id; raises CorpusError when there is none."""
    path = Path(root) / "index.jsonl"
    if not path.is_file():
        raise CorpusError(f"corpus at {root} has no index.jsonl; run `musebridge corpus build --root {root}`")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def read_jsonl(path: Path) -> list[dict]:
    """The complete JSON lines of a journal (a line cut short by an interrupted write is ignored)."""
    if not path.is_file():
        return []
    out = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def _write_atomic(path: Path, write) -> None:
    """Call write(fileobj) on a temporary file beside `path`, then rename it over `path` (engine/files.py)."""

    def make(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            write(fh)

    atomic_write(path, make, CorpusError, make_folder=True)

def _write_lines(path: Path, records: list[dict]) -> None:
    text = "".join(json.dumps(r, sort_keys=False) + "\n" for r in records)
    _write_atomic(path, lambda fh: fh.write(text.encode()))


def select_pieces(config: BuildConfig) -> list[PieceSpec]:
    """The pieces a build covers: music21 sources of the chosen styles, then each --midi folder; --limit
    applies per style. Sorted by id; ids are unique."""
    styles = tuple(config.styles) if config.styles else None
    pieces = music21_pieces(styles) if config.music21 else []
    for folder in config.midi_dirs:
        pieces += [p for p in midi_pieces(folder) if styles is None or p.style in styles]
    pieces = interleave_limit(pieces, config.limit)
    unique = {}
    for p in pieces:
        unique.setdefault(p.id, p)
    return sorted(unique.values(), key=lambda p: p.id)


@dataclass(frozen=True)
class BuildReport:
    """What a build did: pieces indexed, pieces skipped by reason, pieces converted now, seconds of wall time."""

    pieces: int
    skipped: dict[str, int]
    converted: int
    seconds: float


def build(config: BuildConfig) -> BuildReport:
    """Build (or complete) the corpus at config.root; see the module docstring."""
    t0 = time.perf_counter()
    root = Path(config.root)
    if config.band is not None and not mma_available(config.band.mma):
        raise CorpusError(MMA_HELP)
    (root / "midi").mkdir(parents=True, exist_ok=True)
    for stale in (root / "midi").rglob(".*.tmp"):  # left behind by a killed writer
        stale.unlink()
    specs = select_pieces(config)
    journal = root / "skipped.jsonl"
    known = (
        {}
        if config.retry_failed
        else {r["id"]: r for r in read_jsonl(journal) if r.get("reason") not in RETRYABLE and "id" in r}
    )
    todo = [s for s in specs if s.id not in known]
    log.info(
        "corpus: %d pieces selected, %d known failures skipped, %d to process",
        len(specs),
        len(specs) - len(todo),
        len(todo),
    )
    results: dict[str, PieceResult] = {}
    with open(journal, "a", encoding="utf-8") as jf:
        _run(todo, config, results, jf)
        if config.band is not None:
            band = band_pieces(config, specs, results)
            todo = [s for s in band if s.id not in known]
            log.info("corpus: %d band pieces selected, %d to process", len(band), len(todo))
            _run(todo, config, results, jf)
            specs = sorted(specs + band, key=lambda p: p.id)
    return _finish(root, config, specs, results, known, time.perf_counter() - t0)


def _run(todo: list[PieceSpec], config: BuildConfig, results: dict[str, PieceResult], journal) -> None:
    """Process pieces into `results`, journaling final failures."""
    for res in run_pieces(todo, config):
        results[res.id] = res
        if res.reason is not None and res.reason not in RETRYABLE:
            journal.write(json.dumps(res.skip_record()) + "\n")
            journal.flush()


def _first_of_same(specs: list[PieceSpec], results: dict[str, PieceResult]) -> dict[str, str]:
    """For each piece built, the smallest id with the same tokens (its own id when no other has them)."""
    by_hash: dict[str, str] = {}
    first = {}
    for spec in specs:  # sorted by id
        res = results.get(spec.id)
        if res is not None and res.reason is None:
            first[spec.id] = by_hash.setdefault(res.digest, spec.id)
    return first


def band_pieces(config: BuildConfig, specs: list[PieceSpec], results: dict[str, PieceResult]) -> list[PieceSpec]:
    """Band pieces over the build's melodies (config.band): pieces of the band's source styles that were built
    and are not duplicates, the first config.band.limit of them by sha1(id + "/band"), each in per_piece styles
    (band.band_styles). Id: <band style>-band-<source id>; source: band:<source id>; split: the source's."""
    band = config.band
    first = _first_of_same(specs, results)
    melodies = [s for s in specs if first.get(s.id) == s.id and s.style in band.sources]
    melodies.sort(key=lambda s: hashlib.sha1(f"{s.id}/band".encode()).hexdigest())
    out = []
    for spec in melodies[: band.limit]:
        for style in band_styles(spec.id, band.per_piece):
            out.append(PieceSpec(
                f"{style}-band-{spec.id}", style, source=f"band:{spec.id}",
                path=str(piece_path(config.root, spec)), kind="band", split_key=spec.split_key or spec.id,
            ))
    return out


def _finish(root, config, specs, results, known, elapsed) -> BuildReport:
    """Deduplicate, assign splits, write tokens, index, skipped list and manifest."""
    first_of_same = _first_of_same(specs, results)
    records, arrays, skipped = [], {}, []
    for spec in specs:  # sorted by id: the first of identical pieces is kept
        res = results.get(spec.id)
        if res is None:
            skipped.append(known[spec.id])
            continue
        if res.reason is not None:
            skipped.append(res.skip_record())
            continue
        first = first_of_same[spec.id]
        if first != spec.id:
            skipped.append(res.skip_record("duplicate", f"same notes as {first}"))
            continue
        record = dict(res.record, split=split_of(spec.split_key or spec.id))
        records.append(record)
        arrays[spec.id] = res.tokens
    _write_tokens(root, records, arrays)
    _write_lines(root / "index.jsonl", [_ordered(r) for r in records])
    _write_lines(root / "skipped.jsonl", sorted(skipped, key=lambda r: r["id"]))
    reasons: dict[str, int] = {}
    for r in skipped:
        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
    converted = sum(1 for r in results.values() if r.converted)
    manifest = {
        "pieces": len(records),
        "skipped": reasons,
        "converted_this_run": converted,
        "build_seconds": round(elapsed, 1),
        "styles": list(config.styles) if config.styles else None,
        "limit": config.limit,
        "midi_dirs": [str(d) for d in config.midi_dirs],
        "music21": config.music21,
        "max_seconds": config.max_seconds,
        "band": None if config.band is None else {"limit": config.band.limit, "per_piece": config.band.per_piece},
        "vocab": {"version": V.VOCAB_VERSION, "size": V.VOCAB_SIZE, "sha256": V.vocab_info().sha256},
        "codec": codec_fingerprint(),
    }
    _write_atomic(root / "manifest.json", lambda fh: fh.write((json.dumps(manifest, indent=2) + "\n").encode()))
    log.info("corpus: %d pieces indexed, skipped %s", len(records), reasons or "none")
    return BuildReport(len(records), reasons, converted, elapsed)


def _ordered(record: dict) -> dict:
    keys = ("id", "style", "split", "path", "source", "notes", "seconds", "tokens", "instruments")
    return {k: record[k] for k in keys}


def _write_tokens(root: Path, records: list[dict], arrays: dict[str, np.ndarray]) -> None:
    for split in SPLITS:
        chosen = [r for r in records if r["split"] == split]
        meta = {"ids": [r["id"] for r in chosen], "styles": [r["style"] for r in chosen]}
        write_token_split(root / "tokens", split, [arrays[r["id"]] for r in chosen], meta)


def write_token_split(folder: Path, split: str, parts: list[np.ndarray], meta: dict) -> None:
    """One split's three files (format in the module docstring), each atomically; the .json last, so a reader
    that checks it (a fingerprint in `meta`) never takes an interrupted write for a finished one."""
    tokens = np.concatenate(parts).astype(np.uint16) if parts else np.zeros(0, np.uint16)
    offsets = np.zeros(len(parts) + 1, np.int64)
    offsets[1:] = np.cumsum([len(p) for p in parts])
    _write_atomic(folder / f"{split}.npy", lambda fh: np.save(fh, tokens))
    _write_atomic(folder / f"{split}.offsets.npy", lambda fh: np.save(fh, offsets))
    _write_atomic(folder / f"{split}.json", lambda fh: fh.write(json.dumps(meta).encode()))


def _totals(records: list[dict]) -> dict:
    return {
        "pieces": len(records),
        "notes": sum(r["notes"] for r in records),
        "hours": round(sum(r["seconds"] for r in records) / 3600, 3),
        "tokens": sum(r["tokens"] for r in records),
    }


def stats(root: str | os.PathLike) -> dict:
    """Pieces, notes, hours and tokens in total, per style, per split and per style and split; band pieces
    (band parts over melodies) per style; skipped pieces per style and reason. Raises CorpusError when the
    corpus is not built."""
    records = read_index(root)
    skipped = read_jsonl(Path(root) / "skipped.jsonl")
    styles = sorted({r["style"] for r in records} | {s["style"] for s in skipped})
    out = {
        "root": str(root),
        "total": _totals(records),
        "splits": {sp: _totals([r for r in records if r["split"] == sp]) for sp in SPLITS},
        "styles": {},
        "band": {},
        "skipped": {},
    }
    band = [r for r in records if r["path"].startswith("midi/band-")]
    for style in sorted({r["style"] for r in band}):
        out["band"][style] = _totals([r for r in band if r["style"] == style])
    for style in styles:
        mine = [r for r in records if r["style"] == style]
        out["styles"][style] = _totals(mine) | {
            "splits": {sp: _totals([r for r in mine if r["split"] == sp]) for sp in SPLITS}
        }
        reasons: dict[str, int] = {}
        for s in skipped:
            if s["style"] == style:
                reasons[s["reason"]] = reasons.get(s["reason"], 0) + 1
        if reasons:
            out["skipped"][style] = reasons
    out["live"] = _live_counts(Path(root))
    return out


def _live_counts(root: Path) -> dict:
    """Live-like renderings per split (export/live_corpus.py): pieces and tokens, from the split files."""
    counts = {}
    for split in ("train", "valid"):
        offsets = root / "tokens" / f"live-{split}.offsets.npy"
        if offsets.is_file():
            o = np.load(offsets)
            counts[split] = {"pieces": len(o) - 1, "tokens": int(o[-1]) if len(o) else 0}
    return counts
