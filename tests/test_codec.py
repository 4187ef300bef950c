"""The streaming event codec: timed MIDI messages -> tokens -> timed MIDI messages.

Tolerances (also in docs/architecture.md): every event time is rounded to the nearest point of the GRID_S grid,
so each note's onset and offset come back within half a grid step (GRID_S / 2 = 5 ms) of the original and its
duration within one grid step (the two roundings can go opposite ways). Pitches and instrument classes come back
exactly, velocities within their bin (VELOCITY_BINS bins of 4 values), and no note is lost or invented.

The token stream names a note by instrument class and pitch, not by MIDI channel. When two channels of the same
class play the same pitch at overlapping times, every note-on and note-off survives, but the decoder pairs them
first-in first-out per class: the onsets and the offsets match the original (as multisets), the pairing may not.
"""

from __future__ import annotations

from pathlib import Path

import mido
import numpy as np
import pytest
from codec_oracle import assert_same_notes, oracle_notes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from musebridge.engine.errors import CodecError
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import EventDecoder, EventEncoder, Timed, decode_tokens, encode_events
from musebridge.engine.tokens.instruments import DRUMS, INSTRUMENTS, instrument_index
from musebridge.engine.tokens.midifile import encode_file, read_midi, write_midi

HALF_STEP = V.GRID_S / 2 + 1e-9
PIANO = instrument_index("piano")
STRINGS = instrument_index("strings")

# ---------------------------------------------------------------- random timed event streams


def _note_off(channel: int, pitch: int, as_note_on: bool) -> mido.Message:
    if as_note_on:  # note-on with velocity 0 is a note-off
        return mido.Message("note_on", channel=channel, note=pitch, velocity=0)
    return mido.Message("note_off", channel=channel, note=pitch, velocity=64)


DT_MS = st.one_of(
    st.just(0),  # simultaneous events: chords, zero-length notes
    st.integers(1, 60),
    st.integers(60, 600),
    st.integers(1000, 3500),  # gaps longer than one TIME token
)
CHANNELS = st.sampled_from([0, 0, 1, 3, 9, 9, 15])  # 9 is MIDI channel 10: drums
PITCHES = st.one_of(st.sampled_from([60, 62]), st.integers(0, 127))  # few pitches: overlaps of one pitch
KINDS = ("on", "on", "on", "off", "off", "off", "orphan", "program", "pedal", "all_off", "other")


OTHER = (
    ("control_change", dict(control=7, value=100)),
    ("pitchwheel", dict(pitch=1000)),
    ("aftertouch", dict(value=50)),
)


def _message(kind: str, channel: int, pitch: int, value: int, flag: bool, held: list) -> mido.Message:
    """A message of one kind; `value` (0-127) is the velocity, program or controller value; note-offs pick
    a sounding note (value-th of `held`), orphans any pitch."""
    if kind == "on" or (kind == "off" and not held):
        return mido.Message("note_on", channel=channel, note=pitch, velocity=max(1, value))
    if kind == "off":
        return _note_off(*held[value % len(held)], as_note_on=flag)
    if kind == "orphan":  # note-off that may match no sounding note
        return _note_off(channel, pitch, flag)
    if kind == "program":
        return mido.Message("program_change", channel=channel, program=value)
    if kind == "pedal":
        return mido.Message("control_change", channel=channel, control=64, value=(0, 63, 64, 127)[value % 4])
    if kind == "all_off":
        return mido.Message("control_change", channel=channel, control=120 if flag else 123, value=0)
    type_, kw = OTHER[value % len(OTHER)]
    return mido.Message(type_, channel=channel, **kw)


STEPS = st.tuples(DT_MS, st.sampled_from(KINDS), CHANNELS, PITCHES, st.integers(0, 127), st.booleans())


@st.composite
def streams(draw, max_events: int = 50, jitter: bool = True) -> tuple[list[Timed], float]:
    """(events sorted by time, end time): times in whole milliseconds, plus sub-millisecond jitter if asked."""
    now_ms, events, held = 0, [], []
    for dt_ms, kind, channel, pitch, value, flag in draw(st.lists(STEPS, max_size=max_events)):
        now_ms += dt_ms
        msg = _message(kind, channel, pitch, value, flag, held)
        if msg.type == "note_on" and msg.velocity:
            held.append((msg.channel, msg.note))
        elif msg.type in ("note_on", "note_off") and (msg.channel, msg.note) in held:
            held.remove((msg.channel, msg.note))
        extra = (value * 7 % 1000) / 1e6 if jitter else 0.0  # 0 .. 0.999 ms
        events.append(Timed(now_ms / 1000 + extra, msg))
    end_time = (now_ms + draw(st.integers(0, 2000))) / 1000
    return events, end_time


def roundtrip(events, end_time):
    tokens = encode_events(events, end_time)
    decoded = decode_tokens(tokens)
    return tokens, decoded


