"""Every MIDI file MuseBridge writes ends every note: each command and example that writes one is run here on a
small input and its file read back with plain mido (not through the project's codec).

A note hangs when a note-on (velocity > 0) has no later note-off (or velocity-0 note-on) of its channel and pitch,
and no CC120/CC123 on its channel, or when a channel's sustain pedal (CC64 >= 64) is still down at the end.
`musebridge demo` is checked the same way in tests/test_demo.py, `play --record` through real ports in
tests/test_bridge_jack.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import mido
import pytest
from musebridge.bridge.recorder import Recorder
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import write_midi

from musebridge.cli import main
from tests.net import free_port

CHORALE = str(resources.files("musebridge.engine").joinpath("data/chorale.mid"))
PHRASE = str(resources.files("musebridge.engine").joinpath("data/phrase.mid"))
ROOT = Path(__file__).resolve().parent.parent


def hanging(path) -> list[str]:
    """What is left sounding at the end of a MIDI file: 'ch C note N' per unreleased note, 'ch C pedal'."""
    held: dict[tuple[int, int], int] = {}
    pedal: set[int] = set()
    for msg in mido.merge_tracks(mido.MidiFile(path).tracks):
        if msg.type == "note_on" and msg.velocity > 0:
            held[(msg.channel, msg.note)] = held.get((msg.channel, msg.note), 0) + 1
        elif msg.type in ("note_on", "note_off"):
            held[(msg.channel, msg.note)] = max(0, held.get((msg.channel, msg.note), 0) - 1)
        elif msg.type == "control_change" and msg.control in (120, 123):
            held = {k: n for k, n in held.items() if k[0] != msg.channel}
        elif msg.type == "control_change" and msg.control == 64:
            (pedal.add if msg.value >= 64 else pedal.discard)(msg.channel)
    notes = [f"ch {ch + 1} note {note}" for (ch, note), n in sorted(held.items()) for _ in range(n)]
    return notes + [f"ch {ch + 1} pedal" for ch in sorted(pedal)]


def note_ons(path) -> int:
    return sum(1 for m in mido.merge_tracks(mido.MidiFile(path).tracks) if m.type == "note_on" and m.velocity)


def test_the_checker_sees_a_hanging_note_and_a_pedal_left_down(tmp_path):
    path = tmp_path / "raw.mid"
    track = mido.MidiTrack([mido.Message("note_on", note=60, velocity=80), mido.Message("note_on", note=60,
                            velocity=80), mido.Message("note_off", note=60, time=10),
                            mido.Message("control_change", control=64, value=127, channel=2)])
    mido.MidiFile(tracks=[track]).save(path)
    assert hanging(path) == ["ch 1 note 60", "ch 3 pedal"]


def test_write_midi_ends_notes_and_lifts_the_pedal(tmp_path):
    events = [Timed(0.0, mido.Message("control_change", control=64, value=100)),
              Timed(0.0, mido.Message("note_on", note=60, velocity=90)),
              Timed(0.5, mido.Message("note_on", note=64, velocity=90, channel=3))]
    write_midi(events, tmp_path / "w.mid")
    assert hanging(tmp_path / "w.mid") == [] and note_ons(tmp_path / "w.mid") == 2


@pytest.mark.parametrize("form", [[], ["--prompt", PHRASE], ["--melody", PHRASE]])
def test_generate(tmp_path, form):
    out = tmp_path / "g.mid"
    assert main(["generate", str(out), "--seconds", "3", "--seed", "1", "--quiet", *form]) == 0
    assert note_ons(out) > 0 and hanging(out) == []


def test_perform_and_tokens_roundtrip(tmp_path):
    assert main(["perform", CHORALE, str(tmp_path / "p.mid")]) == 0
    assert main(["tokens", CHORALE, "--roundtrip", str(tmp_path / "t.mid"), "--show", "0"]) == 0
    for name in ("p.mid", "t.mid"):
        assert note_ons(tmp_path / name) > 0 and hanging(tmp_path / name) == [], name


def test_play_record_writes_a_take_with_keys_and_pedal_still_down(tmp_path):
    recorder = Recorder(start=100.0, engine_channels={0})
    recorder.player(100.1, mido.Message("control_change", control=64, value=127, channel=1))
    recorder.player(100.2, mido.Message("note_on", note=60, velocity=70, channel=1))
    recorder.sent(100.3, mido.Message("note_on", note=67, velocity=70, channel=0), "engine")
    recorder.write(tmp_path / "take.mid", now=101.0)
    assert note_ons(tmp_path / "take.mid") == 2 and hanging(tmp_path / "take.mid") == []


def test_corpus_conversion(tmp_path):
    pytest.importorskip("music21")
    from musebridge.export.corpus_convert import convert_score
    from musebridge.export.corpus_sources import PieceSpec, music21_corpus_dir

    path = music21_corpus_dir() / "bach" / "bwv66.6.mxl"
    convert_score(PieceSpec("bach-bwv66.6", "bach", "bach/bwv66.6.mxl", str(path)), str(tmp_path / "c.mid"), 600)
    assert note_ons(tmp_path / "c.mid") > 100 and hanging(tmp_path / "c.mid") == []


@pytest.mark.skipif(shutil.which("mma") is None, reason="mma not installed (Debian: apt install mma)")
def test_band_parts(tmp_path):
    from musebridge.export import band as B

    B.render_band(Path(PHRASE), tmp_path / "b.mid", "folk-band-phrase", "folk", B.BandConfig())
    assert note_ons(tmp_path / "b.mid") > note_ons(PHRASE) and hanging(tmp_path / "b.mid") == []


@pytest.mark.slow
def test_the_session_script_example(tmp_path):
    out = tmp_path / "s.mid"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "session_script.py"), PHRASE, str(out),
                           "--spawn", "--port", str(free_port()), "--pub-port", str(free_port()), "--window", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert note_ons(out) > note_ons(PHRASE) and hanging(out) == []
