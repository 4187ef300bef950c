"""The package as a wheel installs it: every module, the bundled model and MIDI files; built without warnings."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> where its files land in the wheel (pyproject.toml [tool.setuptools] package-dir).
FOLDERS = {"musebridge": "musebridge", "engine": "musebridge/engine", "bridge": "musebridge/bridge",
           "export": "musebridge/export"}


def source_files() -> set[str]:
    """Every file the installed package needs, as its path inside the wheel (caches left out)."""
    files = set()
    for folder, target in FOLDERS.items():
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                files.add(f"{target}/{path.relative_to(ROOT / folder).as_posix()}")
    return files


def test_a_wheel_holds_every_module_and_data_file_and_builds_without_warnings(tmp_path):
    pytest.importorskip("setuptools", minversion="77")
    src = tmp_path / "src"
    for folder in FOLDERS:
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--no-cache-dir", "-w", str(tmp_path / "wheel"), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert not re.search(r"warn|deprecat|would be ignored", output, re.IGNORECASE), output
    (wheel,) = (tmp_path / "wheel").glob("musebridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = source_files() - names
    assert not missing, f"not in the wheel (add the folder to packages or the files to package-data): {missing}"
    assert {"musebridge/engine/models/default.onnx", "musebridge/engine/data/phrase.mid"} <= names