# ---------------------------------------------------------------- properties


@settings(max_examples=200, deadline=None)
@given(streams())
def test_random_streams_survive_encode_decode(stream):
    events, end_time = stream
    tokens, decoded = roundtrip(events, end_time)
    assert all(0 <= t < V.VOCAB_SIZE for t in tokens)
    assert_same_notes(oracle_notes(events, end_time), oracle_notes(decoded, end_time))


@st.composite
def band_streams(draw) -> tuple[list[Timed], float]:
    """Streams where each channel keeps one instrument class (program changes stay inside the family)."""
    family = {0: range(0, 8), 1: range(40, 52), 3: range(56, 64), 9: range(0, 128), 15: range(72, 80)}
    events, end_time = draw(streams())
    fixed = []
    for time_s, msg in events:
        if msg.type == "program_change":
            msg = msg.copy(program=draw(st.sampled_from(family[msg.channel])))
        fixed.append(Timed(time_s, msg))
    start = [Timed(0.0, mido.Message("program_change", channel=c, program=p[0])) for c, p in family.items()]
    return start + fixed, end_time


@settings(max_examples=120, deadline=None)
@given(band_streams())
def test_one_class_per_channel_keeps_every_note_and_its_duration(stream):
    events, end_time = stream
    original = oracle_notes(events, end_time)
    _, decoded = roundtrip(events, end_time)
    back = oracle_notes(decoded, end_time)
    assert len(back) == len(original)
    assert_same_notes(original, back)


def f(tokens):
    """encode(decode(tokens))"""
    return encode_events(decode_tokens(tokens))


@settings(max_examples=200, deadline=None)
@given(streams())
def test_encoder_output_is_a_fixed_point_of_decode_then_encode(stream):
    tokens = encode_events(*stream)
    assert f(tokens) == tokens


TOKENS = st.one_of(
    st.integers(0, V.VOCAB_SIZE - 1),
    st.sampled_from([V.PAD, V.BOS, V.EOS, V.time_token(1), V.time_token(V.MAX_SHIFT_STEPS)]),
    st.builds(V.velocity_token, st.integers(0, V.VELOCITY_BINS - 1)),
    st.builds(V.pedal_token, st.integers(0, len(INSTRUMENTS) - 1), st.booleans()),
    st.builds(V.note_on_token, st.sampled_from([PIANO, STRINGS, DRUMS]), st.sampled_from([36, 60])),
    st.builds(V.note_off_token, st.sampled_from([PIANO, STRINGS, DRUMS]), st.sampled_from([36, 60])),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TOKENS, max_size=80))
def test_decode_then_encode_is_idempotent_on_any_token_sequence(tokens):
    once = f(tokens)
    assert f(once) == once


def _write_type0(events, end_time: float, path) -> None:
    """One track, events in the given order; 1 tick = 1 ms (tempo 1 s per beat, 1000 ticks per beat)."""
    track, last = mido.MidiTrack(), 0
    track.append(mido.MetaMessage("set_tempo", tempo=1_000_000, time=0))
    for time_s, msg in events:
        tick = round(time_s * 1000)
        track.append(msg.copy(time=tick - last))
        last = tick
    track.append(mido.MetaMessage("end_of_track", time=round(end_time * 1000) - last))
    mido.MidiFile(type=0, ticks_per_beat=1000, tracks=[track]).save(path)


def _stream(events, end_time) -> list[int]:
    encoder, tokens = EventEncoder(), []
    for time_s, msg in events:
        tokens += encoder.feed(time_s, msg)
    return tokens + encoder.finish(end_time)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(streams(jitter=False))
def test_streaming_encoder_gives_the_tokens_of_the_file_path(tmp_path, stream):
    """Messages fed one at a time, as from a port, give exactly the tokens of encode_file on the saved file."""
    events, end_time = stream
    # Whole milliseconds that are not on a half grid step: the file's tick rounding cannot move an event.
    events = [Timed(t, m) for t, m in events if round(t * 1000) % 10 != 5]
    end_time += 0.001 if round(end_time * 1000) % 10 == 5 else 0.0
    path = tmp_path / "stream.mid"
    _write_type0(events, end_time, path)
    encoded = encode_file(path, style="bach")
    live = _stream(events, end_time)
    assert list(encoded.tokens[encoded.prefix_len :]) == live
    assert list(encoded.tokens[: encoded.prefix_len]) == V.conditioning("bach", encoded.instruments)
    # The same holds for a type-1 file written by write_midi (one track per channel) and read back.
    write_midi(events, tmp_path / "type1.mid")
    midi = read_midi(tmp_path / "type1.mid")
    again = encode_file(tmp_path / "type1.mid")
    assert list(again.tokens[again.prefix_len :]) == _stream(midi.events, midi.end_time)


