"""Fuzzing the codec's edges: whatever comes in, only the codec's own documented errors come out.

Files: random and mutated bytes -> read_midi / encode_file raise only MidiFileError.
Tokens: random ids and garbage -> EventDecoder.feed raises only CodecError.
Messages: random message sequences and bad times -> EventEncoder.feed / finish raise only CodecError.
"""

from __future__ import annotations

import math
from pathlib import Path

import mido
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from musebridge.engine.errors import CodecError, MidiFileError
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import MAX_TIME_S, EventDecoder, EventEncoder
from musebridge.engine.tokens.midifile import encode_file, read_midi

CHORALE = (Path(__file__).resolve().parent.parent / "engine" / "data" / "chorale.mid").read_bytes()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- files


@st.composite
def mutated(draw) -> bytes:
    """A real file with a few bytes overwritten, then possibly cut short."""
    data = bytearray(CHORALE)
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data[: draw(st.integers(0, len(data)))])


@st.composite
def random_track(draw) -> bytes:
    """A well-framed file whose one track holds random meta, sysex and channel events (any bytes inside)."""
    body = b""
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["meta", "sysex", "raw"]))
        data = draw(st.binary(max_size=6))
        if kind == "meta":
            body += bytes([0, 0xFF, draw(st.integers(0, 127)), len(data)]) + data
        elif kind == "sysex":
            body += bytes([0, 0xF0, len(data)]) + data
        else:
            body += data
    body += b"\x00\xff\x2f\x00"
    return b"MThd\x00\x00\x00\x06\x00\x00\x00\x01\x00\x60MTrk" + len(body).to_bytes(4, "big") + body


FILE_BYTES = st.one_of(
    random_track(),
    st.binary(max_size=200),
    st.binary(max_size=200).map(lambda b: b"MThd\x00\x00\x00\x06" + b),
    st.binary(max_size=200).map(lambda b: b"MThd\x00\x00\x00\x06\x00\x01\x00\x02\x01\xe0MTrk" + b),
    mutated(),
)


@FUZZ
@given(FILE_BYTES)
def test_random_bytes_raise_only_midi_file_error(tmp_path, data):
    path = tmp_path / "fuzz.mid"
    path.write_bytes(data)
    try:
        midi = read_midi(path)
        encoded = encode_file(path)
    except MidiFileError as exc:
        assert str(exc).startswith(str(path)) and "\n" not in str(exc)
        return
    assert all(math.isfinite(t) and t >= 0 for t, _ in midi.events)
    assert all(0 <= t < V.VOCAB_SIZE for t in encoded.tokens)


# ---------------------------------------------------------------- tokens

GARBAGE = st.one_of(
    st.integers(-(2**70), 2**70),
    st.integers(-5, V.VOCAB_SIZE + 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.text(max_size=4),
    st.just([1, 2]),
    st.just(np.float32(3.0)),
    st.integers(-3, V.VOCAB_SIZE + 3).map(np.int64),
)
TOKENS = st.one_of(st.integers(0, V.VOCAB_SIZE - 1), GARBAGE)


@FUZZ
@given(st.lists(TOKENS, max_size=120))
def test_decoder_raises_only_codec_error(items):
    decoder = EventDecoder()
    for item in items:
        try:
            out = decoder.feed(item)
        except CodecError:
            continue
        assert all(isinstance(m, mido.Message) and m.time == 0 and t >= 0 for t, m in out)
    decoder.finish()
    assert decoder.held == {}


# ---------------------------------------------------------------- messages

CH = st.integers(0, 15)
D7 = st.integers(0, 127)
MESSAGES = st.one_of(
    st.builds(lambda c, n, v: mido.Message("note_on", channel=c, note=n, velocity=v), CH, D7, D7),
    st.builds(lambda c, n, v: mido.Message("note_off", channel=c, note=n, velocity=v), CH, D7, D7),
    st.builds(lambda c, k, v: mido.Message("control_change", channel=c, control=k, value=v), CH, D7, D7),
    st.builds(lambda c, k, v: mido.Message("control_change", channel=c, control=k, value=v), CH,
              st.sampled_from([64, 120, 123]), D7),
    st.builds(lambda c, p: mido.Message("program_change", channel=c, program=p), CH, D7),
    st.builds(lambda c, p: mido.Message("pitchwheel", channel=c, pitch=p), CH, st.integers(-8192, 8191)),
    st.builds(lambda c, n, v: mido.Message("polytouch", channel=c, note=n, value=v), CH, D7, D7),
    st.builds(lambda d: mido.Message("sysex", data=d), st.lists(D7, max_size=20)),
    st.sampled_from([mido.Message(t) for t in ("clock", "start", "stop", "continue", "active_sensing", "reset")]),
    st.builds(lambda p: mido.Message("songpos", pos=p), st.integers(0, 16383)),
)
NOT_MESSAGES = st.one_of(
    st.none(),
    st.just(mido.MetaMessage("set_tempo", tempo=400_000)),
    st.just({"type": "note_on", "note": 60}),
    st.binary(max_size=3),
    st.just(b"\x90\x3c\x40"),
)
GOOD_TIMES = st.floats(0, 100, allow_nan=False)
BAD_TIMES = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.floats(max_value=-1e-9, allow_infinity=False),
    st.floats(min_value=MAX_TIME_S * 1.0001, allow_infinity=False),
    st.integers(min_value=10**9),
    st.none(),
    st.text(max_size=3),
    st.just(True),
    st.just(complex(1, 1)),
)
TIMES = st.one_of(GOOD_TIMES, GOOD_TIMES, GOOD_TIMES, BAD_TIMES)  # mostly good, so the encoder's state evolves
STEPS = st.tuples(TIMES, st.one_of(MESSAGES, MESSAGES, NOT_MESSAGES))


@FUZZ
@given(st.lists(STEPS, max_size=80), st.one_of(st.none(), GOOD_TIMES, BAD_TIMES))
def test_encoder_raises_only_codec_error(steps, end_time):
    encoder = EventEncoder()
    tokens: list[int] = []
    for time_s, msg in steps:
        try:
            tokens += encoder.feed(time_s, msg)
        except CodecError:
            continue
    try:
        tokens += encoder.finish(end_time)
    except CodecError:
        tokens += encoder.finish()
    assert all(isinstance(t, int) and 0 <= t < V.VOCAB_SIZE for t in tokens)
    # Whatever came in, the output is a well-formed stream: the decoder ends with nothing left sounding
    # beyond what it is told to finish, and every note-off matched a note-on.
    decoder = EventDecoder()
    for token in tokens:
        decoder.feed(token)
    assert decoder.held == {}
