"""Private folders of engines started by `play`: one left by a killed program is removed at the next start-up."""

from __future__ import annotations

import os
import subprocess
import sys

from musebridge.bridge.launcher import _direct_endpoint, remove_stale_folders


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has this id now (reuse within the test is vanishingly unlikely)


def test_stale_folders_are_removed_live_and_foreign_ones_kept(tmp_path):
    stale = tmp_path / f"musebridge-{dead_pid()}-abc_123"
    stale.mkdir()
    (stale / "engine.sock").write_text("")
    live = tmp_path / f"musebridge-{os.getpid()}-xyz"
    live.mkdir()
    parent_live = tmp_path / f"musebridge-{os.getppid()}-q1"
    parent_live.mkdir()
    other = tmp_path / "musebridge-notapid"  # not a name this program makes
    other.mkdir()
    link = tmp_path / f"musebridge-{dead_pid()}-link"
    link.symlink_to(live)  # a link is never followed
    assert remove_stale_folders(tmp_path) == [str(stale)]
    assert not stale.exists() and live.is_dir() and parent_live.is_dir() and other.is_dir() and link.is_symlink()


def test_the_folder_names_its_owner_and_start_up_cleans(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    stale = tmp_path / f"musebridge-{dead_pid()}-old"
    stale.mkdir()
    endpoint, folder, options = _direct_endpoint()
    assert os.path.basename(folder).startswith(f"musebridge-{os.getpid()}-")
    assert (os.stat(folder).st_mode & 0o777) == 0o700
    assert not stale.exists() and options == ["--local", endpoint[len("unix://"):]]