# ---------------------------------------------------------------- the rules, one example each


def on(t, note, channel=0, velocity=80):
    return Timed(t, mido.Message("note_on", channel=channel, note=note, velocity=velocity))


def off(t, note, channel=0):
    return Timed(t, mido.Message("note_off", channel=channel, note=note))


def names(tokens):
    return [V.describe(t) for t in tokens]


def test_gaps_longer_than_a_second_are_several_time_tokens():
    tokens = encode_events([on(0, 60), off(2.5, 60)])
    assert names(tokens) == ["VEL_20", "ON_piano_60", "TIME_100", "TIME_100", "TIME_50", "OFF_piano_60"]


def test_overlapping_notes_of_one_pitch_pair_first_in_first_out():
    events = [on(0, 60), on(0.1, 60, velocity=30), off(0.2, 60), off(0.5, 60)]
    notes = oracle_notes(decode_tokens(encode_events(events)), 1.0)
    assert [(round(n[2], 3), round(n[3], 3), V.velocity_bin(n[4])) for n in notes] == [
        (0.0, 0.2, V.velocity_bin(80)),
        (0.1, 0.5, V.velocity_bin(30)),
    ]


def test_orphan_note_offs_are_dropped_and_velocity_zero_is_a_note_off():
    events = [off(0, 61), on(0.1, 60), Timed(0.2, mido.Message("note_on", note=60, velocity=0)), off(0.3, 60)]
    assert names(encode_events(events)) == ["TIME_10", "VEL_20", "ON_piano_60", "TIME_10", "OFF_piano_60"]


def test_zero_length_notes_survive():
    decoded = decode_tokens(encode_events([on(0.5, 60), off(0.5, 60)]))
    assert [(m.type, m.note, t) for t, m in decoded if m.type != "program_change"] == [
        ("note_on", 60, 0.5),
        ("note_off", 60, 0.5),
    ]


def test_all_notes_off_controllers_end_only_that_channel():
    events = [on(0, 60), on(0, 64, channel=1), on(0, 67)]
    events.append(Timed(0.3, mido.Message("control_change", channel=0, control=123, value=0)))
    tokens = encode_events(events, end_time=1.0)
    assert names(tokens)[-5:] == ["TIME_30", "OFF_piano_60", "OFF_piano_67", "TIME_70", "OFF_piano_64"]


def test_program_changes_and_channel_10_choose_the_class():
    events = [
        Timed(0, mido.Message("program_change", channel=2, program=40)),
        on(0, 60, channel=2),
        Timed(0, mido.Message("program_change", channel=9, program=40)),  # drums stay drums
        on(0, 36, channel=9),
        Timed(0.1, mido.Message("program_change", channel=2, program=0)),
        off(0.2, 60, channel=2),  # ends the strings note it started
    ]
    assert names(encode_events(events)) == ["VEL_20", "ON_strings_60", "ON_drums_36", "TIME_20", "OFF_strings_60",
                                            "OFF_drums_36"]


def test_pedal_tokens_only_on_changes():
    events = [Timed(t, mido.Message("control_change", control=64, value=v)) for t, v in
              [(0, 127), (0.1, 100), (0.2, 10), (0.3, 0), (0.4, 64)]]
    assert names(encode_events(events)) == ["PEDAL_ON_piano", "TIME_20", "PEDAL_OFF_piano", "TIME_20",
                                            "PEDAL_ON_piano", "PEDAL_OFF_piano"]


def test_pedal_of_a_class_is_down_while_any_of_its_channels_holds_it():
    cc = [(0, 0, 127), (0.1, 1, 127), (0.2, 0, 0), (0.3, 1, 0)]  # channels 0 and 1 are both piano
    events = [Timed(t, mido.Message("control_change", channel=c, control=64, value=v)) for t, c, v in cc]
    assert names(encode_events(events)) == ["PEDAL_ON_piano", "TIME_30", "PEDAL_OFF_piano"]


def test_pedal_released_after_a_program_change_releases_the_class_that_pressed_it():
    events = [
        Timed(0, mido.Message("control_change", control=64, value=127)),
        Timed(0.1, mido.Message("program_change", program=40)),
        Timed(0.2, mido.Message("control_change", control=64, value=0)),
    ]
    assert names(encode_events(events)) == ["PEDAL_ON_piano", "TIME_20", "PEDAL_OFF_piano"]


def test_late_live_events_are_encoded_at_the_current_time():
    encoder = EventEncoder()
    assert names(encoder.feed(1.0, on(0, 60).msg)) == ["TIME_100", "VEL_20", "ON_piano_60"]
    assert names(encoder.feed(0.5, off(0, 60).msg)) == ["OFF_piano_60"]  # arrived late: no time travel
    assert encoder.time == pytest.approx(1.0)


