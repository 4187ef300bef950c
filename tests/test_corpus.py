"""The corpus builder: on-disk format, splits, resumability, ABC tune splitting, instruments, stats.

A tiny corpus (two pieces for each of three styles, plus a MIDI folder) is built once per module."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mido
import numpy as np
import pytest

pytest.importorskip("music21")
pytest.importorskip("tqdm")

from musebridge.engine.tokens import vocab as V  # noqa: E402
from musebridge.engine.tokens.codec import Timed  # noqa: E402
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, instrument_class  # noqa: E402
from musebridge.engine.tokens.midifile import encode_file, write_midi  # noqa: E402
from musebridge.export import corpus as C  # noqa: E402
from musebridge.export.corpus_build import BuildConfig, process_piece  # noqa: E402
from musebridge.export.corpus_convert import classify_part, convert_score, load_score, score_parts  # noqa: E402
from musebridge.export.corpus_sources import (  # noqa: E402
    PieceSpec,
    Source,
    count_tunes,
    music21_corpus_dir,
    source_pieces,
    tune_text,
)
from musebridge.export.dataset import LIVE_MARK, load_split  # noqa: E402
from musebridge.export.live_corpus import LIVE_SPLITS, build_live  # noqa: E402

from musebridge.cli import main  # noqa: E402

STYLES = ["bach", "folk", "renaissance"]
FIELDS = ["id", "style", "split", "path", "source", "notes", "seconds", "tokens", "instruments"]

TUNES = """% a header comment
%%abc-charset utf-8

X:1
T:First
M:4/4
L:1/8
K:G
"G"GABc dedB|"D7"A2F2 D4|"G"G8|]

X:7
T:Second
M:3/4
L:1/4
K:D
DEF|A2d|]

