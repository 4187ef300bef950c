"""Output files (engine/files.py): atomic, written through symlinks, never over a device node, folder or pipe."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest
from musebridge.engine.errors import EngineError
from musebridge.engine.files import atomic_write


def test_a_file_appears_whole_and_nothing_is_left_when_writing_fails(tmp_path):
    target = tmp_path / "out.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"take one"))
    assert target.read_bytes() == b"take one" and stat.S_IMODE(target.stat().st_mode) == 0o644

    def half(tmp):
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(EngineError, match="out.bin: cannot write \\(No space left on device\\)"):
        atomic_write(target, half)
    assert target.read_bytes() == b"take one" and sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_a_symlink_is_written_through(tmp_path):
    real, link = tmp_path / "real.mid", tmp_path / "link.mid"
    real.write_bytes(b"old")
    link.symlink_to(real)
    assert atomic_write(link, lambda tmp: tmp.write_bytes(b"new")) == real
    assert link.is_symlink() and real.read_bytes() == b"new"


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_pipe_a_folder_or_a_link_to_one_is_refused_and_left_as_it_was(tmp_path):
    fifo, folder, link = tmp_path / "pipe", tmp_path / "folder", tmp_path / "link.mid"
    os.mkfifo(fifo)
    folder.mkdir()
    link.symlink_to(fifo)
    for target in (fifo, folder, link):
        with pytest.raises(EngineError, match="not a regular file"):
            atomic_write(target, lambda tmp: tmp.write_bytes(b"x"))
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and folder.is_dir() and link.is_symlink()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_generate_refuses_to_write_over_a_device_like_node(tmp_path):
    fifo = tmp_path / "out.mid"
    os.mkfifo(fifo)
    proc = subprocess.run([sys.executable, "-m", "musebridge", "generate", str(fifo), "--seconds", "1",
                           "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not a regular file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and stat.S_ISFIFO(os.stat(fifo).st_mode)
