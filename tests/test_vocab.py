"""The vocabulary table and the instrument table: consistent, complete, and stable."""

import subprocess
import sys

import pytest
from musebridge.engine.tokens import instruments as I
from musebridge.engine.tokens import vocab as V


def test_segments_are_contiguous_and_cover_the_vocabulary():
    start = 0
    for name, count, _ in V.SEGMENTS:
        assert count > 0, name
        assert V.OFFSETS[name] == start, name
        start += count
    assert start == V.VOCAB_SIZE
    assert len({name for name, _, _ in V.SEGMENTS}) == len(V.SEGMENTS)


def test_every_id_has_a_kind_and_a_unique_name():
    names = [V.describe(t) for t in range(V.VOCAB_SIZE)]
    assert len(set(names)) == V.VOCAB_SIZE
    for token in range(V.VOCAB_SIZE):
        kind, arg = V.token_kind(token)
        assert V.OFFSETS[kind] <= token < V.OFFSETS[kind] + dict((n, c) for n, c, _ in V.SEGMENTS)[kind]
        assert token - V.OFFSETS[kind] == arg


@pytest.mark.parametrize("token", [-1, V.VOCAB_SIZE, V.VOCAB_SIZE + 1000])
def test_ids_outside_the_vocabulary_are_refused(token):
    with pytest.raises(IndexError):
        V.token_kind(token)


def test_size_matches_the_documented_layout():
    n = len(I.INSTRUMENTS)
    expected = 3 + len(V.STYLES) + n + V.MAX_SHIFT_STEPS + V.VELOCITY_BINS + 2 * n + 2 * n * V.N_PITCHES
    assert V.VOCAB_SIZE == expected
    assert V.PAD == 0 and V.describe(V.PAD) == "PAD"
    assert V.describe(V.BOS) == "BOS" and V.describe(V.EOS) == "EOS"


def test_token_helpers_agree_with_describe():
    piano = I.instrument_index("piano")
    drums = I.instrument_index("drums")
    assert V.describe(V.note_on_token(piano, 60)) == "ON_piano_60"
    assert V.describe(V.note_off_token(drums, 36)) == "OFF_drums_36"
    assert V.describe(V.time_token(1)) == "TIME_1"
    assert V.describe(V.time_token(V.MAX_SHIFT_STEPS)) == f"TIME_{V.MAX_SHIFT_STEPS}"
    assert V.describe(V.velocity_token(V.VELOCITY_BINS - 1)) == f"VEL_{V.VELOCITY_BINS - 1}"
    assert V.describe(V.pedal_token(piano, True)) == "PEDAL_ON_piano"
    assert V.describe(V.pedal_token(piano, False)) == "PEDAL_OFF_piano"
    assert V.describe(V.style_token("bach")) == "STYLE_bach"
    assert V.describe(V.set_token(drums)) == "SET_drums"


def test_time_grid_is_fine_enough_and_one_token_spans_about_a_second():
    assert V.GRID_S <= 0.01
    assert 0.5 <= V.GRID_S * V.MAX_SHIFT_STEPS <= 1.0 + 1e-9


def test_velocity_bins_cover_1_to_127_and_decode_inside_their_bin():
    bins = [V.velocity_bin(v) for v in range(1, 128)]
    assert bins == sorted(bins) and bins[0] == 0 and bins[-1] == V.VELOCITY_BINS - 1
    assert set(bins) == set(range(V.VELOCITY_BINS))
    for b in range(V.VELOCITY_BINS):
        v = V.bin_velocity(b)
        assert 1 <= v <= 127 and V.velocity_bin(v) == b


def test_conditioning_prefix_is_sorted_and_deduplicated():
    assert V.conditioning("bach", [6, 0, 6]) == [V.BOS, V.style_token("bach"), V.set_token(0), V.set_token(6)]
    with pytest.raises(ValueError, match="choose from"):
        V.style_token("dubstep")
    with pytest.raises(ValueError):
        V.conditioning("bach", [len(I.INSTRUMENTS)])


def test_hash_is_exposed_and_stable_across_processes():
    info = V.vocab_info()
    assert info.size == V.VOCAB_SIZE and info.version == V.VOCAB_VERSION
    assert len(info.sha256) == 64 and int(info.sha256, 16) >= 0
    code = "from musebridge.engine.tokens import vocab; print(vocab.vocab_info().sha256)"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == info.sha256


def test_hash_changes_when_the_table_changes(monkeypatch):
    before = V.vocab_info().sha256
    monkeypatch.setattr(V, "SEGMENTS", V.SEGMENTS[:-1])
    assert V.vocab_info().sha256 != before
    monkeypatch.undo()
    monkeypatch.setattr(V, "GRID_S", V.GRID_S / 2)
    assert V.vocab_info().sha256 != before


def test_at_least_ten_instrument_classes_with_drums_on_channel_10():
    assert len(I.INSTRUMENTS) >= 10
    assert len(set(I.INSTRUMENT_NAMES)) == len(I.INSTRUMENT_NAMES)
    drums = I.INSTRUMENTS[I.DRUMS]
    assert drums.name == "drums" and drums.channel == I.DRUM_CHANNEL == 9
    for program in range(128):
        assert I.instrument_class(program, 9) == I.DRUMS


def test_program_table_covers_every_program_and_never_maps_to_drums():
    assert len(I.PROGRAM_TO_CLASS) == 128
    for program in range(128):
        cls = I.instrument_class(program, 0)
        assert 0 <= cls < len(I.INSTRUMENTS) and cls != I.DRUMS


def test_each_class_decodes_to_a_program_and_channel_that_map_back_to_it():
    """What the decoder writes (class -> program, channel) must read back as the same class."""
    channels = [i.channel for i in I.INSTRUMENTS]
    assert len(set(channels)) == len(channels)
    for index, inst in enumerate(I.INSTRUMENTS):
        assert 0 <= inst.program <= 127 and 0 <= inst.channel <= 15
        assert 0 <= inst.low < inst.high <= 127
        assert I.instrument_class(inst.program, inst.channel) == index
        assert I.instrument_index(inst.name) == index
    with pytest.raises(ValueError, match="choose from"):
        I.instrument_index("theremin")


def test_general_midi_families():
    assert I.INSTRUMENT_NAMES[I.instrument_class(0, 0)] == "piano"
    assert I.INSTRUMENT_NAMES[I.instrument_class(40, 3)] == "strings"  # violin
    assert I.INSTRUMENT_NAMES[I.instrument_class(33, 3)] == "bass"  # electric bass (finger)
    assert I.INSTRUMENT_NAMES[I.instrument_class(56, 3)] == "brass"  # trumpet
    assert I.INSTRUMENT_NAMES[I.instrument_class(73, 3)] == "pipe"  # flute
    assert I.INSTRUMENT_NAMES[I.instrument_class(52, 3)] == "voice"  # choir aahs
