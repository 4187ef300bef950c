"""`musebridge demo` end to end: engine process, protocol, bridge in respond mode, in-process ports, audio."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.render import audio
from musebridge.engine.tokens.midifile import notes_from_events, read_midi

from musebridge.commands import demo as demo_cli
from tests.model_fixtures import export_small
from tests.net import free_port
from tests.test_audio import needs_synth, wav_samples
from tests.test_writers import hanging


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One run of the demo (about 16 s): (its folder, the finished process)."""
    folder = tmp_path_factory.mktemp("demo")
    bundled = default_model_path()
    model = str(bundled) if bundled.is_file() else str(export_small(folder)[1])
    proc = subprocess.run([sys.executable, "-m", "musebridge", "demo", "--out", str(folder / "demo.mid"),
                           "--model", model, "--port", str(free_port()), "--pub-port", str(free_port())],
                          capture_output=True, text=True, timeout=180)
    return folder, proc


def test_demo_records_both_parts_and_draws_them(demo):
    folder, proc = demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    midi = read_midi(folder / "demo.mid")
    notes = notes_from_events(midi.events, midi.end_time)
    player = [n for n in notes if n.channel in (0, 15)]
    model_notes = [n for n in notes if n.channel not in (0, 15)]
    assert len(player) == 16  # the bundled phrase, every note
    assert model_notes and {n.channel for n in model_notes} == {5}  # strings, and only strings
    first_answer = min(n.start for n in model_notes)
    assert first_answer > min(n.end for n in player)  # the model answers after the player's call
    assert (folder / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "first answer note" in proc.stdout and "wrote" in proc.stdout
    assert not list(folder.glob(".*tmp*"))  # nothing half-written left behind
    assert not [line for line in proc.stderr.splitlines() if line.startswith("INFO")]
    assert hanging(folder / "demo.mid") == []  # every note released (tests/test_writers.py covers the rest)


@needs_synth
def test_demo_renders_the_exchange_to_an_audible_wav(demo):
    folder, proc = demo
    assert proc.returncode == 0, proc.stdout + proc.stderr
    samples = wav_samples(folder / "demo.wav")
    seconds = len(samples) / 2 / 44100
    assert seconds >= read_midi(folder / "demo.mid").end_time - 0.5
    # Sound in the player's call (the first second) and in the model's answer (the last quarter).
    first, last = samples[: 2 * 44100], samples[-len(samples) // 4:]
    assert np.abs(first).max() > 500 and np.abs(last).max() > 500
    assert f"{folder / 'demo.wav'} (audio" in proc.stdout


def demo_args(*argv: str):
    parser = argparse.ArgumentParser()
    demo_cli.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_without_fluidsynth_the_default_wav_is_skipped_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no fluidsynth on it
    monkeypatch.delenv(audio.SOUNDFONT_ENV, raising=False)
    out = tmp_path / "demo.mid"
    wav, note = demo_cli.audio_plan(demo_args("--out", str(out)), out)
    assert wav is None and "\n" not in note and "apt-get install fluidsynth fluid-soundfont-gm" in note
    with pytest.raises(audio.AudioUnavailable):  # an explicit --wav must be made
        demo_cli.audio_plan(demo_args("--out", str(out), "--wav", str(tmp_path / "x.wav")), out)
    with pytest.raises(audio.AudioError, match="drop --no-wav"):
        demo_cli.audio_plan(demo_args("--no-wav", "--play"), out)
    assert demo_cli.audio_plan(demo_args("--no-wav"), out) == (None, None)
