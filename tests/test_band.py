"""Band parts over the corpus's melodies: the harmonizer, chord extraction, grooves per metre, an mma render, the
corpus step (cache, splits) and the message when mma is missing. The mma tests skip where mma is not installed."""

from __future__ import annotations

import json
import shutil

import mido
import numpy as np
import pytest
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import (
    Conductor,
    MetreChange,
    TempoChange,
    notes_from_events,
    read_midi,
    write_midi,
)
from musebridge.export import band as B
from musebridge.export.corpus import split_of
from musebridge.export.corpus_sources import midi_pieces
from musebridge.export.harmony import (
    bar_slots,
    beat_slots,
    chords_from_voices,
    estimate_key,
    harmonize,
)

from musebridge.cli import main

needs_mma = pytest.mark.skipif(shutil.which("mma") is None, reason="mma is not installed (apt-get install mma)")


def melody(*notes: tuple[int, float]) -> np.ndarray:
    """(pitch, quarter notes) in a row -> an (n, 3) array of start, end, pitch."""
    out, t = [], 0.0
    for pitch, length in notes:
        out.append((t, t + length, pitch))
        t += length
    return np.array(out, dtype=float)


def names(chords) -> list[str]:
    return [c.name if c is not None else "-" for c in chords]


def write_piece(path, parts: dict[int, list[tuple[float, float, int]]], conductor: Conductor,
                track_names: dict[int, str] | None = None, programs: dict[int, int] | None = None) -> None:
    """A MIDI file: channel -> notes (start and end in seconds, pitch)."""
    items = [(0.0, 0, mido.Message("program_change", channel=ch, program=(programs or {}).get(ch, 73)))
             for ch in parts]
    for ch, notes in parts.items():
        for start, end, pitch in notes:
            items.append((start, 2, mido.Message("note_on", channel=ch, note=pitch, velocity=80)))
            items.append((end, 1, mido.Message("note_off", channel=ch, note=pitch, velocity=0)))
    items.sort(key=lambda item: (item[0], item[1]))
    write_midi([Timed(t, m) for t, _, m in items], path, ticks_per_beat=960, track_names=track_names,
               conductor=conductor)


# --- chords --------------------------------------------------------------------------------------------------

def test_c_major_melody_outlining_c_f_g_c_gets_i_iv_v_i():
    notes = melody((60, 1), (64, 1), (67, 1), (64, 1), (65, 1), (69, 1), (72, 1), (69, 1),
                   (67, 1), (71, 1), (74, 1), (71, 1), (72, 4))
    assert estimate_key(notes).name == "C major"
    slots = bar_slots([(0, 4), (4, 8), (8, 12), (12, 16)], halves=False)
    assert names(harmonize(notes, slots, beat_q=1.0)) == ["C", "F", "G", "C"]
    halves = harmonize(notes, bar_slots([(0, 4), (4, 8), (8, 12), (12, 16)], halves=True), beat_q=1.0)
    assert names(halves) == ["C", "C", "F", "F", "G", "G", "C", "C"]  # no change inside a bar without cause


def test_a_minor_melody_is_heard_in_a_minor_with_a_cadence():
    notes = melody((69, 1), (72, 1), (76, 1), (72, 1), (74, 1), (77, 1), (74, 1), (71, 1),
                   (68, 1), (71, 1), (76, 1), (71, 1), (69, 4))
    key = estimate_key(notes)
    assert key.name == "A minor"
    chords = harmonize(notes, bar_slots([(0, 4), (4, 8), (8, 12), (12, 16)], halves=False), key, beat_q=1.0)
    assert names(chords) == ["Am", "Dm", "E", "Am"]


def test_the_seventh_in_the_melody_makes_a_dominant_seventh():
    notes = melody((67, 1), (71, 1), (74, 1), (77, 1), (72, 4))  # G B D F | C
    assert names(harmonize(notes, bar_slots([(0, 4), (4, 8)], halves=False), beat_q=1.0)) == ["G7", "C"]


def chorale() -> dict[int, list[tuple[float, float, int]]]:
    """I IV V7 I in C major, one chord per beat, with a passing note in the alto: four voices."""
    return {
        0: [(0, 1, 76), (1, 2, 77), (2, 3, 74), (3, 4, 72)],  # soprano E F D C
        1: [(0, 1, 67), (1, 1.5, 69), (1.5, 2, 71), (2, 3, 71), (3, 4, 67)],  # alto G A (B) B G
        2: [(0, 1, 64), (1, 2, 65), (2, 3, 65), (3, 4, 64)],  # tenor E F F E
        3: [(0, 1, 48), (1, 2, 53), (2, 3, 43), (3, 4, 48)],  # bass C F G C
    }


def test_chords_from_the_voices_of_a_four_voice_chorale():
    notes = np.array([(s, e, p) for part in chorale().values() for s, e, p in part], dtype=float)
    chords = chords_from_voices(notes, beat_slots([(0.0, 4.0)], 1.0), beat_q=1.0)
    assert names(chords) == ["C", "F", "G7", "C"]


