"""Running the corpus build: one task per piece, in worker processes, each with a time limit.

A task makes sure the piece's .mid exists (converting it when it does not) and tokenizes it with the engine's
codec (engine.midifile.encode_file), so finished pieces cost one tokenization on a re-run. Failures come back as
results with a reason; nothing a piece does aborts the build.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import shutil
import signal
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from musebridge.engine.errors import EngineError
from musebridge.engine.files import atomic_write
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES
from musebridge.engine.tokens.midifile import encode_file

from .band import BandConfig, BandError, render_band
from .corpus_convert import EmptyPiece, TooLong, convert_score
from .corpus_sources import PieceSpec
from .errors import ExportError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """Options of `musebridge corpus build`.

    root: corpus folder. styles: styles to include (empty: all). midi_dirs: extra MIDI folders.
    limit: at most this many pieces per style (None: all). jobs: worker processes (1: in this process).
    timeout_s: seconds of work allowed per piece. max_seconds: longest piece kept, in seconds of music.
    retry_failed: try pieces that failed in an earlier run again. force: convert every piece again.
    music21: include the music21 corpus. quiet: no progress bar. band: band parts over the melodies (None:
    none; needs mma).
    """

    root: str
    styles: tuple[str, ...] = ()
    midi_dirs: tuple[str, ...] = ()
    limit: int | None = None
    jobs: int = field(default_factory=lambda: os.cpu_count() or 1)
    timeout_s: float = 300.0
    max_seconds: float = 20 * 60.0
    retry_failed: bool = False
    force: bool = False
    music21: bool = True
    quiet: bool = False
    band: BandConfig | None = None


@dataclass(frozen=True)
class PieceResult:
    """The outcome of one task: an index record and tokens, or a skip reason.

    reason: None, or "error" (parse or conversion failed), "empty", "too_long", "timeout", "corrupt" (a MIDI
    file that cannot be read), "duplicate", "no_band" (no band part for that melody). digest: sha1 of the
    tokens, to find duplicates.
    """

    id: str
    style: str
    source: str
    record: dict | None = None
    tokens: np.ndarray | None = None
    digest: str = ""
    reason: str | None = None
    detail: str = ""
    converted: bool = False

    def skip_record(self, reason: str | None = None, detail: str | None = None) -> dict:
        return {
            "id": self.id,
            "style": self.style,
            "source": self.source,
            "reason": reason or self.reason,
            "detail": detail if detail is not None else self.detail,
        }


class PieceTimeout(BaseException):
    """A piece took longer than its time limit. A BaseException, like KeyboardInterrupt: music21 falls back between
    parsers inside `except Exception` blocks, which would swallow a time limit that fires there (seen in CI: a
    piece converted in full past its limit)."""


def _alarm(signum, frame):
    raise PieceTimeout


def piece_path(root: str | Path, spec: PieceSpec) -> Path:
    """Where a piece's .mid lives: <root>/midi/<style>/<id>.mid, a band piece's <root>/midi/band-<style>/."""
    folder = f"band-{spec.style}" if spec.kind == "band" else spec.style
    return Path(root) / "midi" / folder / f"{spec.id}.mid"


def _copy_midi(spec: PieceSpec, target: Path, max_seconds: float) -> None:
    """Check a user MIDI file with the codec, then copy it into the corpus atomically."""
    encoded = encode_file(spec.path, spec.style)  # raises MidiFileError when corrupt
    if encoded.notes == 0:
        raise EmptyPiece("no notes")
    if encoded.duration > max_seconds:
        raise TooLong(f"{encoded.duration / 60:.1f} min is longer than the {max_seconds / 60:.0f} min limit")
    atomic_write(target, lambda tmp: shutil.copyfile(spec.path, tmp), ExportError)


def _ensure(spec: PieceSpec, config: BuildConfig, target: Path) -> bool:
    """Make sure target exists; True when it was (re)made now."""
    if target.is_file() and not config.force:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    if spec.kind == "midi":
        _copy_midi(spec, target, config.max_seconds)
    elif spec.kind == "band":
        render_band(spec.path, target, spec.id, spec.style, config.band or BandConfig())
    else:
        convert_score(spec, str(target), config.max_seconds)
    return True


def process_piece(spec: PieceSpec, config: BuildConfig) -> PieceResult:
    """Convert (if needed) and tokenize one piece, within config.timeout_s; never raises for a bad piece."""
    target = piece_path(config.root, spec)
    base = dict(id=spec.id, style=spec.style, source=spec.source)
    use_alarm = hasattr(signal, "setitimer") and config.timeout_s > 0
    if use_alarm:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, config.timeout_s)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            converted = _ensure(spec, config, target)
            encoded = encode_file(target, spec.style)
    except PieceTimeout:
        return PieceResult(**base, reason="timeout", detail=f"took more than {config.timeout_s:.0f} s")
    except EmptyPiece as exc:
        return PieceResult(**base, reason="empty", detail=str(exc))
    except TooLong as exc:
        return PieceResult(**base, reason="too_long", detail=str(exc))
    except BandError as exc:
        return PieceResult(**base, reason=exc.reason, detail=str(exc))
    except EngineError as exc:
        return PieceResult(**base, reason="corrupt" if spec.kind == "midi" else "error", detail=str(exc))
    except Exception as exc:  # noqa: BLE001 - music21 raises anything on bad scores; the piece is skipped
        return PieceResult(**base, reason="error", detail=f"{type(exc).__name__}: {exc}"[:300])
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    if encoded.notes == 0:
        return PieceResult(**base, reason="empty", detail="no notes after tokenization")
    tokens = np.asarray(encoded.tokens + (V.EOS,), dtype=np.uint16)
    record = {
        "id": spec.id,
        "style": spec.style,
        "path": target.relative_to(config.root).as_posix(),
        "source": spec.source,
        "notes": encoded.notes,
        "seconds": round(encoded.duration, 3),
        "tokens": int(len(tokens)),
        "instruments": [INSTRUMENT_NAMES[i] for i in encoded.instruments],
    }
    digest = hashlib.sha1(tokens.tobytes()).hexdigest()
    return PieceResult(**base, record=record, tokens=tokens, digest=digest, converted=converted)


def _task(args: tuple[PieceSpec, BuildConfig]) -> PieceResult:
    return process_piece(*args)


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    logging.getLogger("music21").setLevel(logging.ERROR)


def _order(specs: list[PieceSpec]) -> list[PieceSpec]:
    """Biggest files first, so no long piece is left alone at the end (multi-tune pieces are small)."""

    def size(spec: PieceSpec) -> int:
        return 0 if spec.tune is not None else os.path.getsize(spec.path) if os.path.exists(spec.path) else 0

    return sorted(specs, key=lambda s: (-size(s), s.id))


def run_pieces(specs: list[PieceSpec], config: BuildConfig) -> Iterator[PieceResult]:
    """Process every piece, yielding results as they finish (in no particular order), with a progress bar."""
    from tqdm import tqdm  # noqa: PLC0415 - in the train extra

    specs = _order(specs)
    bar = tqdm(total=len(specs), unit="piece", desc="corpus", disable=config.quiet or not specs, smoothing=0.05)
    try:
        if config.jobs <= 1 or len(specs) <= 1:
            results = (process_piece(s, config) for s in specs)
            yield from _progress(results, bar)
            return
        # spawn: workers start clean (no forked progress-bar thread or parent state), the same on every platform.
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(config.jobs, initializer=_worker_init, maxtasksperchild=500) as pool:
            try:
                yield from _progress(pool.imap_unordered(_task, [(s, config) for s in specs]), bar)
            except BaseException:
                pool.terminate()
                raise
    finally:
        bar.close()


def _progress(results, bar) -> Iterator[PieceResult]:
    failed = 0
    for res in results:
        if res.reason is not None:
            failed += 1
            log.info("%s skipped (%s): %s", res.id, res.reason, res.detail)
            bar.set_postfix(skipped=failed, refresh=False)
        bar.update(1)
        yield res
