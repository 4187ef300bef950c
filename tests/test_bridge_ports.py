"""Port name matching, the in-memory MIDI system, settings files, and the play/ports commands' errors."""

from __future__ import annotations

import subprocess
import sys
import time

import mido
import pytest
from musebridge.bridge.config import BridgeConfig, CCMap, load_toml
from musebridge.bridge.errors import ConfigError, PortError
from musebridge.bridge.launcher import EngineTarget
from musebridge.bridge.live import LiveSession
from musebridge.bridge.ports import MemoryBackend, MemoryMidi, match_port
from musebridge.bridge.rtmidi_ports import api_constant, compiled_apis, open_backend

PORTS = ["Keystation 49:Keystation 49 MIDI 1 20:0", "Midi Through:Midi Through Port-0 14:0", "FLUID Synth (123)"]


def test_match_port_exact_substring_and_errors():
    assert match_port("input", "FLUID Synth (123)", PORTS) == "FLUID Synth (123)"
    assert match_port("input", "keystation", PORTS) == PORTS[0]
    with pytest.raises(PortError, match=r"no input port matching 'Oxygen'; available: 'Keystation"):
        match_port("input", "Oxygen", PORTS)
    with pytest.raises(PortError, match="matches several output ports"):
        match_port("output", "MIDI", PORTS)
    with pytest.raises(PortError, match="available: none"):
        match_port("output", "x", [], "jack")


def test_memory_backend_virtual_and_existing_ports():
    midi = MemoryMidi()
    backend = MemoryBackend(midi)
    got = []
    inp = backend.open_input(None, got.append)  # virtual: others can send to it
    midi.sender("MuseBridge In").send(mido.Message("note_on", note=60))
    assert got == [[0x90, 60, 64]]
    keyboard = midi.create_source("Keystation 49")
    backend.open_input("keystation", got.append)
    keyboard.send(mido.Message("note_off", note=60))
    assert got[-1] == [0x80, 60, 64]
    synth = []
    midi.create_destination("Synth", synth.append)
    backend.open_output("synth").send(mido.Message("program_change", program=5))
    assert synth == [[0xC0, 5]]
    assert backend.inputs() == ["Keystation 49"] and set(backend.outputs()) == {"MuseBridge In", "Synth"}
    with pytest.raises(PortError, match="available: 'MuseBridge In', 'Synth'"):
        backend.open_output("Roland")
    inp.close()
    assert backend.outputs() == ["Synth"]


def test_unknown_api_lists_the_compiled_ones():
    with pytest.raises(PortError, match="choose from: alsa, jack, coremidi, winmm"):
        open_backend("oss")
    if "coremidi" not in compiled_apis():
        with pytest.raises(PortError, match="this python-rtmidi has"):
            api_constant("coremidi")


def test_toml_settings(tmp_path):
    path = tmp_path / "live.toml"
    path.write_text("""
mode = "accompany"
in = "Keystation"
channel = 2
thru = true
[engine]
style = "bach"
instruments = ["strings", "bass"]
[modes]
pause_ms = 800
answer_beats = 8
[clock]
bpm = 100
quantize = "1/16"
[cc]
trigger = 20
channel = 16
[channels]
bass = 3
""")
    config = load_toml(path)
    assert config.mode == "accompany" and config.in_port == "Keystation" and config.channel == 1 and config.thru
    assert config.engine == {"instruments": ["strings", "bass"], "player_instrument": "piano", "style": "bach"}
    assert config.modes.pause_s == pytest.approx(0.8) and config.modes.answer_beats == 8
    assert config.clock.bpm == 100 and config.clock.quantize == "1/16"
    assert config.cc.trigger == 20 and config.cc.channel == 15 and config.cc.action(15, 20) == "trigger"
    assert config.channel_map() == {4: 2}


@pytest.mark.parametrize("text, problem", [
    ('mode = "jam"', "unknown mode 'jam'"),
    ("[modes]\nvoicez = 3", "unknown setting 'voicez'"),
    ('[clock]\nquantize = "1/5"', "unknown quantization grid"),
    ("[cc]\ntrigger = 123", "CC for trigger"),
    ("[channels]\nkazoo = 3", "instrument must be one of"),
    ("mode = ", "config"),
    ('mode = "dance"', "unknown mode 'dance'"),
    ("[modes]\npause_ms = -5", "must be positive"),
    ('channel = "x"', "channel: a channel is a whole number 1-16, got 'x'"),
    ("[channels]\nbass = 2.5", "bass: a channel is a whole number"),
])
def test_bad_settings_name_the_problem(tmp_path, text, problem):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=problem) as info:
        load_toml(path)
    assert str(info.value).startswith(f"config {path}") and str(info.value).count(str(path)) == 1


def test_config_defaults_and_cc_map():
    config = BridgeConfig()
    assert config.mode == "respond" and config.in_port is None and config.cc.action(0, 102) == "respond"
    assert CCMap().action(3, 64) is None
    with pytest.raises(ConfigError):
        BridgeConfig(channel=16)


def test_live_session_reports_a_missing_engine_and_stops_cleanly():
    midi = MemoryMidi()
    target = EngineTarget(port=1, pub_port=2, timeout=0.2)  # nothing listens there
    with LiveSession(BridgeConfig(mode="thru"), MemoryBackend(midi), target) as live:
        assert not live.bridge.engine_ok
        heard = []
        midi.listen("MuseBridge Out", heard.append)
        midi.sender("MuseBridge In").send(mido.Message("note_on", note=60))
        for _ in range(200):
            if heard:
                break
            time.sleep(0.01)
        assert heard == [[0x90, 60, 64]], "thru works without an engine"
    assert [0x80, 60, 0] in heard, "leaving the session silenced the thru note"


def run_cli(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "musebridge", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("args, problem", [
    (["--instruments", "kazoo"], "unknown instrument 'kazoo'; choose from: piano"),
    (["--style", "polka"], "unknown style 'polka'; choose from:"),
    (["--channel", "17"], "--channel must be 1-16"),
    (["--config", "/nonexistent/live.toml"], "config /nonexistent/live.toml"),
])
def test_play_bad_arguments_give_one_line_and_status_2(args, problem):
    result = run_cli("play", *args)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("musebridge play:")]
    assert len(lines) == 1 and problem in lines[0]


def test_ports_command_lists_each_api():
    result = run_cli("ports")
    assert result.returncode == 0
    for api in compiled_apis():
        assert result.stdout.count(f"{api}:") >= 1


def test_the_settings_example_in_docs_live_md_is_valid(tmp_path):
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "live.md").read_text()
    block = re.search(r"## Settings file\n\n```toml\n(.*?)```", text, re.S).group(1)
    path = tmp_path / "example.toml"
    path.write_text(block)
    config = load_toml(path)
    assert config.mode == "accompany" and config.cc.trigger == 20 and config.channels == {"strings": 2, "bass": 3}
