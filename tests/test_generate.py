"""`musebridge generate` in its three forms, and its refusals, through the real command."""

from __future__ import annotations

import subprocess
import sys

import mido
import pytest
from musebridge.engine.inference.model_file import default_model_path
from musebridge.engine.tokens.instruments import INSTRUMENTS
from musebridge.engine.tokens.midifile import notes_from_events, read_midi

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


# ---------------------------------------------------------------- the output's layout: tempo map, metre, tracks


def write_prompt(path, bpm=65.0, metre=(3, 4), tracks=(("Melody", 10, 73, (74, 76, 78, 79, 78, 76)),
                                                        ("Bass line", 4, 33, (38, 45)))):
    """A type-1 file written by mido itself: a conductor track (bpm, metre), then one named track per
    (name, channel, program, pitches); melody pitches a quarter note each, bass pitches a 3/4 bar each."""
    tpb = 480
    conductor = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(bpm)),
                                mido.MetaMessage("time_signature", numerator=metre[0], denominator=metre[1])])
    out = [conductor]
    for name, channel, program, pitches in tracks:
        ticks = tpb if len(pitches) > 2 else 3 * tpb
        track = mido.MidiTrack([mido.MetaMessage("track_name", name=name),
                                mido.Message("program_change", channel=channel, program=program)])
        for pitch in pitches:
            track += [mido.Message("note_on", channel=channel, note=pitch, velocity=80),
                      mido.Message("note_off", channel=channel, note=pitch, time=ticks)]
        out.append(track)
    mido.MidiFile(type=1, ticks_per_beat=tpb, tracks=out).save(path)


def tracks_of(path) -> dict[str, tuple[set[int], list]]:
    """Track name -> (the channels of its channel messages, its program changes as (tick, program))."""
    found = {}
    for track in mido.MidiFile(path).tracks[1:]:
        channels = {m.channel for m in track if not m.is_meta}
        ticks, programs = 0, []
        for m in track:
            ticks += m.time
            if m.type == "program_change":
                programs.append((ticks, m.program))
        found[track.name] = (channels, programs)
    return found


def test_a_prompt_keeps_its_tempo_metre_and_tracks_and_the_model_plays_on_its_own(tmp_path):
    """65 bpm in 3/4, a flute 'Melody' on channel 11 and a 'Bass line' on channel 5 (the defaults of the pipe and
    bass classes, as in a file MuseBridge wrote): the continuation by the bundled model keeps all of that, and the
    model's flute moves to the first free channel (1) on a track of its own with its program at time 0."""
    prompt, out = tmp_path / "waltz.mid", tmp_path / "more.mid"
    write_prompt(prompt)
    proc = generate(str(out), "--prompt", str(prompt), "--seconds", "6", "--seed", "1", "--instruments", "pipe")
    assert proc.returncode == 0, proc.stderr
    assert mido.MidiFile(out).ticks_per_beat == 960
    back, before = read_midi(out), read_midi(prompt)
    assert [t.tempo for t in back.conductor.tempos] == [mido.bpm2tempo(65)]
    assert [(m.time, m.numerator, m.denominator) for m in back.conductor.metres] == [(0.0, 3, 4)]
    tracks = tracks_of(out)
    assert tracks == {"Melody": ({10}, [(0, 73)]), "Bass line": ({4}, [(0, 33)]),
                      "MuseBridge pipe": ({0}, [(0, 73)])}
    notes = notes_from_events(back.events, back.end_time)
    kept = [(round(n.start, 3), round(n.end, 3), n.pitch, n.channel) for n in notes if n.channel in (4, 10)]
    assert kept == [(round(n.start, 3), round(n.end, 3), n.pitch, n.channel)
                    for n in notes_from_events(before.events, before.end_time)]
    model_notes = [n for n in notes if n.channel == 0]
    assert model_notes and min(n.start for n in model_notes) >= before.end_time - 0.01


