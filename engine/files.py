"""Writing an output file: atomically, through symlinks, never over a device, folder or pipe.

Every file MuseBridge writes for a user (MIDI, WAV, PNG, JSON, caches) goes through `atomic_write`: the content
is written to a temporary file in the target's folder and renamed over the target only when complete, so the
target appears whole or not at all, even after a crash or kill -9. A target that is a symlink is written
through (its target file is replaced; the link stays). A target that exists and is not a regular file (a device
node such as /dev/full, a folder, a pipe, a socket) is refused: renaming over it would replace the node itself.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from .errors import EngineError


def target_path(path: str | os.PathLike, error: type[Exception] = EngineError) -> Path:
    """Where writing `path` lands (a symlink's target); `error` when that is something other than a file."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.exists() and not path.is_file():
        raise error(f"{path}: not a regular file (a folder, device or pipe); choose a file path")
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], error: type[Exception] = EngineError,
                 make_folder: bool = False, suffix: str = ".tmp", mode: int = 0o644) -> Path:
    """Call write(temporary path) to make the content, then rename it over `path` with permissions `mode`;
    returns the path written (a symlink's target). make_folder: create a missing folder, else refuse it. suffix:
    the temporary file's (for writers that choose a format by it). Raises `error` with a one-line message naming
    the path and the fix; nothing is left behind on failure."""
    path = target_path(path, error)
    folder = path.parent if str(path.parent) else Path(".")
    if make_folder:
        folder.mkdir(parents=True, exist_ok=True)
    elif not folder.is_dir():
        raise error(f"{path}: folder {folder} does not exist; create it or choose another output path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=folder)
    except OSError as exc:
        raise error(f"{path}: cannot write in {folder} ({exc.strerror}); choose another path") from None
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        raise error(f"{path}: cannot write ({exc.strerror or exc}); choose another path") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