def test_a_chorale_file_gives_its_melody_and_its_harmony(tmp_path):
    path = tmp_path / "chorale.mid"
    seconds = {ch: [(s / 2, e / 2, p) for s, e, p in part] for ch, part in chorale().items()}  # 120 bpm
    write_piece(path, seconds, Conductor((TempoChange(0.0, 500_000),), (MetreChange(0.0, 4, 4),)),
                {0: "Soprano", 1: "Alto", 2: "Tenor", 3: "Bass"})
    source = B.read_source(path)
    assert source.chords_from == "voices"
    assert [n.pitch for n in source.melody] == [76, 77, 74, 72]
    lay = B.layout(source)
    assert names(c for _, _, c in B.chord_timeline(source, lay)) == ["C", "F", "G7", "C"]


def test_chord_symbols_come_from_the_chords_part(tmp_path):
    path = tmp_path / "tune.mid"
    tune = [(i * 0.5, i * 0.5 + 0.5, p) for i, p in enumerate([67, 69, 71, 72, 74, 72, 71, 69])]  # 2 bars 4/4
    chords = [(0.0, 2.0, p) for p in (43, 55, 59, 62)] + [(2.0, 4.0, p) for p in (38, 54, 57, 60)]  # G, D7
    write_piece(path, {0: tune, 1: chords}, Conductor((TempoChange(0.0, 500_000),), (MetreChange(0.0, 4, 4),)),
                {0: "part 1", 1: "chords"})
    source = B.read_source(path)
    assert source.chords_from == "symbols" and [n.pitch for n in source.melody] == [p for _, _, p in tune]
    timeline = B.chord_timeline(source, B.layout(source))
    assert names(c for _, _, c in timeline) == ["G"] * 4 + ["D7"] * 4


# --- metres and grooves -------------------------------------------------------------------------------------

def test_every_band_style_has_a_groove_for_each_common_metre():
    for numerator, denominator in ((2, 4), (4, 4), (2, 2), (3, 4), (6, 8), (12, 8), (4, 2), (3, 2)):
        metre = B.metre_of(numerator, denominator)
        for style in B.BAND_STYLES:
            groove = B.choose_groove(f"piece-{numerator}-{denominator}", style, metre)
            assert groove.style == style and B.fits(groove, metre)
    assert B.metre_of(5, 4) is None
    with pytest.raises(B.BandError, match="no jazz groove"):
        B.choose_groove("x", "jazz", B.Metre(9, 8, "compound", 3, 1.5))
    assert set(B.MELODY_PROGRAMS) == set(B.BAND_STYLES) == {g.style for g in B.GROOVES}


def test_a_pickup_is_left_to_the_melody_and_bars_follow_the_piece(tmp_path):
    path = tmp_path / "pickup.mid"
    conductor = Conductor((TempoChange(0.0, 600_000),), (MetreChange(0.0, 1, 4), MetreChange(0.6, 3, 4)))
    tune = [(0.0, 0.6, 67)] + [(0.6 + i * 0.6, 1.2 + i * 0.6, 72) for i in range(6)]
    write_piece(path, {0: tune}, conductor)
    lay = B.layout(B.read_source(path))
    assert lay.metre.family == "triple" and lay.start == pytest.approx(1.0)
    assert [round(s, 6) for s, _ in lay.bars] == [1.0, 4.0]


def test_a_metre_change_gets_no_band(tmp_path):
    path = tmp_path / "changes.mid"
    conductor = Conductor((TempoChange(0.0, 500_000),), (MetreChange(0.0, 3, 4), MetreChange(3.0, 4, 4)))
    write_piece(path, {0: [(i * 0.5, i * 0.5 + 0.5, 60) for i in range(12)]}, conductor)
    with pytest.raises(B.BandError, match="metre changes"):
        B.layout(B.read_source(path))


# --- mma ----------------------------------------------------------------------------------------------------

def four_bars(path, tempo: int = 750_000) -> None:
    """A 4-bar 3/4 melody in C (C F G C outlined) at 80 bpm, with a one-beat pickup."""
    beat = tempo / 1e6
    pitches = [67, 72, 76, 79, 77, 72, 69, 71, 74, 79, 72, 76, 72]
    tune = [(i * beat, (i + 1) * beat, p) for i, p in enumerate(pitches)]
    conductor = Conductor((TempoChange(0.0, tempo),), (MetreChange(0.0, 1, 4), MetreChange(beat, 3, 4)))
    write_piece(path, {0: tune}, conductor, {0: "part 1"})


