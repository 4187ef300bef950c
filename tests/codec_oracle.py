"""An independent oracle for notes in timed MIDI messages, and the tolerance check of a codec round trip.

Tolerances (also in docs/architecture.md): every event time is rounded to the nearest point of the GRID_S grid,
so each note's onset and offset come back within half a grid step of the original, and its duration within one
grid step. Pitches and instrument classes come back exactly, velocities within their bin.
"""

from __future__ import annotations

from collections import defaultdict

from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import DRUMS, PROGRAM_TO_CLASS

HALF_STEP = V.GRID_S / 2 + 1e-9


def oracle_notes(events, end_time: float) -> list[list]:
    """Notes as [class, pitch, start, end, velocity, channel] in note-on order. Note-offs pair with the oldest
    sounding note of their channel and pitch; CC120/123 end a channel's notes; the rest end at end_time."""
    programs = [0] * 16
    sounding: dict[tuple[int, int], list[int]] = defaultdict(list)
    notes: list[list] = []
    for t, msg in events:
        if msg.type == "program_change":
            programs[msg.channel] = msg.program
        elif msg.type == "note_on" and msg.velocity > 0:
            cls = DRUMS if msg.channel == 9 else PROGRAM_TO_CLASS[programs[msg.channel]]
            sounding[(msg.channel, msg.note)].append(len(notes))
            notes.append([cls, msg.note, t, None, msg.velocity, msg.channel])
        elif msg.type in ("note_on", "note_off") and sounding[(msg.channel, msg.note)]:
            notes[sounding[(msg.channel, msg.note)].pop(0)][3] = t
        elif msg.type == "control_change" and msg.control in (120, 123):
            for (channel, _), indices in sounding.items():
                while channel == msg.channel and indices:
                    notes[indices.pop(0)][3] = t
    for note in notes:
        if note[3] is None:
            note[3] = end_time
    return notes


def _by_key(notes) -> dict[tuple[int, int], list[list]]:
    groups = defaultdict(list)
    for note in notes:  # keeps note-on order inside each group
        groups[(note[0], note[1])].append(note)
    return groups


def assert_same_notes(original, decoded) -> None:
    """Same notes per (class, pitch), onsets and offsets within half a grid step, velocities in their bin."""
    want, got = _by_key(original), _by_key(decoded)
    assert sorted(want) == sorted(got)
    for key in want:
        a, b = want[key], got[key]
        assert len(a) == len(b), key
        for x, y in zip(a, b, strict=True):  # note-ons keep their order
            assert abs(x[2] - y[2]) <= HALF_STEP, (key, x, y)
            assert V.velocity_bin(x[4]) == V.velocity_bin(y[4]), (key, x, y)
        for ex, ey in zip(sorted(x[3] for x in a), sorted(y[3] for y in b), strict=True):
            assert abs(ex - ey) <= HALF_STEP, (key, ex, ey)
    if all(len({n[5] for n in original if n[0] == cls}) <= 1 for cls in {n[0] for n in original}):
        # One channel per class: the pairing is unambiguous, so compare note by note.
        for key in want:
            for x, y in zip(want[key], got[key], strict=True):
                assert abs(x[3] - y[3]) <= HALF_STEP, (key, x, y)
                assert abs((x[3] - x[2]) - (y[3] - y[2])) <= 2 * HALF_STEP, (key, x, y)
