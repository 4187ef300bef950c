"""The take journal: a recording on disk while it is played, so a crash or kill -9 loses at most a second or two.

`play --record TAKE.mid` keeps the take in memory and writes TAKE.mid (atomically) when it stops. Beside it, from
the first second, a journal `.TAKE.mid.<pid>.take` gets every recorded message, appended and flushed to disk once
per `flush_s` by a background thread (never by the MIDI callback or the sending thread). A clean stop writes
TAKE.mid and deletes the journal. A journal whose process is gone is a take that was lost: the next start with a
take in the same folder turns it into `TAKE.recovered-<date>-<time>.mid` (every note ended, pedal lifted) and says
where it is.

Journal format (text, one line each): a JSON header {"take": path, "pid": N, "started": unix seconds}, then
`<seconds from the take's start> <the message's bytes in hex>` per message, in the order they were recorded.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

import mido
from musebridge.engine.errors import EngineError
from musebridge.engine.server.connection import process_alive
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import write_midi

from .errors import ConfigError

log = logging.getLogger(__name__)

SUFFIX = ".take"


def journal_path(take: Path, pid: int | None = None) -> Path:
    """Where the journal of `take` written by process `pid` (default: this one) lives."""
    return take.parent / f".{take.name}.{os.getpid() if pid is None else pid}{SUFFIX}"


class TakeJournal:
    """An append-only journal of one take. `add()` is cheap (memory only); a thread writes what was added."""

    def __init__(self, take: str | os.PathLike, flush_s: float = 1.0):
        self.take = Path(take)
        self.path = journal_path(self.take)
        self.flush_s = flush_s
        folder = self.take.parent if str(self.take.parent) else Path(".")
        if not folder.is_dir():
            raise ConfigError(f"--record {take}: folder {folder} does not exist; create it or choose another path")
        try:
            self._file = open(self.path, "x", encoding="ascii")  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise ConfigError(f"--record {take}: cannot write in {folder} ({exc.strerror}); choose another "
                              "path") from None
        self._file.write(json.dumps({"take": str(self.take), "pid": os.getpid(), "started": time.time()}) + "\n")
        self._file.flush()
        self._pending: list[Timed] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="take-journal", daemon=True)
        self._thread.start()

    def add(self, item: Timed) -> None:
        """Queue one recorded message (seconds from the take's start) for the next flush."""
        with self._lock:
            self._pending.append(item)

    def flush(self) -> None:
        """Append what was added since the last flush and push it to the disk."""
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or self._file.closed:
            return
        self._file.write("".join(f"{t:.6f} {msg.bin().hex()}\n" for t, msg in pending))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _run(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except OSError as exc:  # a full disk must not stop the take: it is still kept in memory
                log.warning("take journal %s: %s; the take is kept in memory", self.path, exc.strerror)

    def close(self, keep: bool = False) -> None:
        """Stop the thread; delete the journal (the take was written) unless `keep`."""
        self._stop.set()
        self._thread.join(timeout=5.0)
        if keep:
            try:
                self.flush()
            except OSError as exc:
                log.warning("take journal %s: %s", self.path, exc.strerror)
        self._file.close()
        if not keep:
            self.path.unlink(missing_ok=True)


def read_journal(path: str | os.PathLike) -> tuple[dict, list[Timed]]:
    """The header and the messages of a journal; a torn last line (the process died mid-write) is dropped."""
    lines = Path(path).read_text(encoding="ascii", errors="replace").splitlines()
    header = json.loads(lines[0]) if lines else {}
    events: list[Timed] = []
    for line in lines[1:]:
        t, _, data = line.partition(" ")
        try:
            events.append(Timed(float(t), mido.Message.from_bytes(bytes.fromhex(data))))
        except ValueError:
            continue
    return header, events


    return True


def recover_takes(take: str | os.PathLike) -> list[Path]:
    """Turn every journal of `take` left by a process that is gone into a .mid beside it; returns their paths."""
    take = Path(take)
    folder = take.parent if str(take.parent) else Path(".")
    recovered = []
    for path in sorted(folder.glob(f".{take.name}.*{SUFFIX}")):
        pid = path.name[len(take.name) + 2 : -len(SUFFIX)]
        if not pid.isdigit() or int(pid) == os.getpid() or process_alive(int(pid)):
            continue
        try:
            header, events = read_journal(path)
            stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(header.get("started", path.stat().st_mtime)))
            out = take.with_name(f"{take.stem}.recovered-{stamp}{take.suffix or '.mid'}")
            if out.exists():  # another take recovered from the same second: never overwrite one
                out = out.with_name(f"{take.stem}.recovered-{stamp}-{pid}{take.suffix or '.mid'}")
            write_midi(sorted(events, key=lambda e: e.time), out)
        except (OSError, ValueError, EngineError) as exc:
            log.warning("cannot recover the take journal %s: %s", path, exc)
            continue
        path.unlink(missing_ok=True)
        log.warning("recovered a take that was not saved (process %s): %s (%d messages)", pid, out, len(events))
        recovered.append(out)
    return recovered
