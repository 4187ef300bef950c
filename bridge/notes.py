"""Held-note tracking and panic: which notes are sounding on the out port, by note id, and how to silence them.

A note id names one note from its note-on to its note-off. Only the note-off carrying the id of the note that is
currently sounding on (channel, pitch) is sent; stale note-offs (a retriggered pitch, a note cut by a panic or by
the maximum note length) are dropped. So the out port never sees a note-on without a later note-off, and never a
note-off that would cut a newer note short.
"""

from __future__ import annotations

import mido

ALL_SOUND_OFF = 120
ALL_NOTES_OFF = 123


def is_note_on(msg: mido.Message) -> bool:
    return msg.type == "note_on" and msg.velocity > 0


def is_note_off(msg: mido.Message) -> bool:
    return msg.type == "note_off" or (msg.type == "note_on" and msg.velocity == 0)


def note_off(channel: int, note: int) -> mido.Message:
    """A note-off (0x80, velocity 0) for channel 0-15 and note 0-127."""
    return mido.Message("note_off", channel=channel, note=note, velocity=0)


class HeldNotes:
    """Sounding notes: (channel 0-15, note 0-127) -> note id (int, or None for untracked thru notes)."""

    def __init__(self) -> None:
        self.sounding: dict[tuple[int, int], int | None] = {}
        self.channels: set[int] = set()  # every channel a note was sent on: panic sends CC123/CC120 there

    def __len__(self) -> int:
        return len(self.sounding)

    def note_on(self, msg: mido.Message, note_id: int | None) -> list[mido.Message]:
        """Register a note-on about to be sent; returns what to send before it (a note-off when the pitch is
        already sounding on that channel: MIDI would otherwise leave one of the two without its note-off)."""
        key = (msg.channel, msg.note)
        before = [note_off(*key)] if key in self.sounding else []
        self.sounding[key] = note_id
        self.channels.add(msg.channel)
        return before

    def note_off(self, msg: mido.Message, note_id: int | None) -> bool:
        """True when this note-off should be sent: its note sounds and (when it carries an id) it is the same
        note. The note is then no longer held."""
        key = (msg.channel, msg.note)
        if key not in self.sounding:
            return False
        if note_id is not None and self.sounding[key] is not None and self.sounding[key] != note_id:
            return False
        del self.sounding[key]
        return True

    def is_sounding(self, note_id: int) -> bool:
        return note_id in self.sounding.values()

    def release(self, keep=lambda note_id: False) -> list[mido.Message]:
        """Note-offs for every sounding note whose id `keep` does not accept; they are forgotten."""
        gone = [key for key, nid in self.sounding.items() if not keep(nid)]
        for key in gone:
            del self.sounding[key]
        return [note_off(*key) for key in gone]

    def panic(self) -> list[mido.Message]:
        """Everything needed to silence the out port: a note-off per held note, then CC123 (all notes off) and
        CC120 (all sound off) on every channel used. Afterwards nothing is held."""
        msgs = self.release()
        for channel in sorted(self.channels):
            msgs.append(mido.Message("control_change", channel=channel, control=ALL_NOTES_OFF, value=0))
            msgs.append(mido.Message("control_change", channel=channel, control=ALL_SOUND_OFF, value=0))
        return msgs
