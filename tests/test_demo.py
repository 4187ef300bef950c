"""`musebridge demo` end to end: engine process, protocol, bridge in respond mode, in-process ports."""

from __future__ import annotations

import subprocess
import sys

from musebridge.engine.midifile import notes_from_events, read_midi
from musebridge.engine.model_file import default_model_path

from tests.model_fixtures import export_small
from tests.net import free_port


def test_demo_records_both_parts_and_draws_them(tmp_path):
    bundled = default_model_path()
    model = str(bundled) if bundled.is_file() else str(export_small(tmp_path)[1])
    out = tmp_path / "demo.mid"
    proc = subprocess.run([sys.executable, "-m", "musebridge", "demo", "--out", str(out), "--model", model,
                           "--port", str(free_port()), "--pub-port", str(free_port())],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    midi = read_midi(out)
    notes = notes_from_events(midi.events, midi.end_time)
    player = [n for n in notes if n.channel in (0, 15)]
    model_notes = [n for n in notes if n.channel not in (0, 15)]
    assert len(player) == 16  # the bundled phrase, every note
    assert model_notes and {n.channel for n in model_notes} == {5}  # strings, and only strings
    first_answer = min(n.start for n in model_notes)
    assert first_answer > min(n.end for n in player)  # the model answers after the player's call
    assert (tmp_path / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "first answer note" in proc.stdout and "wrote" in proc.stdout
    assert not list(tmp_path.glob(".*tmp*"))  # nothing half-written left behind
