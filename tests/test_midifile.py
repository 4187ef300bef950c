"""Standard MIDI files through the codec: real files round trip, and the file format's corners.

Real files: the MIDI files shipped inside the music21 package (midi/testPrimitive, omr) and MIDI written by
music21 from a few corpus scores. Round trip = read -> encode -> decode -> write -> read; it must keep every
note (same count) with onsets and offsets within half a grid step (see tests/codec_oracle.py).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import mido
import pytest
from codec_oracle import assert_same_notes, oracle_notes
from musebridge.engine.errors import MidiFileError
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import decode_to_file, encode_file, read_midi, write_midi

music21 = pytest.importorskip("music21")
M21 = Path(music21.__file__).parent
SHIPPED = sorted((M21 / "midi" / "testPrimitive").glob("*.mid")) + sorted(M21.rglob("omr/*.mid"))
CORPUS = {"bach/bwv66.6": {}, "palestrina/Agnus_02": {}, "essenFolksong/altdeu10": {"number": 1}}


@pytest.fixture(scope="module")
def corpus_midi(tmp_path_factory):
    """Corpus scores written to MIDI by music21, once per module."""
    folder = tmp_path_factory.mktemp("corpus")
    paths = {}
    for name, kw in CORPUS.items():
        paths[name] = folder / (name.replace("/", "_") + ".mid")
        music21.corpus.parse(name, **kw).write("midi", fp=str(paths[name]))
    return paths


def assert_round_trip(path: Path, tmp_path: Path) -> None:
    original = read_midi(path)
    encoded = encode_file(path)
    out = tmp_path / "roundtrip.mid"
    decode_to_file(encoded.tokens, out)
    back = read_midi(out)
    want = oracle_notes(original.events, original.end_time)
    got = oracle_notes(back.events, back.end_time)
    assert len(want) == len(got) == encoded.notes
    assert_same_notes(want, got)


def test_music21_ships_the_files_we_test():
    assert len(SHIPPED) >= 20


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_files_round_trip(path, tmp_path):
    assert_round_trip(path, tmp_path)


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_corpus_scores_round_trip(name, corpus_midi, tmp_path):
    assert_round_trip(corpus_midi[name], tmp_path)


def test_decoded_files_are_written_on_the_grid_exactly(corpus_midi, tmp_path):
    encoded = encode_file(corpus_midi["bach/bwv66.6"])
    decode_to_file(encoded.tokens, tmp_path / "out.mid")
    for time_s, _ in read_midi(tmp_path / "out.mid").events:
        assert abs(time_s / V.GRID_S - round(time_s / V.GRID_S)) < 1e-6
    assert encode_file(tmp_path / "out.mid").tokens == encoded.tokens


# ---------------------------------------------------------------- the file format's corners


def _track(*events) -> mido.MidiTrack:
    """A track from (delta ticks, message) pairs."""
    return mido.MidiTrack(msg.copy(time=delta) for delta, msg in events)


def _note(type_, note, velocity=90, channel=0):
    return mido.Message(type_, note=note, velocity=velocity, channel=channel)


def _times(path) -> list[tuple[float, str, int]]:
    return [(round(t, 6), m.type, getattr(m, "note", -1)) for t, m in read_midi(path).events]


def test_tempo_changes_in_a_second_track_apply_to_every_track(tmp_path):
    notes = _track(
        (0, _note("note_on", 60)), (480, _note("note_off", 60)),  # 0.5 s at 120 bpm
        (0, _note("note_on", 62)), (480, _note("note_off", 62)),  # 0.25 s at 240 bpm
        (0, _note("note_on", 64)), (480, _note("note_off", 64)),  # 1.0 s at 60 bpm
    )
    tempo = _track(
        (0, mido.MetaMessage("track_name", name="conductor")),
        (480, mido.MetaMessage("set_tempo", tempo=250_000)),
        (480, mido.MetaMessage("set_tempo", tempo=1_000_000)),
    )
    path = tmp_path / "tempo.mid"
    mido.MidiFile(type=1, ticks_per_beat=480, tracks=[notes, tempo]).save(path)
    assert [t for t, kind, _ in _times(path) if kind == "note_on"] == [0.0, 0.5, 0.75]
    assert read_midi(path).end_time == pytest.approx(1.75)
    encoded = encode_file(path)
    assert [V.describe(t) for t in encoded.tokens[encoded.prefix_len :]] == [
        "VEL_22", "ON_piano_60", "TIME_50", "OFF_piano_60", "ON_piano_62", "TIME_25", "OFF_piano_62",
        "ON_piano_64", "TIME_100", "OFF_piano_64",
    ]


def _raw_midi(track_bytes: bytes, division: int = 96, fmt: int = 0) -> bytes:
    header = b"MThd" + struct.pack(">IHHH", 6, fmt, 1, division)
    return header + b"MTrk" + struct.pack(">I", len(track_bytes)) + track_bytes


def test_running_status_is_read(tmp_path):
    track = bytes(
        [0x00, 0x90, 60, 100,  # note on C4
         0x00, 64, 100,  # running status: note on E4
         0x60, 60, 0,  # running status, velocity 0: note off C4 after 96 ticks (0.5 s)
         0x00, 64, 0,
         0x00, 0xC0, 40,  # program change: violin
         0x00, 0x90, 67, 80,
         0x60, 0x80, 67, 0,
         0x00, 0xFF, 0x2F, 0x00]
    )
    path = tmp_path / "running.mid"
    path.write_bytes(_raw_midi(track))
    assert _times(path) == [
        (0.0, "note_on", 60), (0.0, "note_on", 64), (0.5, "note_on", 60), (0.5, "note_on", 64),
        (0.5, "program_change", -1), (0.5, "note_on", 67), (1.0, "note_off", 67),
    ]
    encoded = encode_file(path)
    assert [V.describe(t) for t in encoded.tokens[encoded.prefix_len :]] == [
        "VEL_25", "ON_piano_60", "ON_piano_64", "TIME_50", "OFF_piano_60", "OFF_piano_64",
        "VEL_20", "ON_strings_67", "TIME_50", "OFF_strings_67",
    ]


def test_type_0_and_type_1_files_tokenize_alike(tmp_path):
    events = [(0, _note("note_on", 60, channel=0)), (0, _note("note_on", 36, channel=9)),
              (240, _note("note_off", 36, channel=9)), (240, _note("note_off", 60, channel=0))]
    mido.MidiFile(type=0, ticks_per_beat=480, tracks=[_track(*events)]).save(tmp_path / "t0.mid")
    piano = _track(events[0], (480, events[3][1]))
    drums = _track(events[1], (240, events[2][1]))
    mido.MidiFile(type=1, ticks_per_beat=480, tracks=[piano, drums]).save(tmp_path / "t1.mid")
    assert encode_file(tmp_path / "t0.mid").tokens == encode_file(tmp_path / "t1.mid").tokens
    assert encode_file(tmp_path / "t0.mid").instruments == (0, 11)


@pytest.mark.parametrize("fps,ticks_per_frame", [(25, 40), (24, 4), (30, 100)])
def test_smpte_time_division(tmp_path, fps, ticks_per_frame):
    division = ((256 - fps) << 8) | ticks_per_frame  # high byte -fps, low byte ticks per frame
    ticks = fps * ticks_per_frame // 2  # half a second
    delta = bytes(mido.midifiles.midifiles.encode_variable_int(ticks))
    track = bytes([0x00, 0x90, 60, 100]) + delta + bytes([0x80, 60, 0, 0x00, 0xFF, 0x2F, 0x00])
    path = tmp_path / "smpte.mid"
    path.write_bytes(_raw_midi(track, division))
    assert _times(path) == [(0.0, "note_on", 60), (0.5, "note_off", 60)]


def test_unusable_smpte_rate_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.mid"
    path.write_bytes(_raw_midi(bytes([0x00, 0xFF, 0x2F, 0x00]), ((256 - 7) << 8) | 10))
    with pytest.raises(MidiFileError, match="time division"):
        read_midi(path)


def test_a_file_lasting_days_is_refused_as_damaged(tmp_path):
    track = bytes([0x00, 0xFF, 0x51, 0x03, 0xFF, 0xFF, 0xFF,  # tempo: 16.7 s per beat
                   0xFF, 0xFF, 0xFF, 0x7F, 0x90, 60, 100,  # 268 million ticks later: a note
                   0x00, 0xFF, 0x2F, 0x00])
    path = tmp_path / "days.mid"
    path.write_bytes(_raw_midi(track, division=1))
    with pytest.raises(MidiFileError, match="hours"):
        encode_file(path)


def test_notes_open_at_the_end_end_at_the_end_of_the_file(tmp_path):
    track = _track((0, _note("note_on", 60)), (0, _note("note_on", 60)), (960, mido.MetaMessage("end_of_track")))
    path = tmp_path / "open.mid"
    mido.MidiFile(type=0, ticks_per_beat=480, tracks=[track]).save(path)
    encoded = encode_file(path)
    assert encoded.notes == 2 and encoded.duration == pytest.approx(1.0)
    assert [V.describe(t) for t in encoded.tokens[-3:]] == ["TIME_100", "OFF_piano_60", "OFF_piano_60"]


def test_sysex_and_meta_messages_are_skipped(tmp_path):
    track = _track(
        (0, mido.MetaMessage("key_signature", key="D")),
        (0, mido.Message("sysex", data=[0x7E, 0x7F, 0x09, 0x01])),
        (0, _note("note_on", 62)),
        (480, _note("note_off", 62)),
    )
    path = tmp_path / "sysex.mid"
    mido.MidiFile(type=0, tracks=[track]).save(path)
    assert [m.type for _, m in read_midi(path).events] == ["note_on", "note_off"]


# ---------------------------------------------------------------- errors and atomic writes


@pytest.mark.parametrize(
    "content,problem",
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"hello, I am text\n", "not a MIDI file"),
        (b"\x89PNG\r\n\x1a\n" + bytes(40), "not a MIDI file"),
        (b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x01\xe0MTrx" + bytes(8), "not a valid MIDI file"),
        ("truncate", "truncated"),
        ("folder", "folder"),
    ],
)
def test_bad_files_raise_midi_file_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "in.mid"
    if content == "truncate":
        good = (M21 / "midi" / "testPrimitive" / "test03.mid").read_bytes()
        path.write_bytes(good[: len(good) // 2])
    elif content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(MidiFileError) as info:
        encode_file(path)
    message = str(info.value)
    assert message.startswith(str(path)) and problem in message and "\n" not in message


def test_write_into_a_missing_folder_leaves_nothing(tmp_path):
    target = tmp_path / "missing" / "out.mid"
    with pytest.raises(MidiFileError, match="does not exist"):
        write_midi([Timed(0.0, _note("note_on", 60))], target)
    assert not target.parent.exists()


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "out.mid"
    target.write_bytes(b"old")

    def broken_save(self, filename=None, file=None):
        file.write(b"MThd half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mido.MidiFile, "save", broken_save)
    with pytest.raises(MidiFileError, match="No space left"):
        write_midi([Timed(0.0, _note("note_on", 60))], target)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.mid"]


def test_tempo_map_metre_and_track_names_survive_a_write_and_read(tmp_path):
    """A 65 BPM 3/4 file with a pickup bar and a tempo change reads back with the same conductor, names, and the
    events at the same times in seconds."""
    from musebridge.engine.tokens.midifile import Conductor, MetreChange, TempoChange

    conductor = Conductor((TempoChange(0.0, 923077), TempoChange(5.0, 600000)),
                          (MetreChange(0.0, 1, 4), MetreChange(0.923077, 3, 4)))
    events = [Timed(0.0, mido.Message("note_on", note=60, velocity=80)),
              Timed(2.77, mido.Message("note_off", note=60)),
              Timed(6.0, mido.Message("note_on", note=62, velocity=80)),
              Timed(6.5, mido.Message("note_off", note=62))]
    path = tmp_path / "waltz.mid"
    write_midi(events, path, ticks_per_beat=960, track_names={0: "Melody"}, conductor=conductor)
    back = read_midi(path)
    assert [t.tempo for t in back.conductor.tempos] == [923077, 600000]
    assert [(m.numerator, m.denominator) for m in back.conductor.metres] == [(1, 4), (3, 4)]
    assert back.track_names == {0: "Melody"}
    assert [round(e.time, 3) for e in back.events] == [0.0, 2.77, 6.0, 6.5]
    bars = back.conductor.bar_starts(8.0)
    assert bars[:3] == pytest.approx([0.0, 0.923077, 0.923077 + 3 * 0.923077], abs=1e-3)


def test_write_midi_ends_every_hanging_note_at_the_last_event(tmp_path):
    """A pitch struck twice and released once, a note never released, and a note ended by CC123: the file gets
    one note-off for each note still sounding, at the last event's time, and none for the CC123's."""
    events = [Timed(0.0, _note("note_on", 60)), Timed(0.5, _note("note_on", 60)),
              Timed(1.0, _note("note_off", 60)), Timed(1.2, _note("note_on", 64, channel=1)),
              Timed(1.3, _note("note_on", 67, channel=2)),
              Timed(1.4, mido.Message("control_change", channel=2, control=123, value=0)),
              Timed(2.0, mido.Message("control_change", channel=0, control=7, value=100))]
    path = tmp_path / "hanging.mid"
    write_midi(events, path)
    back = [(round(t, 6), m) for t, m in read_midi(path).events]
    assert [(t, m) for t, m in back if m.type != "note_off"] == [e for e in events if e.msg.type != "note_off"]
    offs = [(t, m.channel, m.note) for t, m in back if m.type == "note_off"]
    assert offs == [(1.0, 0, 60), (2.0, 0, 60), (2.0, 1, 64)]


def test_write_midi_names_an_unnamed_track_after_the_class_it_plays(tmp_path):
    """A bass program on channel 1 is a 'bass' track, not the channel's default class ('piano')."""
    events = [Timed(0.0, mido.Message("program_change", channel=0, program=33)), Timed(0.0, _note("note_on", 40)),
              Timed(1.0, _note("note_off", 40)), Timed(0.0, _note("note_on", 36, channel=9)),
              Timed(1.0, _note("note_off", 36, channel=9))]
    path = tmp_path / "bass.mid"
    write_midi(sorted(events, key=lambda e: e.time), path, track_names={9: "Kit"})
    assert read_midi(path).track_names == {0: "bass", 9: "Kit"}
