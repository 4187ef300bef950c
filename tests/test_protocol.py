"""The wire format: encode/decode are inverses, and every parse-level error code is produced."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from musebridge.engine.server import protocol as P

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda c: st.one_of(st.lists(c, max_size=4),
                                                             st.dictionaries(st.text(max_size=8), c, max_size=4)),
                           max_leaves=20)
ids = st.text(min_size=1, max_size=P.MAX_ID_CHARS)


def raw(obj) -> list[bytes]:
    return [json.dumps(obj).encode()]


@settings(max_examples=200, deadline=None)
@given(ids, st.floats(min_value=0, max_value=1e6), st.integers(1, 10_000), st.sampled_from(["", "k" * 64]),
       st.one_of(st.just(""), ids))
def test_request_round_trip(rid, until, notes, key, client):
    req = P.Request(rid, "generate", {"session": "s1", "until": until, "notes": notes}, key, client)
    assert P.parse_request([P.encode_request(req)]) == req


@pytest.mark.parametrize("client", [7, None, ["a"], "x" * 65])
def test_a_client_token_must_be_a_short_string(client):
    frame = json.dumps({"v": 1, "id": "1", "cmd": "status", "client": client}).encode()
    with pytest.raises(P.ProtocolError) as refused:
        P.parse_request([frame])
    assert refused.value.code == "bad_request" and "'client'" in str(refused.value)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.none(), ids), st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_ok_reply_round_trip(rid, result):
    reply = P.Reply(rid, True, result=result)
    assert P.decode_reply(P.encode_reply(reply)) == reply


@given(ids, st.sampled_from(sorted(P.ERRORS)), st.text(max_size=50))
def test_error_reply_round_trip(rid, code, message):
    reply = P.Reply(rid, False, error_code=code, error_message=message)
    assert P.decode_reply(P.encode_reply(reply)) == reply


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz._", min_size=1, max_size=12), st.integers(0, 2**40),
       st.floats(0, 2e9), st.one_of(st.none(), ids), st.dictionaries(st.text(max_size=8), json_values, max_size=5))
def test_event_round_trip(topic, seq, t, session, data):
    event = P.Event(topic, seq, t, session, data)
    assert P.decode_event(P.encode_event(event)) == event


@pytest.mark.parametrize("frames, code", [
    ([b"\xff\xfe not utf8"], "bad_json"),
    ([b"{not json"], "bad_json"),
    ([b"[1, 2]"], "bad_json"),
    ([b"{}", b"{}"], "bad_request"),
    ([], "bad_request"),
    (raw({"v": 1, "cmd": "status"}), "bad_request"),
    (raw({"v": 1, "id": 7, "cmd": "status"}), "bad_request"),
    (raw({"v": 1, "id": "x" * (P.MAX_ID_CHARS + 1), "cmd": "status"}), "bad_request"),
    (raw({"v": 1, "id": "1", "cmd": 5}), "bad_request"),
    (raw({"v": 1, "id": "1", "cmd": "status", "args": []}), "bad_request"),
    (raw({"v": 2, "id": "1", "cmd": "status"}), "version_mismatch"),
    ([b" " * (P.MAX_MESSAGE_BYTES + 1)], "too_large"),
    (raw({"v": 1, "id": "1", "cmd": "dance"}), "unknown_command"),
    (raw({"v": 1, "id": "1", "cmd": "session.close"}), "bad_argument"),
    (raw({"v": 1, "id": "1", "cmd": "session.close", "args": {"session": 3}}), "bad_argument"),
    (raw({"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "temperature": True}}), "bad_argument"),
    (raw({"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "temperature": 99}}), "bad_argument"),
    (raw({"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "mode": "karaoke"}}), "bad_argument"),
    (raw({"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "instruments": ["piano", 3]}}),
     "bad_argument"),
    (raw({"v": 1, "id": "1", "cmd": "status", "args": {"verbose": True}}), "bad_argument"),
    ([b'{"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "temperature": 1e999}}'], "bad_json"),
    ([b'{"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "temperature": NaN}}'], "bad_json"),
    ([b'{"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "style": "\\ud800"}}'], "bad_json"),
    ([b"\xef\xbb\xbf" + raw({"v": 1, "id": "1", "cmd": "status"})[0]], "bad_json"),
    ([b'{"v": 1, "id": "1", "cmd": "status", "args": {"a": ' + b"[" * 2000 + b"]" * 2000 + b"}}"], "bad_json"),
    ([b'{"v": 1, "id": "1", "cmd": "set", "args": {"session": "s", "seed": 123456789012345678901234567890}}'],
     "bad_argument"),  # beyond 64 bits: read as a float, and a seed is an integer
])
def test_parse_errors(frames, code):
    with pytest.raises(P.ProtocolError) as info:
        P.parse_request(frames)
    assert info.value.code == code
    assert str(info.value)  # a message a person can read


def test_a_reply_json_cannot_carry_is_answered_internal():
    reply = P.decode_reply(P.encode_reply(P.Reply("7", True, result={"notes": {1, 2}})))
    assert (reply.id, reply.ok, reply.error_code) == ("7", False, "internal")
    assert "set" in reply.error_message  # names what could not be encoded


def test_numpy_values_and_integer_keys_are_written_as_json():
    import numpy as np  # noqa: PLC0415

    result = {"ms": np.float64(1.5), "count": np.int64(3), "scores": np.array([0.5, 1.0]),
              "by_channel": {9: "drums"}}
    reply = P.decode_reply(P.encode_reply(P.Reply("1", True, result=result)))
    assert reply.result == {"ms": 1.5, "count": 3, "scores": [0.5, 1.0], "by_channel": {"9": "drums"}}


def test_error_echoes_request_id_when_known():
    with pytest.raises(P.ProtocolError) as info:
        P.parse_request(raw({"v": 1, "id": "abc", "cmd": "dance"}))
    reply = P.error_reply(info.value)
    assert reply.id == "abc" and reply.error_code == "unknown_command" and "status" in reply.error_message


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=3))
def test_random_frames_only_raise_protocol_errors(frames):
    try:
        P.parse_request(frames)
    except P.ProtocolError as exc:
        assert exc.code in P.ERRORS