def test_accompaniment_keeps_the_melody_tempo_and_track_name(tmp_path):
    """A melody at 100 bpm in 6/8 named 'Tune' on channel 6 (the strings' default): the accompaniment in
    strings, written from the Generated result, keeps the tempo, metre and name, and the strings move to
    channel 1 with program 48."""
    from musebridge.engine.inference.sampler import SamplingConfig
    from musebridge.engine.sessions import generate as G
    from musebridge.engine.sessions.session import Engine
    from musebridge.engine.tokens.instruments import instrument_index

    melody_file, out = tmp_path / "tune.mid", tmp_path / "band.mid"
    write_prompt(melody_file, bpm=100, metre=(6, 8), tracks=(("Tune", 5, 73, (67, 69, 71, 72, 74, 72, 71, 69)),))
    melody = read_midi(melody_file)
    config = G.GenerateConfig(instruments=(instrument_index("strings"),), sampling=SamplingConfig(seed=3))
    result = G.accompaniment(Engine.load(None), list(melody.events), config, conductor=melody.conductor,
                             track_names=melody.track_names)
    assert set(result.parts) == {"melody", "model"} and result.parts["melody"] == list(melody.events)
    result.write(out)
    back = read_midi(out)
    assert [t.tempo for t in back.conductor.tempos] == [mido.bpm2tempo(100)]
    assert [(m.numerator, m.denominator) for m in back.conductor.metres] == [(6, 8)]
    assert tracks_of(out) == {"Tune": ({5}, [(0, 73)]), "MuseBridge strings": ({0}, [(0, 48)])}
    model_notes = [n for n in notes_from_events(back.events, back.end_time) if n.channel == 0]
    assert model_notes and max(n.end for n in model_notes) <= melody.end_time + 0.01


def test_from_scratch_is_written_at_120_bpm_in_4_4_unless_told(tmp_path):
    plain, waltz = tmp_path / "plain.mid", tmp_path / "waltz.mid"
    for path, extra in ((plain, []), (waltz, ["--bpm", "90", "--metre", "3/4"])):
        proc = generate(str(path), "--instruments", "strings", "bass", "--seconds", "4", "--seed", "2", *extra)
        assert proc.returncode == 0, proc.stderr
    assert mido.MidiFile(plain).ticks_per_beat == 500 and mido.MidiFile(waltz).ticks_per_beat == 960
    for path, tempo, metre in ((plain, 500_000, (4, 4)), (waltz, mido.bpm2tempo(90), (3, 4))):
        conductor = read_midi(path).conductor
        assert [t.tempo for t in conductor.tempos] == [tempo]
        assert [(m.numerator, m.denominator) for m in conductor.metres] == [metre]
    tracks = tracks_of(plain)
    assert set(tracks) <= {"MuseBridge strings", "MuseBridge bass"} and tracks
    for name, (channels, programs) in tracks.items():
        cls = next(i for i in INSTRUMENTS if name.endswith(i.name))
        assert channels == {cls.channel} and programs == [(0, cls.program)]
    plain_events, waltz_events = read_midi(plain).events, read_midi(waltz).events  # same seconds, any tempo map
    assert [m for _, m in plain_events] == [m for _, m in waltz_events]
    assert [t for t, _ in plain_events] == pytest.approx([t for t, _ in waltz_events], abs=1e-3)


def test_model_channels_default_when_free_else_the_lowest_free_never_10():
    from musebridge.engine.errors import EngineError
    from musebridge.engine.sessions.generate import model_channels

    strings, bass, drums = 5, 4, 11
    assert model_channels([strings, bass], set()) == {strings: 5, bass: 4}
    assert model_channels([strings, bass], {0, 1, 2, 3, 5}) == {strings: 6, bass: 4}
    assert model_channels([strings, drums], {9, *range(9)}) == {strings: 10, drums: 9}
    with pytest.raises(EngineError, match="no MIDI channel is left for the model's strings"):
        model_channels([strings], set(range(16)) - {9})


@pytest.mark.parametrize("args, needle", [
    (["--prompt", CHORALE, "--metre", "3/4"], "--metre"),
    (["--bpm", "0"], "--bpm"),
    (["--metre", "3/5"], "--metre"),
])
def test_bad_tempo_or_metre_one_line_exit_2_no_file(tmp_path, args, needle):
    out = tmp_path / "x.mid"
    proc = generate(str(out), *args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr
    assert not out.exists()
