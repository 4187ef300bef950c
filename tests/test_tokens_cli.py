"""`musebridge tokens`, run as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mido
import pytest
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.midifile import read_midi

CHORALE = Path(__file__).resolve().parent.parent / "engine" / "data" / "chorale.mid"


def tokens(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "musebridge", "tokens", *map(str, args)],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )


def test_text_output_names_the_statistics():
    done = tokens(CHORALE)
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(None, 1) for line in done.stdout.splitlines() if line.strip())
    assert int(fields["notes"]) > 100
    assert fields["instruments"].split(", ") == ["piano"]
    assert fields["duration"].endswith(" s") and float(fields["duration"].split()[0]) > 10
    assert "per note" in fields["tokens"]
    assert f"{V.VOCAB_SIZE} tokens" in fields["vocabulary"]
    first = fields["first"].split()[1:]  # "first tokens BOS STYLE_unknown ..."
    assert first[:3] == ["BOS", "STYLE_unknown", "SET_piano"] and len(first) == 40
    assert done.stderr == ""


def test_json_output_parses_and_agrees_with_the_file():
    done = tokens(CHORALE, "--json", "--style", "bach")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    fields = {"file", "notes", "tokens", "tokens_per_note", "duration_s", "instruments", "token_kinds", "vocab"}
    assert fields <= set(info)
    assert info["tokens"] == sum(info["token_kinds"].values())
    assert info["token_kinds"]["note_on"] == info["token_kinds"]["note_off"] == info["notes"]
    assert info["tokens_per_note"] == pytest.approx(info["tokens"] / info["notes"], abs=1e-3)
    assert info["vocab"] == {"version": V.VOCAB_VERSION, "size": V.VOCAB_SIZE, "sha256": V.vocab_info().sha256}
    assert info["duration_s"] == pytest.approx(read_midi(CHORALE).end_time, abs=1e-3)


def test_roundtrip_writes_a_valid_midi_file(tmp_path):
    out = tmp_path / "back.mid"
    done = tokens(CHORALE, "--roundtrip", out, "--json")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["roundtrip"]["file"] == str(out) and info["roundtrip"]["notes"] == info["notes"]
    again = json.loads(tokens(out, "--json").stdout)
    assert again["notes"] == info["notes"] and again["tokens"] == info["tokens"]
    assert os.listdir(tmp_path) == ["back.mid"]


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    good = CHORALE.read_bytes()
    files = {
        "empty": (b"", "empty"),
        "text": (b"these are not the notes you are looking for\n", "not a MIDI file"),
        "png": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(30), "not a MIDI file"),
        "truncated": (good[: len(good) * 2 // 3], "truncated"),
        "corrupt": (good[:30] + b"\xff\xf3" * 40 + good[110:], "not a valid MIDI file"),
    }
    cases = {}
    for name, (data, problem) in files.items():
        path = tmp_path / f"{name}.mid"
        path.write_bytes(data)
        cases[name] = (path, problem)
    cases["missing"] = (tmp_path / "missing.mid", "no such file")
    cases["folder"] = (tmp_path, "folder")
    return cases


@pytest.mark.parametrize("case", ["empty", "text", "png", "truncated", "corrupt", "missing", "folder"])
def test_bad_input_is_one_line_naming_the_file_and_status_2(tmp_path, case):
    path, problem = _bad_inputs(tmp_path)[case]
    done = tokens(path)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert str(path) in lines[0] and problem in lines[0]
    assert "Traceback" not in done.stderr


def test_roundtrip_into_a_missing_folder_fails_cleanly_and_writes_nothing(tmp_path):
    target = tmp_path / "no" / "such" / "out.mid"
    done = tokens(CHORALE, "--roundtrip", target)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and str(target) in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_roundtrip_onto_a_folder_fails_cleanly_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "taken.mid"
    target.mkdir()
    done = tokens(CHORALE, "--roundtrip", target)
    assert done.returncode == 2 and len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == ["taken.mid"] and os.listdir(target) == []


def test_unknown_style_is_a_clear_error():
    done = tokens(CHORALE, "--style", "dubstep")
    assert done.returncode == 2 and "choose from" in done.stderr and len(done.stderr.splitlines()) == 1


def test_a_file_without_notes_is_not_an_error(tmp_path):
    path = tmp_path / "silence.mid"
    mido.MidiFile(tracks=[mido.MidiTrack([mido.MetaMessage("track_name", name="silence")])]).save(path)
    done = tokens(path)
    assert done.returncode == 0 and "(no notes)" in done.stdout and "None" not in done.stdout
    info = json.loads(tokens(path, "--json").stdout)
    assert info["notes"] == 0 and info["tokens_per_note"] is None and info["instruments"] == []
