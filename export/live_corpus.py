"""Live-like training material: the corpus's notated pieces played on piano by the performer (export/perform.py).

A player at a keyboard sends expressive piano: shaped tempo and dynamics, asynchrony, articulation, sustain pedal.
The notated corpus has none of that, so `musebridge corpus build --perform K` plays each notated train and valid
piece K times (a different seed each time: another level, tempo, articulation and pedalling) and writes the
renderings as two more token splits beside the notated ones, in the same format (export/dataset.py):

    <root>/tokens/live-train.npy, .offsets.npy, .json      ids "<piece id>@live<k>", the piece's style
    <root>/tokens/live-valid.npy, ...

Band pieces (several instruments with drums) are not rendered: the performer plays one piano. The test split is
never rendered here; the quality evaluation renders it itself (`musebridge eval --live-like`) with other seeds.
The renderings are a pure function of the corpus and the performer's code, so a re-run with the same corpus,
K and code finds them up to date (the .json holds that fingerprint) and does nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .corpus import CorpusError, codec_fingerprint, read_index, write_token_split
from .dataset import LIVE_MARK, live_split
from .eval_inputs import live_like_tokens, piece_seed

log = logging.getLogger(__name__)

LIVE_SPLITS = {split: live_split(split) for split in ("train", "valid")}
MAX_RENDERINGS = 8


def rendering_id(piece_id: str, k: int) -> str:
    return f"{piece_id}{LIVE_MARK}{k}"


def _fingerprint(root: Path, renderings: int) -> str:
    """sha1 of what the renderings depend on: the index, the performer's and the codec's code, and K."""
    from . import perform, perform_score  # noqa: PLC0415

    digest = hashlib.sha1(f"renderings={renderings};codec={codec_fingerprint()}".encode())
    for path in (root / "index.jsonl", Path(perform.__file__), Path(perform_score.__file__)):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _render(task: tuple[str, str, str, int]) -> tuple[str, str, np.ndarray | None]:
    """(rendering id, style, tokens or None when the performer cannot play the piece)."""
    path, piece_id, style, k = task
    rid = rendering_id(piece_id, k)
    try:
        tokens, notes = live_like_tokens(path, style, piece_seed(rid))
    except Exception as exc:  # noqa: BLE001 - one unplayable piece must not end a build of thousands
        log.info("%s: not rendered (%s)", rid, exc)
        return rid, style, None
    return rid, style, (np.asarray(tokens, dtype=np.uint16) if notes else None)


def _results(tasks: list[tuple[str, str, str, int]], jobs: int, quiet: bool) -> Iterator[tuple]:
    from tqdm import tqdm  # noqa: PLC0415 - in the train extra

    with tqdm(total=len(tasks), unit="piece", desc="perform", disable=quiet or not tasks) as bar:
        if jobs <= 1:
            for task in tasks:
                yield _render(task)
                bar.update(1)
            return
        with multiprocessing.get_context("spawn").Pool(jobs, maxtasksperchild=2000) as pool:
            for result in pool.imap(_render, tasks, chunksize=16):  # imap: results in task order
                yield result
                bar.update(1)


def build_live(root: str | Path, renderings: int, jobs: int = 1, quiet: bool = False) -> dict[str, int]:
    """Write the live splits of the corpus at `root` (renderings per piece; 0 removes them). Returns the
    renderings written per split ({} when they were up to date). Raises CorpusError naming what is wrong."""
    root = Path(root)
    if not 0 <= renderings <= MAX_RENDERINGS:
        raise CorpusError(f"--perform must be 0 to {MAX_RENDERINGS} renderings per piece, not {renderings}")
    if not (root / "index.jsonl").is_file():
        raise CorpusError(f"no corpus index in {root}; run `musebridge corpus build` first")
    tokens_dir = root / "tokens"
    if renderings == 0:
        for split in LIVE_SPLITS.values():
            for name in (f"{split}.npy", f"{split}.offsets.npy", f"{split}.json"):
                (tokens_dir / name).unlink(missing_ok=True)
        return {}
    fingerprint = _fingerprint(root, renderings)
    if all(_meta(tokens_dir / f"{s}.json").get("fingerprint") == fingerprint for s in LIVE_SPLITS.values()):
        log.info("corpus: live-like renderings are up to date")
        return {}
    written = {}
    for split, live in LIVE_SPLITS.items():
        records = [r for r in read_index(root) if r["split"] == split and not r["source"].startswith("band")]
        tasks = [(str(root / r["path"]), r["id"], r["style"], k) for r in records for k in range(renderings)]
        ids, styles, parts = [], [], []
        for rid, style, tokens in _results(tasks, jobs, quiet):
            if tokens is not None:
                ids.append(rid)
                styles.append(style)
                parts.append(tokens)
        write_token_split(tokens_dir, live, parts, {"ids": ids, "styles": styles, "fingerprint": fingerprint})
        written[live] = len(parts)
        log.info("corpus: %d live-like renderings in %s (%d pieces could not be played)", len(parts), live,
                 len(tasks) - len(parts))
    return written


def _meta(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
