"""The protocol's note events: the one format both sides put on the wire (docs/protocol.md, "Events").

A note event is `Timed(time, msg)` (engine/tokens/codec.py): seconds on the session's clock and a mido.Message. On
the wire it is a JSON object with "t" (seconds, >= 0, rounded to a microsecond) and the message's own fields
(mido's `Message.dict()` without its delta "time"); a note-off the bridge sends for one of the engine's own notes
carries `"engine": true`:

    {"t": 1.25, "type": "note_on", "channel": 0, "note": 60, "velocity": 90}
    {"t": 1.5, "type": "note_off", "channel": 3, "note": 64, "velocity": 0, "engine": true}

The bridge writes what it feeds and reads what the engine plays with these two functions; the engine reads what is
fed and writes what it plays with the same two. `from_wire(to_wire(...))` is the identity up to the microsecond
(tests/test_wire.py).
"""

from __future__ import annotations

import mido

from ..tokens.codec import Timed
from .protocol import ProtocolError, brief

EVENT_TYPES = ("note_on", "note_off", "control_change", "program_change")
MAX_TIME_S = 1e7  # seconds: later than any session lives


def to_wire(t: float, msg: mido.Message, engine: bool = False) -> dict:
    """A message at session time t (seconds; below 0 is sent as 0) as a wire event. engine: the end of one of
    the engine's own notes."""
    fields = msg.dict()
    fields.pop("time", None)
    event = {"t": round(max(t, 0.0), 6), **fields}
    if engine:
        event["engine"] = True
    return event


def from_wire(event: dict) -> tuple[Timed, bool]:
    """A wire event -> (Timed(seconds, mido.Message), engine flag). Raises ProtocolError(bad_argument) whose
    message names the event and the problem."""
    if not isinstance(event, dict):
        raise _bad(f"event {brief(event)}: must be an object with 't' and 'type'")
    fields = dict(event)
    t, engine = fields.pop("t", None), fields.pop("engine", False)
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t < MAX_TIME_S:
        raise _bad(f"event {brief(event)}: 't' must be seconds >= 0")
    if not isinstance(engine, bool):
        raise _bad(f"event {brief(event)}: 'engine' must be true or false")
    if fields.get("type") not in EVENT_TYPES:
        raise _bad(f"event {brief(event)}: 'type' must be one of {', '.join(EVENT_TYPES)}")
    try:
        return Timed(float(t), mido.Message(**fields)), engine
    except (TypeError, ValueError) as exc:
        raise _bad(f"event {brief(event)}: {exc}") from None


def _bad(message: str) -> ProtocolError:
    return ProtocolError("bad_argument", message)
