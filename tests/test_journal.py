"""The take journal: a recording is on disk while it is played, refused before any port opens when its folder
cannot take it, and recovered after a crash (bridge/journal.py). The kill -9 of a real `play` process over JACK
is in tests/test_bridge_jack.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import replace

import mido
import pytest
from musebridge.bridge.config import BridgeConfig
from musebridge.bridge.core import Bridge
from musebridge.bridge.errors import ConfigError
from musebridge.bridge.journal import TakeJournal, journal_path, read_journal, recover_takes
from musebridge.bridge.ports import MemoryBackend, MemoryMidi
from musebridge.bridge.recorder import Recorder
from musebridge.engine.errors import EngineError

from tests.bridge_fakes import FakeClock, FakeLink, Rig, off, on
from tests.test_writers import hanging, note_ons


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_take_whose_folder_is_missing_is_refused_before_any_port_opens(tmp_path):
    midi = MemoryMidi()
    config = replace(BridgeConfig(mode="respond"), record=str(tmp_path / "nowhere" / "take.mid"))
    bridge = Bridge(config, MemoryBackend(midi), FakeLink(), FakeClock())
    with pytest.raises(ConfigError, match="folder .*nowhere does not exist; create it"):
        bridge.open()
    assert midi.sources() == [] and midi.destinations() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_in_one_line(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ConfigError) as err:
            TakeJournal(tmp_path / "take.mid")
    finally:
        tmp_path.chmod(0o755)
    assert "cannot write in" in str(err.value) and "\n" not in str(err.value)


def test_the_journal_holds_what_was_played_before_the_take_is_written(tmp_path):
    take = tmp_path / "take.mid"
    rig = Rig("respond", record=str(take))
    rig.play(on(60), mido.Message("control_change", control=64, value=127))
    rig.run(0.3)
    rig.play(off(60), on(62))
    rig.bridge.recorder.journal.flush()  # what the journal's thread does once a second
    header, events = read_journal(journal_path(take))
    assert header["take"] == str(take) and header["pid"] == os.getpid()
    assert [(m.type, getattr(m, "note", None)) for _, m in events if m.channel == 0] == [
        ("note_on", 60), ("control_change", None), ("note_off", 60), ("note_on", 62)]
    rig.bridge.stop()
    assert take.is_file() and not journal_path(take).exists(), "a clean stop writes the take, drops the journal"


def test_a_journal_left_by_a_dead_process_is_recovered_at_the_next_start(tmp_path, caplog):
    take = tmp_path / "take.mid"
    pid = _dead_pid()
    journal = journal_path(take, pid)
    journal.write_text(f'{{"take": "{take}", "pid": {pid}, "started": 1700000000}}\n'
                       + f"0.100000 {mido.Message('note_on', note=60, velocity=90).hex().replace(' ', '')}\n"
                       + f"0.200000 {mido.Message('control_change', control=64, value=127).hex().replace(' ', '')}"
                       + "\n0.3000")  # torn: the process died while writing
    alive = journal_path(take, os.getppid())  # a take still being played by a live process is left alone
    alive.write_text("{}\n")
    with caplog.at_level(logging.WARNING):
        rig = Rig("respond", record=str(take))
    recovered = sorted(tmp_path.glob("take.recovered-*.mid"))
    assert len(recovered) == 1 and str(recovered[0]) in caplog.text
    assert note_ons(recovered[0]) == 1 and hanging(recovered[0]) == []
    assert not journal.exists() and alive.exists()
    rig.bridge.stop()


def test_a_take_that_cannot_be_written_at_the_end_stays_in_its_journal(tmp_path):
    take = tmp_path / "take.mid"
    recorder = Recorder(0.0, {5}, TakeJournal(take))
    recorder.player(0.5, on(60))
    recorder.player(0.9, off(60))
    take.mkdir()  # something took the take's name while it was played
    with pytest.raises(EngineError, match=f"the take is kept in {journal_path(take)}"):
        recorder.write(take, 1.0)
    assert [m.type for _, m in read_journal(journal_path(take))[1]] == ["note_on", "note_off"]


def test_two_takes_begun_in_the_same_second_are_both_recovered(tmp_path):
    take = tmp_path / "take.mid"
    for pid in (_dead_pid(), _dead_pid()):
        journal_path(take, pid).write_text(
            f'{{"take": "{take}", "pid": {pid}, "started": 1700000000}}\n'
            f"0.100000 {mido.Message('note_on', note=60 + pid % 12, velocity=90).bin().hex()}\n")
    recovered = recover_takes(take)
    assert len(recovered) == 2 and len(set(recovered)) == 2 and all(p.is_file() for p in recovered)
    assert not list(tmp_path.glob(".*.take"))
