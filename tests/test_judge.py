"""`musebridge judge` end to end on hand-made MIDI with the bundled model: it runs, writes JSON and a PNG, is
reproducible with a seed, and its real-music figures are the known answers of the hand-made pieces."""

from __future__ import annotations

import json

import mido
import pytest
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import write_midi

from musebridge.cli import main

SCALE = [60, 62, 64, 65, 67, 69, 71, 72, 71, 69, 67, 65, 64, 62]


def duet_piece(path, transpose: int, seconds: float = 24.0) -> None:
    """A C-major melody (flute, channel 0) in half-second notes, and a bass two octaves below striking with each
    melody note (channel 1): consonant, aligned, in key, every note released."""
    events = [Timed(0.0, mido.Message("program_change", channel=0, program=73)),
              Timed(0.0, mido.Message("program_change", channel=1, program=32))]
    t, i = 0.0, 0
    while t < seconds - 0.5:
        pitch = SCALE[i % len(SCALE)] + transpose
        velocity = 70 + 3 * transpose
        for channel, note in ((0, pitch), (1, pitch - 24)):
            events.append(Timed(t, mido.Message("note_on", channel=channel, note=note, velocity=velocity)))
            events.append(Timed(t + 0.45, mido.Message("note_off", channel=channel, note=note)))
        t, i = t + 0.5, i + 1
    write_midi(sorted(events, key=lambda e: e.time), path, track_names={0: "Melody", 1: "Bass"})


@pytest.fixture(scope="module")
def songs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("songs")
    for k, transpose in enumerate((0, 2, 5)):
        duet_piece(folder / f"song{k}.mid", transpose)
    (folder / "broken.mid").write_bytes(b"MThd\x00\x00")
    return folder


def run_judge(folder, out, *extra):
    json_path, png_path = out / "judge.json", out / "judge.png"
    rc = main(["judge", str(folder), "--data", str(out / "no-corpus"), "--prompts", "3", "--renderings", "notated",
               "--json", str(json_path), "--png", str(png_path), "--quiet", *extra])
    return rc, json_path, png_path


def test_judge_writes_json_and_png_and_the_real_figures_are_the_known_answers(songs, tmp_path, capsys):
    rc, json_path, png_path = run_judge(songs, tmp_path, "--modes", "continue", "accompany", "harmonize")
    assert rc == 0
    assert png_path.stat().st_size > 10_000
    result = json.loads(json_path.read_text())
    printed = capsys.readouterr()
    assert "broken.mid" in printed.err  # the damaged file is named and skipped
    assert "consonance with melody" in printed.out
    cont = result["modes"]["continue"]["notated"]
    assert len(cont["pieces"]) == 3
    real = {name: row["real"] for name, row in cont["table"].items()}
    assert real["in_key"] == 1.0  # a C-major scale continues in C major (D and F major share 6 of 7 classes)
    assert real["never_released"] == 0.0 and real["long_share"] == 0.0
    assert real["polyphony"] == pytest.approx(2.0)  # melody + bass
    assert real["ioi_overlap"] == pytest.approx(1.0)  # the same rhythm throughout
    assert real["density_follow"] is None  # every piece has the same density: no correlation to speak of
    assert real["dynamics_follow"] == pytest.approx(1.0)  # each piece keeps its own loudness
    duets = result["modes"]["accompany"]["notated"]["table"]
    assert duets["consonance"]["real"] == 1.0  # two octaves below
    assert duets["onset_alignment"]["real"] == 1.0  # struck with every melody note
    for mode in ("continue", "accompany", "harmonize"):
        table = result["modes"][mode]["notated"]["table"]
        assert all(set(row) == {"real", "model", "chance"} for row in table.values())
    assert result["modes"]["harmonize"]["notated"]["table"]["onset_alignment"]["model"] == 1.0  # voices at once


def test_judge_is_reproducible_with_the_same_seed(songs, tmp_path):
    figures = []
    for run in ("a", "b"):
        out = tmp_path / run
        out.mkdir()
        rc, json_path, _ = run_judge(songs, out, "--modes", "respond", "accompany", "instruments", "--seed", "7",
                                     "--best-of", "2")
        assert rc == 0
        result = json.loads(json_path.read_text())
        figures.append((result["modes"], result["instruments"]))
    assert figures[0] == figures[1]
    sets = [entry["set"] for entry in figures[0][1]]
    assert ["piano", "bass", "drums"] in sets


def test_judge_refuses_bad_values_in_one_line(songs, tmp_path, capsys):
    assert main(["judge", str(songs), "--prompts", "1", "--quiet"]) == 2
    assert main(["judge", str(tmp_path / "missing"), "--quiet", "--png", ""]) == 2
    assert main(["judge", str(songs), "--best-of", "17", "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--prompts 1" in err[0] and "missing: no such file or folder" in err[1] and "--best-of 17" in err[2]


def test_the_style_lines_say_what_the_models_pieces_were_taken_for():
    from musebridge.commands.judge import tables

    row = {"real": 1.0, "real_cv": 0.9, "model": 0.25, "chance": 0.5, "model_named": {"folk": 3, "bach": 1}}
    text = tables({"modes": {}, "style": {"per_style": {"bach": row}}, "seconds": 1.0})
    line = next(line for line in text.splitlines() if line.startswith("style bach"))
    assert "cross-validated 0.900" in line and "model 0.250" in line
    assert line.endswith("the model's pieces named: folk 3, bach 1")


def test_the_style_lines_say_where_the_models_pieces_differ_most():
    from musebridge.commands.judge import tables

    row = {"real": 1.0, "real_cv": 0.9, "model": 0.0, "chance": 0.5, "model_named": {"folk": 4},
           "furthest": [{"feature": "dissonant", "real": 0.111, "model": 0.351, "z": 8.43},
                        {"feature": "range", "real": 26.15, "model": 16.25, "z": -3.74}]}
    lines = tables({"modes": {}, "style": {"per_style": {"bach": row}}, "seconds": 1.0}).splitlines()
    below = lines[next(i for i, line in enumerate(lines) if line.startswith("style bach")) + 1]
    assert below == ("  furthest from the real pieces: dissonant 0.11 -> 0.35 (+8.4 sd), "
                     "range 26.15 -> 16.25 (-3.7 sd)")
