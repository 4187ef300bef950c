"""`musebridge generate`'s musical controls, several outputs, prompt cropping and output tempo, through the real
command; and engine/tokens/retime.py, which crops and retimes a prompt."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections import Counter

import mido
import pytest
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.inference.sampler import scale_pitch_classes
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import Conductor, MetreChange, TempoChange, notes_from_events, read_midi
from musebridge.engine.tokens.retime import at_tempo, crop

from tests.model_fixtures import export_small
from tests.test_audio import needs_synth, wav_samples

CHORALE = "engine/data/chorale.mid"  # 96 bpm, 4/4, 163 notes on four channels, 23.1 s
STRINGS_CHANNEL = 5


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    bundled = default_model_path()
    return str(bundled) if bundled.is_file() else str(export_small(tmp_path_factory.mktemp("m"))[1])


def generate(model, *args):
    cmd = [sys.executable, "-m", "musebridge", "generate", *args, "--quiet", "--model", model]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def every_note_released(path) -> bool:
    """Each note-on of the file, track by track as mido reads it, is ended by a note-off on its channel."""
    for track in mido.MidiFile(path).tracks:
        held: Counter = Counter()
        for msg in track:
            if msg.type == "note_on" and msg.velocity > 0:
                held[(msg.channel, msg.note)] += 1
            elif msg.type in ("note_on", "note_off") and held[(msg.channel, msg.note)]:
                held[(msg.channel, msg.note)] -= 1
        if +held:
            return False
    return True


def most_at_once(notes) -> int:
    edges = sorted([(n.start, 1) for n in notes] + [(n.end, -1) for n in notes])
    level = peak = 0
    for _, step in edges:
        level += step
        peak = max(peak, level)
    return peak


def test_key_pitch_range_and_polyphony_hold_in_the_output(model, tmp_path):
    out = tmp_path / "shaped.mid"
    proc = generate(model, str(out), "--instruments", "strings", "--seconds", "12", "--seed", "3", "--key",
                    "D minor", "--pitch-low", "50", "--pitch-high", "70", "--polyphony", "2", "--top-k", "40",
                    "--min-p", "0.01", "--best-of", "2")
    assert proc.returncode == 0, proc.stderr
    notes = notes_from_events(read_midi(out).events)
    assert len(notes) >= 5
    assert {n.pitch % 12 for n in notes} <= set(scale_pitch_classes("D", "minor"))
    assert all(50 <= n.pitch <= 70 for n in notes)
    assert most_at_once(notes) <= 2
    assert every_note_released(out)


def test_several_outputs_go_to_a_folder_seeded_one_after_another(model, tmp_path):
    folder = tmp_path / "takes"
    proc = generate(model, str(folder), "--num-outputs", "3", "--seed", "7", "--instruments", "strings",
                    "--seconds", "4")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["take-1.mid", "take-2.mid", "take-3.mid"]
    assert "take-2.mid (seed 8)" in proc.stdout
    single = tmp_path / "seed8.mid"
    proc = generate(model, str(single), "--seed", "8", "--instruments", "strings", "--seconds", "4")
    assert proc.returncode == 0, proc.stderr
    assert (folder / "take-2.mid").read_bytes() == single.read_bytes()
    assert (folder / "take-1.mid").read_bytes() != single.read_bytes()
    assert all(every_note_released(p) for p in folder.iterdir())


def test_a_cropped_prompt_keeps_only_its_span_from_time_0(model, tmp_path):
    out = tmp_path / "cropped.mid"
    proc = generate(model, str(out), "--prompt", CHORALE, "--prompt-start", "5", "--prompt-seconds", "5",
                    "--seconds", "3", "--seed", "1", "--instruments", "strings")
    assert proc.returncode == 0, proc.stderr
    source = read_midi(CHORALE)
    expected = sorted((round(n.start - 5, 3), n.pitch) for n in notes_from_events(source.events)
                      if 5 <= n.start < 10)
    written = read_midi(out)
    kept = sorted((round(n.start, 3), n.pitch) for n in notes_from_events(written.events)
                  if n.channel != STRINGS_CHANNEL)
    assert kept == expected
    programs = {m.channel: m.program for t, m in written.events if m.type == "program_change" and t == 0}
    assert {ch: p for ch, p in programs.items() if ch != STRINGS_CHANNEL} == {
        m.channel: m.program for _, m in source.events if m.type == "program_change"}
    assert written.conductor.tempos[0] == TempoChange(0.0, source.conductor.tempos[0].tempo)
    assert every_note_released(out)


def test_bpm_plays_a_prompt_at_that_tempo_in_the_same_bars(model, tmp_path):
    out = tmp_path / "slow.mid"
    proc = generate(model, str(out), "--prompt", CHORALE, "--bpm", "60", "--seconds", "2", "--seed", "1",
                    "--instruments", "strings")
    assert proc.returncode == 0, proc.stderr
    source, written = read_midi(CHORALE), read_midi(out)
    assert [t.tempo for t in written.conductor.tempos] == [1_000_000]
    beats = sorted((round(source.conductor.quarters_at(n.start), 2), n.pitch)
                   for n in notes_from_events(source.events))
    slowed = sorted((round(written.conductor.quarters_at(n.start), 2), n.pitch)
                    for n in notes_from_events(written.events) if n.channel != STRINGS_CHANNEL)
    assert slowed == beats
    assert every_note_released(out)


@pytest.mark.parametrize("args, needle", [
    (["--num-outputs", "2"], "OUT is a folder"),
    (["--num-outputs", "0"], "--num-outputs must be within 1..1000"),
    (["--prompt-start", "2"], "give one"),
    (["--prompt", CHORALE, "--prompt-start", "300"], "no note from --prompt-start 300"),
    (["--prompt", CHORALE, "--prompt-seconds", "0"], "--prompt-seconds must be above 0"),
    (["--pitch-low", "80", "--pitch-high", "40"], "--pitch-low 80 is above --pitch-high 40"),
    (["--num-outputs", "2", "--png", "x.png"], "--png and --wav make one file"),
    (["--prompt", CHORALE, "--bpm", "1000"], "--bpm must be within 10..400"),
])
def test_bad_option_combinations_one_line_exit_2_nothing_written(model, tmp_path, args, needle):
    out = tmp_path / "x.mid"
    proc = generate(model, str(out), *args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert list(tmp_path.iterdir()) == []



def test_style_guidance_needs_a_model_trained_for_it(tmp_path):
    plain = export_small(tmp_path)[1]
    trained = export_small(tmp_path, train={"config": {"augment": {"style_drop": 0.15}}})[1]
    out = tmp_path / "guided.mid"
    proc = generate(str(plain), str(out), "--style", "folk", "--style-guidance", "2", "--seconds", "3")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "--style-drop" in proc.stderr
    assert not out.exists()
    proc = generate(str(trained), str(out), "--style", "folk", "--style-guidance", "2", "--seconds", "3",
                    "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert every_note_released(out)


def test_style_guidance_is_off_unless_asked_for():
    from musebridge.commands import generate_args

    parser = argparse.ArgumentParser()
    generate_args.add_arguments(parser)
    cases = [(["--style", "folk"], 1.0), ([], 1.0), (["--style", "folk", "--style-guidance", "1.5"], 1.5),
             (["--style", "folk", "--prompt", CHORALE, "--style-guidance", "3"], 3.0)]
    for argv, want in cases:
        config, _ = generate_args.build_config(parser.parse_args(["x.mid", *argv]))
        assert config.style_guidance == want, argv


# ---------------------------------------------------------------- engine/tokens/retime.py


def on(t, note, channel=0):
    return Timed(t, mido.Message("note_on", channel=channel, note=note, velocity=80))


def off(t, note, channel=0):
    return Timed(t, mido.Message("note_off", channel=channel, note=note))


def test_crop_keeps_the_state_before_it_drops_notes_begun_before_and_ends_all_at_its_end():
    events = [Timed(0.0, mido.Message("program_change", program=40)), on(0.5, 60), off(1.5, 60),
              Timed(1.8, mido.Message("control_change", control=64, value=127)), on(2.0, 62), off(2.5, 62),
              on(2.8, 64), off(4.0, 64), on(3.5, 65), off(3.7, 65)]
    conductor = Conductor((TempoChange(0.0, 500_000), TempoChange(2.5, 600_000), TempoChange(3.5, 700_000)),
                          (MetreChange(0.0, 3, 4),))
    cropped, map_ = crop(events, conductor, start=1.0, seconds=2.0)
    assert [(round(t, 6), m.type, getattr(m, "note", None)) for t, m in cropped] == [
        (0.0, "program_change", None), (0.8, "control_change", None), (1.0, "note_on", 62), (1.5, "note_off", 62),
        (1.8, "note_on", 64), (2.0, "note_off", 64), (2.0, "control_change", None)]
    assert cropped[-1].msg.value == 0, "the pedal still down at the end is lifted there"
    assert map_ == Conductor((TempoChange(0.0, 500_000), TempoChange(1.5, 600_000)), (MetreChange(0.0, 3, 4),))


def test_at_tempo_scales_times_and_every_tempo_by_one_factor():
    events = [on(0.0, 60), off(1.0, 60), on(3.0, 62), off(3.5, 62)]
    conductor = Conductor((TempoChange(0.0, 500_000), TempoChange(2.0, 1_000_000)), (MetreChange(2.0, 3, 4),))
    faster, map_ = at_tempo(events, conductor, bpm=240.0)
    assert [t for t, _ in faster] == [0.0, 0.5, 1.5, 1.75]
    assert map_ == Conductor((TempoChange(0.0, 250_000), TempoChange(1.0, 500_000)), (MetreChange(1.0, 3, 4),))
    assert [round(map_.quarters_at(t), 6) for t, _ in faster] == [round(conductor.quarters_at(t), 6)
                                                                  for t, _ in events]


@needs_synth
def test_wav_renders_the_generated_file(model, tmp_path):
    out, wav = tmp_path / "g.mid", tmp_path / "g.wav"
    proc = generate(model, str(out), "--seconds", "2", "--seed", "3", "--wav", str(wav))
    assert proc.returncode == 0, proc.stderr
    assert f"audio {wav}" in proc.stdout and abs(wav_samples(wav)).max() > 100


def test_a_wav_that_cannot_be_made_fails_before_generating(model, tmp_path):
    out = tmp_path / "g.mid"
    proc = subprocess.run([sys.executable, "-m", "musebridge", "generate", str(out), "--model", str(model),
                           "--seconds", "2", "--quiet", "--wav", str(tmp_path / "g.wav")],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MUSEBRIDGE_SOUNDFONT": str(tmp_path / "none.sf2")})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"musebridge generate: soundfont {tmp_path / 'none.sf2'} (from $MUSEBRIDGE_SOUNDFONT) does not exist; "
        "give a General MIDI .sf2 file"]
    assert not out.exists() and list(tmp_path.iterdir()) == []