@needs_mma
@pytest.mark.parametrize("style", B.BAND_STYLES)
def test_an_mma_render_has_bass_below_drums_on_10_and_the_piece_s_tempo_and_metre(tmp_path, style):
    source, target = tmp_path / "tune.mid", tmp_path / "band.mid"
    four_bars(source)
    groove = B.render_band(source, target, f"{style}-band-tune", style, B.BandConfig())
    assert groove.style == style and groove.family == "triple"
    band, original = read_midi(target), read_midi(source)
    assert band.conductor == original.conductor  # tempo map and metre kept
    notes = notes_from_events(band.events)
    melody_notes = [n for n in notes if n.channel == 0]
    assert [n.pitch for n in melody_notes] == [n.pitch for n in notes_from_events(original.events)]
    bass = [n for n in notes if band.track_names[n.channel] == "bass"]
    drums = [n for n in notes if n.channel == 9]
    assert bass and drums and band.track_names[9] == "drums"
    programs = {m.channel: m.program for _, m in band.events if m.type == "program_change"}
    assert all(32 <= programs[n.channel] <= 39 for n in bass)
    assert max(n.pitch for n in bass) < min(n.pitch for n in melody_notes)
    first_bar = 0.75
    assert min(n.start for n in notes if n.channel != 0) >= first_bar - 0.05  # the pickup is the melody's
    assert max(n.end for n in notes) <= max(n.end for n in melody_notes) + 1e-6
    mid = mido.MidiFile(target)  # every note released: a note-off for each note-on
    messages = [m for track in mid.tracks for m in track if m.type in ("note_on", "note_off")]
    on = sum(1 for m in messages if m.type == "note_on" and m.velocity > 0)
    off = len(messages) - on
    assert on == off == len(notes)


@needs_mma
def test_the_mma_song_follows_the_chords_bar_by_bar(tmp_path):
    source = tmp_path / "tune.mid"
    four_bars(source)
    src = B.read_source(source)
    lay = B.layout(src)
    text = B.mma_text("p", B.Groove("Waltz", "folk", "triple", 3), lay, B.chord_timeline(src, lay), 80.0)
    bars = [line for line in text.splitlines() if not line.startswith(("//", "RndSeed", "Groove", "Tempo"))]
    assert [line.split()[0] for line in bars] == ["C", "F", "G", "C"]
    assert "Tempo 80.00" in text


def test_a_missing_mma_is_named_with_the_fix(tmp_path):
    with pytest.raises(B.BandError) as info:
        B.run_mma("Groove Folk\nC\n", B.BandConfig(mma=str(tmp_path / "no-mma")))
    message = str(info.value)
    assert "\n" not in message and "apt-get install mma" in message and "mellowood" in message


def midi_folder(tmp_path, split: str):
    """A --midi folder with one folk tune whose id falls in `split`."""
    folder = tmp_path / "midi"
    (folder / "folk").mkdir(parents=True)
    for n in range(200):
        path = folder / "folk" / f"tune{n}.mid"
        four_bars(path)
        piece = next(p for p in midi_pieces(folder) if p.path == str(path))
        if split_of(piece.id) == split:
            return folder, piece.id
        path.unlink()
    raise AssertionError(f"no id in {split} among 200 names")


def test_without_mma_the_band_step_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    pytest.importorskip("tqdm")
    folder, _ = midi_folder(tmp_path, "train")
    monkeypatch.setenv("PATH", str(tmp_path))  # no mma on it
    root = tmp_path / "corpus"
    assert main(["corpus", "build", "--root", str(root), "--no-music21", "--midi", str(folder), "--band",
                 "--jobs", "1", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "apt-get install mma" in err and "mellowood" in err
    assert not (root / "index.jsonl").exists()
    assert main(["corpus", "build", "--root", str(root), "--no-music21", "--midi", str(folder),
                 "--jobs", "1", "--quiet"]) == 0  # without --band mma is not needed
    assert len((root / "index.jsonl").read_text().splitlines()) == 1


@needs_mma
def test_the_band_piece_of_a_test_split_source_stays_in_the_test_split(tmp_path, capsys):
    pytest.importorskip("tqdm")
    folder, source_id = midi_folder(tmp_path, "test")
    root = tmp_path / "corpus"
    args = ["corpus", "build", "--root", str(root), "--no-music21", "--midi", str(folder), "--band",
            "--band-per-piece", "5", "--jobs", "1", "--quiet"]
    assert main(args) == 0
    records = [json.loads(line) for line in (root / "index.jsonl").read_text().splitlines()]
    band = [r for r in records if r["source"] == f"band:{source_id}"]
    assert sorted(r["style"] for r in band) == sorted(B.BAND_STYLES)
    assert all(r["split"] == "test" and r["path"].startswith(f"midi/band-{r['style']}/") for r in band)
    test_ids = json.loads((root / "tokens" / "test.json").read_text())["ids"]
    assert {r["id"] for r in band} <= set(test_ids)
    stamps = {r["id"]: (root / r["path"]).stat().st_mtime_ns for r in band}
    assert main(args) == 0  # cached: never rendered again
    assert {r["id"]: (root / r["path"]).stat().st_mtime_ns for r in band} == stamps
    assert main(["corpus", "stats", "--root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {style: t["pieces"] for style, t in info["band"].items()} == dict.fromkeys(B.BAND_STYLES, 1)
