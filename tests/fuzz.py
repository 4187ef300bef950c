"""Bad request frames for the engine server, shared by its fuzz test and bench/bad_input.py: random bytes,
malformed JSON, wrong frame counts, bad arguments and oversized messages, in a fixed rotation."""

from __future__ import annotations

import json
import random

from musebridge.engine.server import protocol as P

SAMPLES = (b"", b"{", b"[]", b"null", b'{"v":1}')
REQUESTS = ({"v": 1, "id": "x", "cmd": "feed", "args": {"session": 1}},
            {"v": 1, "id": "x", "cmd": "set", "args": {"session": "s1", "seed": -1}})


def bad_frames(rng: random.Random, i: int, key: str = "") -> list[bytes]:
    """The i-th bad message as DEALER frames (an empty delimiter first). Every fourth is one frame of random
    bytes (`bad_json`); then none, two or three frames (`bad_request`); then one malformed or mistyped request
    (with the server's connection-file `key`, so its arguments are checked); then one frame over
    protocol.MAX_MESSAGE_BYTES (`too_large`). Each gets an error reply (docs/protocol.md, "Errors")."""
    samples = SAMPLES + tuple(json.dumps({**r, "key": key}).encode() for r in REQUESTS)
    kind = i % 4
    if kind == 0:
        return [b"", bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 200)))]
    if kind == 1:
        return [b""] + [rng.choice(samples) for _ in range(rng.choice([0, 2, 3]))]
    if kind == 2:
        return [b"", rng.choice(samples)]
    return [b"", b"x" * (P.MAX_MESSAGE_BYTES + 1)]