def test_finish_ends_open_notes_and_pedals_at_the_end_time():
    encoder = EventEncoder()
    encoder.feed(0, mido.Message("control_change", control=64, value=127))
    encoder.feed(0, on(0, 60).msg)
    assert names(encoder.finish(0.25)) == ["TIME_25", "OFF_piano_60", "PEDAL_OFF_piano"]
    assert encoder.finish(1.0) == []
    assert encoder.notes == 1 and encoder.instruments == {PIANO}


def test_decoder_announces_each_class_with_a_program_change_before_its_first_message():
    tokens = [V.pedal_token(STRINGS, True), V.note_on_token(STRINGS, 60), V.note_on_token(DRUMS, 36)]
    decoded = decode_tokens(tokens)
    strings = INSTRUMENTS[STRINGS]
    assert [(m.type, m.channel) for _, m in decoded][:3] == [
        ("program_change", strings.channel),
        ("control_change", strings.channel),
        ("note_on", strings.channel),
    ]
    assert decoded[0].msg.program == strings.program
    assert not any(m.type == "program_change" and m.channel == 9 for _, m in decoded)


def test_decoder_conditioning_pad_and_eos():
    decoder = EventDecoder()
    prefix = V.conditioning("bach", [STRINGS, PIANO])
    assert [decoder.feed(t) for t in prefix + [V.PAD]] == [[]] * (len(prefix) + 1)
    assert decoder.style == "bach" and sorted(decoder.instrument_set) == [PIANO, STRINGS]
    decoder.feed(V.note_on_token(PIANO, 60))
    decoder.feed(V.time_token(30))
    ended = decoder.feed(V.EOS)
    assert decoder.ended and [(m.type, m.note, t) for t, m in ended] == [("note_off", 60, pytest.approx(0.3))]
    assert decoder.held == {}


def test_decoder_accepts_numpy_integers_and_refuses_everything_else():
    decoder = EventDecoder()
    assert decoder.feed(np.int64(V.time_token(5))) == []
    assert decoder.time == pytest.approx(0.05)
    for bad in (-1, V.VOCAB_SIZE, 2.5, float("nan"), float("inf"), None, "7", True, [1]):
        with pytest.raises(CodecError):
            decoder.feed(bad)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.1, "1.0", None])
def test_encoder_refuses_bad_times(bad):
    with pytest.raises(CodecError):
        EventEncoder().feed(bad, on(0, 60).msg)


@pytest.mark.parametrize("kw", [{"channels": (16,) * len(INSTRUMENTS)}, {"programs": (-1,) * len(INSTRUMENTS)},
                                {"channels": (0,)}, {"programs": (1.5,) * len(INSTRUMENTS)}])
def test_decoder_refuses_bad_channel_or_program_tables(kw):
    with pytest.raises(CodecError):
        EventDecoder(**kw)


def test_decoder_routes_classes_to_custom_channels_and_programs():
    channels = tuple(range(len(INSTRUMENTS)))
    decoded = decode_tokens([V.note_on_token(STRINGS, 60)], channels=channels, programs=(42,) * len(INSTRUMENTS))
    assert [(m.type, m.channel, m.bytes()) for _, m in decoded][:2] == [
        ("program_change", STRINGS, [0xC0 | STRINGS, 42]),
        ("note_on", STRINGS, [0x90 | STRINGS, 60, V.bin_velocity(V.VELOCITY_BINS * 5 // 8)]),
    ]


def test_the_worked_example_in_docs_is_what_the_code_does():
    """docs/architecture.md's worked example was generated by the codec; it must stay true."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "architecture.md").read_text()
    block = doc[doc.index("ids:   ") : doc.index("```", doc.index("ids:   "))]
    ids = [int(x) for x in block.splitlines()[0].split()[1:]]
    names_in_doc = " ".join(block[block.index("names:") :].split()[1:]).split()
    m = mido.Message
    events = [
        (0.000, m("program_change", channel=1, program=40)),
        (0.000, m("note_on", channel=0, note=60, velocity=80)),
        (0.004, m("note_on", channel=0, note=64, velocity=82)),
        (0.250, m("note_on", channel=1, note=67, velocity=100)),
        (0.252, m("note_on", channel=9, note=36, velocity=110)),
        (0.350, m("note_off", channel=9, note=36)),
        (0.500, m("control_change", channel=0, control=64, value=127)),
        (0.503, m("note_off", channel=0, note=60)),
        (0.506, m("note_on", channel=0, note=64, velocity=0)),
        (1.200, m("control_change", channel=0, control=64, value=0)),
        (2.750, m("note_off", channel=1, note=67)),
    ]
    encoder = EventEncoder()
    body = [t for time_s, msg in events for t in encoder.feed(time_s, msg)]
    tokens = V.conditioning("classical", sorted(encoder.instruments)) + body + [V.EOS]
    assert tokens == ids and names(tokens) == names_in_doc