X:9
T:Third
M:2/4
L:1/8
K:C
cdef|g4|]
"""


def _midi_folder(base: Path) -> Path:
    folder = base / "mymidi"
    (folder / "jazz").mkdir(parents=True)
    (folder / "jazz" / "nested").mkdir()
    (folder / "Weird Name").mkdir()
    events = [Timed(0.0, mido.Message("program_change", channel=0, program=26))]
    for i, pitch in enumerate([60, 64, 67, 72]):
        events.append(Timed(i * 0.5, mido.Message("note_on", channel=0, note=pitch, velocity=90)))
        events.append(Timed(i * 0.5 + 0.4, mido.Message("note_off", channel=0, note=pitch)))
    write_midi(events, folder / "jazz" / "nested" / "good.mid")
    write_midi(events[:3], folder / "Weird Name" / "other.mid")
    (folder / "jazz" / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01garbage")
    return folder


def _build(root: Path, midi: Path | None, jobs: int) -> int:
    argv = [
        "corpus",
        "build",
        "--root",
        str(root),
        "--limit",
        "2",
        "--styles",
        *STYLES,
        "jazz",
        "unknown",
        "--jobs",
        str(jobs),
        "--quiet",
    ]
    return main(argv + (["--midi", str(midi)] if midi else []))


def _snapshot(root: Path) -> dict:
    snap = {"index": (root / "index.jsonl").read_text()}
    for split in C.SPLITS + tuple(LIVE_SPLITS.values()):
        for suffix in (".npy", ".offsets.npy", ".json"):
            snap[split + suffix] = (root / "tokens" / f"{split}{suffix}").read_bytes()
    return snap


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("corpus")
    midi = _midi_folder(base)
    root = base / "root"
    assert _build(root, midi, jobs=2) == 0
    return root, midi


def test_index_format(built):
    root, _ = built
    records = C.read_index(root)
    assert [r["id"] for r in records] == sorted(r["id"] for r in records)
    assert {r["style"] for r in records} == {"bach", "folk", "renaissance", "jazz", "unknown"}
    for r in records:
        assert list(r) == FIELDS
        assert r["split"] == C.split_of(r["id"])
        assert r["path"] == f"midi/{r['style']}/{r['id']}.mid" and (root / r["path"]).is_file()
        assert r["notes"] > 0 and r["seconds"] > 0
        assert set(r["instruments"]) <= set(INSTRUMENT_NAMES)
    by_id = {r["id"]: r for r in records}
    assert by_id["bach-bwv1.6"]["source"] == "bach/bwv1.6.mxl"
    assert {"voice", "brass"} <= set(by_id["bach-bwv1.6"]["instruments"])  # the chorale with a horn part
    essen = [r for r in records if r["id"].startswith("folk-essen-")]
    assert essen and essen[0]["source"].startswith("essenFolksong/") and "#" in essen[0]["source"]
    josquin = [r for r in records if r["id"].startswith("renaissance-josquin-")]
    assert josquin and josquin[0]["instruments"] == ["voice"]  # voices merged into one piece


def test_token_splits_match_index_and_codec(built):
    root, _ = built
    records = C.read_index(root)
    for split in C.SPLITS:
        data = C.load_split(root, split)
        mine = [r for r in records if r["split"] == split]
        assert data.ids == [r["id"] for r in mine] and data.styles == [r["style"] for r in mine]
        assert data.tokens.dtype == np.uint16 and data.offsets.dtype == np.int64
        assert len(data.tokens) == sum(r["tokens"] for r in mine)
        for i, r in enumerate(mine):
            piece = data.piece(i)
            expected = encode_file(root / r["path"], r["style"]).tokens + (V.EOS,)
            assert piece.tolist() == list(expected)
            assert piece[0] == V.BOS and piece[1] == V.style_token(r["style"]) and piece[-1] == V.EOS


def test_live_like_renderings_are_piano_with_pedal_for_train_and_valid(built):
    root, _ = built
    records = C.read_index(root)
    for split, live in LIVE_SPLITS.items():
        data = load_split(root, live)
        notated = [r for r in records if r["split"] == split and not r["source"].startswith("band")]
        assert len(data) <= 2 * len(notated) and (len(data) > 0 or not notated)
        for i, (piece_id, style) in enumerate(zip(data.ids, data.styles, strict=True)):
            base, _, k = piece_id.partition(LIVE_MARK)
            assert k in ("0", "1") and {r["id"]: r["style"] for r in notated}[base] == style
            piece = data.piece(i).tolist()
            assert piece[:3] == [V.BOS, V.style_token(style), V.set_token(0)] and piece[-1] == V.EOS
            kinds = {V.token_kind(t)[0] for t in piece}
            assert "note_on" in kinds and "note_off" in kinds
    kinds = [V.token_kind(t)[0] for t in load_split(root, "live-train").tokens.tolist()]
    pedalled = [k for k in kinds if k.startswith("pedal")]
    assert pedalled, "the performer pedals"
    assert build_live(root, 2) == {}  # up to date: nothing done


def test_perform_zero_removes_the_live_splits(built, tmp_path):
    root, _ = built
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    assert build_live(copy, 0) == {}
    assert not list((copy / "tokens").glob("live-*"))
    with pytest.raises(C.CorpusError, match="0 to 8"):
        build_live(copy, 9)


def test_midi_folder_styles_and_corrupt_file(built):
    root, midi = built
    records = {r["id"]: r for r in C.read_index(root)}
    jazz = [r for r in records.values() if r["style"] == "jazz"]
    assert len(jazz) == 1 and jazz[0]["instruments"] == ["guitar"]
    assert jazz[0]["source"] == str(midi / "jazz" / "nested" / "good.mid")
    assert (root / jazz[0]["path"]).read_bytes() == (midi / "jazz" / "nested" / "good.mid").read_bytes()
    assert any(r["style"] == "unknown" for r in records.values())  # folder "Weird Name" is not a style
    skipped = C.read_jsonl(root / "skipped.jsonl")
    broken = [s for s in skipped if s["source"].endswith("broken.mid")]
    assert len(broken) == 1 and broken[0]["reason"] == "corrupt" and "broken.mid" in broken[0]["detail"]


def test_parts_have_own_channels_and_programs(built):
    root, _ = built
    mid = mido.MidiFile(root / "midi" / "bach" / "bach-bwv1.6.mid")
    programs = {}
    for track in mid.tracks:
        for msg in track:
            if msg.type == "program_change":
                programs[msg.channel] = msg.program
    assert len(programs) == 5 and 9 not in programs  # horn + four voices, no drum channel
    classes = sorted(INSTRUMENT_NAMES[instrument_class(p, ch)] for ch, p in programs.items())
    assert classes == ["brass", "voice", "voice", "voice", "voice"]


def test_split_is_a_stable_hash():
    assert C.split_of("bach-bwv66.6") == C.split_of("bach-bwv66.6")
    counts = {s: 0 for s in C.SPLITS}
    for i in range(4000):
        counts[C.split_of(f"folk-essen-x-{i:04d}")] += 1
    assert 0.87 < counts["train"] / 4000 < 0.93
    assert 0.03 < counts["valid"] / 4000 < 0.07 and 0.03 < counts["test"] / 4000 < 0.07
    # Pinned values: changing the rule would silently move pieces between splits.
    assert [C.split_of(x) for x in ("bach-bwv66.6", "x11", "x16", "folk-essen-altdeu10-0007")] == [
        "test",
        "valid",
        "test",
        "train",
    ]


def test_rebuild_from_scratch_is_identical(built, tmp_path):
    root, midi = built
    other = tmp_path / "again"
    assert _build(other, midi, jobs=1) == 0
    assert _snapshot(other) == _snapshot(root)


def test_resume_after_lost_index_and_partial_file(built, tmp_path):
    root, midi = built
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    before = _snapshot(copy)
    (copy / "index.jsonl").unlink()
    shutil.rmtree(copy / "tokens")
    victim = copy / "midi" / "bach" / "bach-bwv10.7.mid"
    victim.unlink()
    stale = victim.parent / ".bach-bwv10.7.mid.abc123.tmp"
    stale.write_bytes(b"MThd half written")
    assert _build(copy, midi, jobs=1) == 0
    assert _snapshot(copy) == before
    assert victim.is_file() and not stale.exists()
    assert json.loads((copy / "manifest.json").read_text())["converted_this_run"] == 1


def test_killed_build_completes_on_rerun(built, tmp_path):
    root, midi = built
    target = tmp_path / "killed"
    cmd = [sys.executable, "-c", "import sys; from musebridge.cli import main; sys.exit(main(sys.argv[1:]))"]
    args = [
        "corpus",
        "build",
        "--root",
        str(target),
        "--limit",
        "2",
        "--styles",
        *STYLES,
        "jazz",
        "unknown",
        "--jobs",
        "1",
        "--quiet",
        "--midi",
        str(midi),
    ]
    proc = subprocess.Popen(cmd + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not any((target / "midi").rglob("*.mid")):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _build(target, midi, jobs=1) == 0
    assert _snapshot(target) == _snapshot(root)


def test_multi_tune_abc_is_split(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "mine").mkdir(parents=True)
    (corpus / "mine" / "book.abc").write_text(TUNES)
    source = Source("book", "folk", "mine", "tunes", "pipe", chords=True)
    pieces = source_pieces(source, corpus)
    assert [p.id for p in pieces] == ["folk-book-book-0001", "folk-book-book-0002", "folk-book-book-0003"]
    assert [p.source for p in pieces] == ["mine/book.abc#1", "mine/book.abc#2", "mine/book.abc#3"]
    assert (
        tune_text(pieces[1].path, 2).startswith("% a header comment")
        and "T:Second" in tune_text(pieces[1].path, 2)
        and "T:First" not in tune_text(pieces[1].path, 2)
    )
    firsts = []
    for p in pieces:
        parts = score_parts(load_score(p), p)
        firsts.append(parts[0].notes[0][2])
        assert INSTRUMENT_NAMES[parts[0].instrument] == "pipe"
    assert firsts == [67, 62, 72]  # G, D, C: each piece is its own tune
    # A real collection: one file gives hundreds of pieces.
    assert count_tunes(music21_corpus_dir() / "essenFolksong" / "altdeu10.abc") > 100


def test_chord_symbols_become_a_guitar_part(tmp_path):
    corpus = tmp_path / "corpus"
    (corpus / "mine").mkdir(parents=True)
    (corpus / "mine" / "book.abc").write_text(TUNES)
    spec = source_pieces(Source("book", "folk", "mine", "tunes", "pipe", chords=True), corpus)[0]
    out = tmp_path / "chords.mid"
    convert_score(spec, str(out), max_seconds=600)
    encoded = encode_file(out, "folk")
    assert [INSTRUMENT_NAMES[i] for i in encoded.instruments] == ["guitar", "pipe"]
    parts = score_parts(load_score(spec), spec)
    chords = [p for p in parts if p.name == "chords"][0]
    first = sorted(n[2] % 12 for n in chords.notes if n[0] == 0.0)
    assert set(first) == {7, 11, 2}  # G major: G B D
    assert len({n[0] for n in chords.notes}) == 3  # G, D7, G: one strike each (one bar each)


def test_rntxt_and_drafts_are_not_pieces():
    corpus = music21_corpus_dir()
    pieces = source_pieces(Source("", "monteverdi", "monteverdi", instrument="voice"), corpus)
    assert pieces and all(p.source.endswith(".mxl") for p in pieces)
    assert not any(p.id.endswith("_old") for p in pieces)
    bach = source_pieces(Source("", "bach", "bach", instrument="voice"), corpus)
    assert not any("rntxt" in p.source or "choraleAnalyses" in p.source for p in bach)
    assert len({p.id for p in bach}) == len(bach)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Violoncello", "strings"),
        ("Basso continuo", "organ"),
        ("Bass", "voice"),
        ("Horn 2", "brass"),
        ("Flauto traverso", "pipe"),
        ("Oboe d'amore", "reed"),
        ("Piano", "piano"),
        ("MusicXML Part", "strings"),
    ],
)
def test_part_names_map_to_classes(name, expected):
    from music21 import stream

    part = stream.Part()
    part.partName = name
    spec = PieceSpec("x", "baroque", "x", "x", instrument="strings")
    cls, program = classify_part(part, spec)
    assert INSTRUMENT_NAMES[cls] == expected and instrument_class(program, 0) == cls


def test_placeholder_instruments_are_ignored_where_untrusted():
    from music21 import instrument, stream

    def part(name, inst):
        p = stream.Part()
        p.partName = name
        p.insert(0, inst)
        return p

    vocal = PieceSpec("x", "monteverdi", "x", "x", instrument="voice", trust_instruments=False)
    assert INSTRUMENT_NAMES[classify_part(part("Canto", instrument.Piano()), vocal)[0]] == "voice"
    assert INSTRUMENT_NAMES[classify_part(part("MusicXML Part", instrument.Trombone()), vocal)[0]] == "voice"
    trusted = PieceSpec("x", "classical", "x", "x", instrument="piano")
    cls, program = classify_part(part("MusicXML Part", instrument.Violoncello()), trusted)
    assert INSTRUMENT_NAMES[cls] == "strings" and program == 42  # the cello keeps its own program


def test_stats_text_and_json(built, capsys):
    root, _ = built
    assert main(["corpus", "stats", "--root", str(root), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    records = C.read_index(root)
    assert info["total"]["pieces"] == len(records)
    assert info["total"]["tokens"] == sum(r["tokens"] for r in records)
    assert sum(s["pieces"] for s in info["splits"].values()) == len(records)
    assert info["styles"]["bach"]["pieces"] == 2 and info["skipped"]["jazz"] == {"corrupt": 1}
    live = load_split(root, "live-train")
    assert info["live"]["train"] == {"pieces": len(live), "tokens": len(live.tokens)}
    assert main(["corpus", "stats", "--root", str(root)]) == 0
    text = capsys.readouterr().out
    assert "bach" in text and "renaissance" in text and "hours" in text and "corrupt" in text
    assert f"live-like piano renderings (not included above): train {len(live)} pieces" in text


def test_tokens_made_by_another_codec_are_flagged(built, tmp_path, caplog):
    root, _ = built
    assert C.stale_tokens(root) is None
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    (copy / "manifest.json").write_text(json.dumps(manifest | {"codec": "0" * 40}))
    assert "re-tokenize" in C.stale_tokens(copy)
    with caplog.at_level("WARNING"):
        C.load_split(copy, "train")
    assert "musebridge corpus build" in caplog.text


def test_missing_corpus_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(C.CorpusError, match="musebridge corpus build"):
        C.load_split(tmp_path / "nothing", "train")
    assert main(["corpus", "stats", "--root", str(tmp_path / "nothing")]) == 2
    assert "musebridge corpus build" in capsys.readouterr().err


def test_slow_long_and_broken_pieces_are_skipped_with_a_reason(tmp_path):
    corpus = music21_corpus_dir()
    spec = [
        p for p in source_pieces(Source("", "bach", "bach", instrument="voice"), corpus) if p.id == "bach-bwv1.6"
    ]
    slow = process_piece(spec[0], BuildConfig(root=str(tmp_path / "a"), timeout_s=0.001))
    assert slow.reason == "timeout" and slow.record is None
    long = process_piece(spec[0], BuildConfig(root=str(tmp_path / "b"), max_seconds=10.0))
    assert long.reason == "too_long" and "min limit" in long.detail
    bad_file = tmp_path / "bad.krn"
    bad_file.write_text("this is not humdrum\n")
    bad = process_piece(PieceSpec("bach-bad", "bach", "bad.krn", str(bad_file)), BuildConfig(root=str(tmp_path)))
    assert bad.reason in ("error", "empty") and bad.skip_record()["id"] == "bach-bad"
    assert not list(tmp_path.rglob("*.mid"))  # nothing half-written


def test_a_time_limit_is_not_swallowed_by_a_converter_that_catches_everything(tmp_path, monkeypatch):
    """music21 falls back between parsers inside `except Exception`: a time limit that fires in such a block
    must still end the piece (now and then it did not, in CI)."""
    from musebridge.export import corpus_build

    def stubborn(spec, target, max_seconds):
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            try:
                sum(range(1000))
            except Exception:  # noqa: BLE001 - what a library's fallback looks like
                pass
        raise AssertionError("the time limit did not stop the conversion")

    monkeypatch.setattr(corpus_build, "convert_score", stubborn)
    spec = PieceSpec("bach-stubborn", "bach", "stubborn.krn", str(tmp_path / "stubborn.krn"))
    result = process_piece(spec, BuildConfig(root=str(tmp_path), timeout_s=0.01))
    assert result.reason == "timeout", result.detail


def test_build_config_defaults_to_all_cpus():
    assert BuildConfig(root="x").jobs == (os.cpu_count() or 1)
