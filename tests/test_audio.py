"""engine/render/audio.py: rendering a MIDI file to a WAV with fluidsynth, and playing it; errors leave nothing
behind."""

from __future__ import annotations

import os
import shutil
import stat
import struct
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from musebridge.engine.render import audio

FONT = audio.find_soundfont() if not os.environ.get(audio.SOUNDFONT_ENV) else None
HAVE_SYNTH = shutil.which("fluidsynth") is not None and FONT is not None
needs_synth = pytest.mark.skipif(not HAVE_SYNTH, reason="needs fluidsynth and a General MIDI soundfont "
                                 "(Debian: apt-get install fluidsynth fluid-soundfont-gm)")
PHRASE = Path(__file__).resolve().parents[1] / "engine" / "data" / "phrase.mid"


def wav_samples(path: Path) -> np.ndarray:
    """The WAV's 16-bit samples, after checking its RIFF/WAVE header."""
    head = path.read_bytes()[:12]
    assert head[:4] == b"RIFF" and head[8:12] == b"WAVE"
    assert struct.unpack("<I", head[4:8])[0] == path.stat().st_size - 8
    with wave.open(str(path), "rb") as w:
        assert w.getsampwidth() == 2 and w.getframerate() == audio.RATE
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")


def fake_tool(folder: Path, name: str, script: str) -> None:
    """An executable `name` in `folder` running the shell `script` (its arguments in "$@")."""
    path = folder / name
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """A PATH holding only a folder of fake tools (no fluidsynth, no players unless a test adds them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


@pytest.fixture
def soundfont(tmp_path, monkeypatch):
    """A file with a SoundFont 2 header, chosen through $MUSEBRIDGE_SOUNDFONT (enough for the fake fluidsynth)."""
    font = tmp_path / "font.sf2"
    font.write_bytes(b"RIFF\x04\x00\x00\x00sfbk")
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(font))
    return font


@needs_synth
def test_render_makes_a_valid_audible_wav_atomically(tmp_path):
    out = tmp_path / "phrase.wav"
    assert audio.render_wav(PHRASE, out) == out
    samples = wav_samples(out)
    assert len(samples) > audio.RATE * 2 * 4  # the phrase is 6 s long, in stereo
    assert np.abs(samples).max() > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["phrase.wav"]


@needs_synth
def test_a_midi_file_fluidsynth_cannot_read_leaves_no_file(tmp_path):
    broken = tmp_path / "broken.mid"
    broken.write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x01\x01\xe0MTrk\x00\x00\x00\x09garbage!!")
    out = tmp_path / "broken.wav"
    out.write_bytes(b"an older file")
    with pytest.raises(audio.AudioError, match="fluidsynth could not render") as info:
        audio.render_wav(broken, out)
    assert "\n" not in str(info.value)
    assert out.read_bytes() == b"an older file"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mid", "broken.wav"]


def test_a_failing_or_lying_fluidsynth_leaves_no_half_written_file(tmp_path, fake_path, soundfont):
    out = tmp_path / "out.wav"
    # Writes half a WAV to the -F file and fails; then: exits 0 but writes no WAV at all.
    half = 'while [ "$1" != -F ]; do shift; done; printf RIFF > "$2"'
    for script, problem in [(f"{half}; echo 'fluidsynth: error: disk full' >&2; exit 1", "disk full"),
                            (f"{half}; exit 0", "no valid WAV")]:
        fake_tool(fake_path, "fluidsynth", script)
        with pytest.raises(audio.AudioError, match=problem) as info:
            audio.render_wav(PHRASE, out)
        assert "\n" not in str(info.value) and str(out) in str(info.value)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "font.sf2"]


def test_missing_tools_say_how_to_get_them_in_one_line(tmp_path, fake_path, monkeypatch):
    monkeypatch.delenv(audio.SOUNDFONT_ENV, raising=False)
    with pytest.raises(audio.AudioUnavailable) as info:
        audio.render_wav(PHRASE, tmp_path / "x.wav")
    message = str(info.value)
    assert "\n" not in message and "fluidsynth" in message
    assert "apt-get install fluidsynth fluid-soundfont-gm" in message and "brew install fluid-synth" in message


def test_a_chosen_soundfont_must_be_one(tmp_path, monkeypatch):
    monkeypatch.setenv(audio.SOUNDFONT_ENV, str(tmp_path / "nowhere.sf2"))
    with pytest.raises(audio.AudioError, match=r"nowhere.sf2 \(from \$MUSEBRIDGE_SOUNDFONT\) does not exist"):
        audio.find_soundfont()
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"not a soundfont")
    with pytest.raises(audio.AudioError, match="junk.sf2 is not a SoundFont 2"):
        audio.find_soundfont(junk)


def test_outputs_that_cannot_be_made_are_refused_before_rendering(tmp_path):
    for path, problem in [(tmp_path / "missing" / "x.wav", "missing or read-only"),
                          (tmp_path / "x.mp3", "must end in .wav")]:
        with pytest.raises(audio.AudioError, match=problem):
            audio.render_wav(PHRASE, path)
    not_midi = tmp_path / "notes.txt"
    not_midi.write_text("C D E")
    with pytest.raises(audio.AudioError, match="not a Standard MIDI file"):
        audio.render_wav(not_midi, tmp_path / "x.wav")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_play_uses_the_first_player_found_and_reports_its_failure(tmp_path, fake_path):
    wav = tmp_path / "x.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)  # 0.1 s of silence
    with pytest.raises(audio.AudioUnavailable, match="no audio player found"):
        audio.play_wav(wav)
    played = tmp_path / "played"
    fake_tool(fake_path, "aplay", f'echo "$@" > {played}')
    assert audio.play_wav(wav) == "aplay"
    assert played.read_text().split() == ["-q", str(wav)]
    fake_tool(fake_path, "paplay", "echo 'Connection failure: Connection refused' >&2; exit 1")
    with pytest.raises(audio.AudioError, match=r"paplay could not play .*Connection refused"):
        audio.play_wav(wav)


def test_the_demo_refuses_an_explicit_wav_it_cannot_make_before_starting(tmp_path):
    env = {**os.environ, audio.SOUNDFONT_ENV: str(tmp_path / "nowhere.sf2")}
    for extra, env_ in [(["--wav", str(tmp_path / "demo.wav")], env),
                        (["--wav", str(tmp_path / "no" / "demo.wav")], None)]:
        proc = subprocess.run([sys.executable, "-m", "musebridge", "demo", "--out", str(tmp_path / "demo.mid"),
                               *extra], capture_output=True, text=True, timeout=60, env=env_)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("musebridge demo: ")
        assert "starting the engine" not in proc.stdout
        assert list(tmp_path.iterdir()) == []
