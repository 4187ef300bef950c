"""`musebridge generate` in its three forms, and its refusals, through the real command."""

from __future__ import annotations

import subprocess
import sys

import mido
import pytest
from musebridge.engine.instruments import INSTRUMENTS
from musebridge.engine.midifile import notes_from_events, read_midi
from musebridge.engine.model_file import default_model_path

from tests.model_fixtures import export_small

CHORALE = "engine/data/chorale.mid"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The bundled model when the package ships one, else a small random export (same code path)."""
    bundled = default_model_path()
    return str(bundled) if bundled.is_file() else str(export_small(tmp_path_factory.mktemp("m"))[1])


def generate(*args, model=None):
    cmd = [sys.executable, "-m", "musebridge", "generate", *args, "--quiet"]
    cmd += ["--model", model] if model else []
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def channels_of(names):
    return {INSTRUMENTS[[i.name for i in INSTRUMENTS].index(n)].channel for n in names}


def note_channels(path, after=0.0):
    midi = read_midi(path)
    mido.MidiFile(path)  # a valid file for mido itself
    return {n.channel for n in notes_from_events(midi.events, midi.end_time) if n.start > after}


def test_from_scratch_uses_only_the_instruments_asked_and_is_reproducible(model, tmp_path):
    outs = []
    for name in ("a.mid", "b.mid"):
        proc = generate(str(tmp_path / name), "--style", "bach", "--instruments", "strings", "organ",
                        "--seconds", "8", "--seed", "5", model=model)
        assert proc.returncode == 0, proc.stderr
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    assert note_channels(tmp_path / "a.mid") <= channels_of(["strings", "organ"])
    assert note_channels(tmp_path / "a.mid"), "no notes generated"


def test_continue_a_prompt(model, tmp_path):
    out = tmp_path / "cont.mid"
    proc = generate(str(out), "--prompt", CHORALE, "--seconds", "6", "--seed", "1", "--instruments", "voice",
                    "--png", str(tmp_path / "cont.png"), model=model)
    assert proc.returncode == 0, proc.stderr
    prompt_end = read_midi(CHORALE).end_time
    assert note_channels(out, after=prompt_end + 0.01) <= channels_of(["voice"])
    assert (tmp_path / "cont.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    notes = notes_from_events(read_midi(out).events)
    assert len([n for n in notes if n.start < prompt_end]) >= 163  # the prompt is kept whole


def test_accompany_a_melody_in_its_timing(model, tmp_path):
    out = tmp_path / "acc.mid"
    proc = generate(str(out), "--melody", CHORALE, "--instruments", "strings", "--seed", "2", model=model)
    assert proc.returncode == 0, proc.stderr
    melody = read_midi(CHORALE)
    midi = read_midi(out)
    notes = notes_from_events(midi.events, midi.end_time)
    model_notes = [n for n in notes if n.channel == channels_of(["strings"]).pop()]
    assert model_notes and max(n.end for n in model_notes) <= melody.end_time + 0.02
    melody_notes = [n for n in notes if n.channel != 5]
    assert len(melody_notes) == 163


@pytest.mark.parametrize("args, needle", [
    (["--style", "polka"], "choose from"),
    (["--instruments", "kazoo"], "choose from"),
    (["--prompt", "nope.mid"], "nope.mid"),
    (["--melody", "README.md"], "README.md"),
])
def test_bad_arguments_one_line_exit_2_no_file(tmp_path, args, needle):
    out = tmp_path / "x.mid"
    proc = generate(str(out), *args)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_unwritable_output_path(tmp_path):
    out = tmp_path / "missing-folder" / "x.mid"
    proc = generate(str(out))
    assert proc.returncode == 2 and "missing-folder" in proc.stderr and not out.exists()
