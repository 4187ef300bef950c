"""The bridge's pipeline pieces on their own: the output stage (note ids, quantization shift, held notes, harmony
voices) and the typed work events between the input stage and the worker."""

from __future__ import annotations

import queue

import mido
from bridge_fakes import Rig, cc, off, on, unreleased_note_ons
from musebridge.bridge.clock import FakeClock
from musebridge.bridge.config import BridgeConfig
from musebridge.bridge.feedback import EchoFilter
from musebridge.bridge.input import MAX_BACKLOG, InputStage
from musebridge.bridge.midiclock import ClockConfig, ClockFollower
from musebridge.bridge.output import OutputConfig, OutputStage
from musebridge.bridge.status import status_text
from musebridge.bridge.work import Control, PlayerNote, Silenced, Transport


class _Port:
    def __init__(self, clock: FakeClock):
        self.clock, self.sent = clock, []

    def send(self, msg: mido.Message) -> None:
        self.sent.append((self.clock.now(), msg))


def _output(quantize: str | None = None, channel_map=None):
    clock = FakeClock(0.0)
    follower = ClockFollower(ClockConfig(bpm=120, quantize=quantize), start=0.0)
    out = OutputStage(clock, OutputConfig(channel_map=channel_map or {}), follower, {"out": 0})
    out.port = _Port(clock)
    return clock, out


def _run(clock: FakeClock, out: OutputStage, seconds: float) -> None:
    end = clock.now() + seconds
    while clock.now() < end - 1e-9:
        clock.advance(0.001)
        out.flush()


def test_a_quantized_note_off_moves_with_its_note_on_and_is_never_before_it():
    """A 1/16 grid at 120 bpm (0.125 s): a note-on at 0.08 s sounds at 0.125 s; its note-off, asked for in a later
    request at 0.1 s (before the note-on would sound), keeps the note's length: at 0.145 s."""
    clock, out = _output(quantize="1/16")
    out.begin_step()
    out.play([(0.08, on(60, channel=5))], lambda s: s)
    out.play([(0.10, off(60, channel=5))], lambda s: s)
    _run(clock, out, 0.5)
    (t_on, m_on), (t_off, m_off) = out.port.sent
    assert m_on.type == "note_on" and abs(t_on - 0.125) < 0.0015
    assert m_off.type == "note_off" and abs(t_off - 0.145) < 0.0015 and out.sounding() == 0


def test_a_silencing_during_a_worker_step_refuses_what_the_step_plays():
    """A panic between the start of a worker step and its play (an engine reply computed before a transport
    stop) leaves nothing sounding: the reply is not played at all."""
    clock, out = _output()
    out.begin_step()
    out.panic("transport stop")
    assert out.play([(0.0, on(60, channel=5)), (0.1, off(60, channel=5))], lambda s: s) == []
    _run(clock, out, 0.2)
    assert not [m for _, m in out.port.sent if m.type == "note_on"]


def test_voices_end_with_their_player_key_and_come_back_on_the_engine_channel():
    """Harmony voices on a remapped channel (engine 5 -> out 2) end at once with their player's key, and are
    reported as the engine made them (channel 5), for the engine's own note-offs; release spares thru notes."""
    clock, out = _output(channel_map={5: 2})
    out.thru(on(48, channel=0))
    out.begin_step()
    out.play([(0.0, on(60, channel=5)), (0.0, on(64, channel=5))], lambda s: s, quantize=False,
             voices_of=(0, 48), flush=True)
    assert out.voices() == {(2, 60), (2, 64)} and out.sounding() == 3
    made = out.end_voices((0, 48), clock.now())
    assert [(m.channel, m.note) for m in made] == [(5, 60), (5, 64)]
    assert out.voices() == set() and out.sounding() == 1  # the player's thru note still sounds
    out.play([(0.0, on(67, channel=5))], lambda s: s, flush=True)
    out.release()
    assert out.sounding() == 1 and not unreleased_note_ons(m for _, m in out.port.sent if m.channel == 2)


def test_the_input_stage_turns_midi_into_typed_work_and_silences_at_once():
    """Player notes become PlayerNote, mapped CCs Control, a transport stop Transport(False) after an immediate
    silence, CC123 an immediate silence and Silenced; the callback itself only queues."""
    clock = FakeClock()
    config = BridgeConfig(thru=True)
    follower = ClockFollower(config.clock)
    out = OutputStage(clock, OutputConfig(), follower, {"out": 0})
    out.port = _Port(clock)
    work: queue.SimpleQueue = queue.SimpleQueue()
    stage = InputStage(config, clock, follower, EchoFilter(), out, work, lambda: False,
                       {"in": 0, "malformed": 0, "out": 0, "dropped": 0})
    stage.callback(on(60).bytes())
    assert work.empty() and not out.port.sent, "the callback only timestamps and queues"
    for msg in (on(60), cc(107), mido.Message("stop"), on(62), cc(123)):
        stage.handle(clock.now(), msg.bytes())
    events = []
    while not work.empty():
        events.append(work.get())
    assert [type(e) for e in events] == [PlayerNote, Control, Silenced, Transport, PlayerNote, Silenced]
    assert events[1].action == "trigger" and events[3].running is False
    assert not unreleased_note_ons(m for _, m in out.port.sent), "both silencings ended the thru notes at once"


def test_a_key_held_through_a_switch_to_respond_does_not_hold_its_answer_back():
    """Respond counts the keys it heard go down: one pressed in another mode and still held when respond starts
    listening does not stop the answer after the player's next phrase and pause."""
    rig = Rig("accompany", thru=True)
    rig.play(on(48))
    rig.play(cc(102))  # respond
    rig.play(on(60))
    rig.run(0.05)
    rig.play(off(60))
    rig.run(1.0)
    assert rig.bridge.mode.state == "answering" and rig.note_ons(5, after=rig.clock.now() - 0.5)


def _flood(rig: Rig, msgs) -> None:
    """Messages into the bridge's in port, handled by the input stage only (the worker is far behind)."""
    for msg in msgs:
        rig.keyboard.send(msg)
    inbox = rig.bridge.input.inbox
    while not inbox.empty():
        rig.bridge.input.handle(*inbox.get())


def test_a_midi_flood_cannot_grow_the_workers_backlog_and_no_note_hangs():
    """A flood the engine worker cannot keep up with (a stuck controller, a feedback loop): at most MAX_BACKLOG
    events wait for it (new notes are dropped and counted, the status line says so), a note held from before
    the flood still gets its note-off through, the pedal's last state arrives once the worker has caught up, no
    harmony voice is left sounding, and the next note is answered."""
    rig = Rig("harmonize")
    rig.play(on(60))
    flood = [m for i in range(3000) for m in (on(72 + i % 24), cc(64, 127 * (i % 2)), off(72 + i % 24))]
    _flood(rig, flood + [cc(64, 0), off(60)])
    work = rig.bridge.worker.work
    assert work.qsize() <= MAX_BACKLOG + 4, "bounded: only the note-offs of notes it has (and the pedal) pass"
    assert rig.bridge.counts["dropped"] > 2000
    assert "dropped" in status_text(rig.bridge)
    events = [work.get() for _ in range(work.qsize())]
    assert (events[-1].msg.type, events[-1].msg.note) == ("note_off", 60)
    for event in events:  # the worker catches up ...
        rig.bridge.worker.process(event)
    rig.bridge.input.idle()  # ... and the input thread, idle, passes on the last pedal change held back
    pedal = [work.get() for _ in range(work.qsize())]
    assert [(e.msg.type, e.msg.value) for e in pedal] == [("control_change", 0)]
    rig.bridge.worker.process(pedal[0])
    rig.run(0.5)
    assert not unreleased_note_ons(m for _, m in rig.heard), "every voice ended with its player's note"
    answered = len(rig.note_ons(5))
    rig.play(on(64))
    assert len(rig.note_ons(5)) > answered, "the next note is answered"
    rig.play(off(64))


def test_a_flood_of_panics_and_transport_messages_is_bounded_too():
    """CC123 and start/stop floods: every panic silences at once, but the worker's queue stays bounded, and the
    transport state the worker ends with is the last one sent."""
    rig = Rig("harmonize")
    flood = [m for _ in range(1000) for m in (cc(123, 0), mido.Message("start"), mido.Message("stop"))]
    _flood(rig, flood + [mido.Message("start")])
    work = rig.bridge.worker.work
    assert work.qsize() <= 2 * MAX_BACKLOG
    flooded = [work.get() for _ in range(work.qsize())]  # the worker catches up ...
    assert sum(isinstance(e, Transport) for e in flooded) < 2 * MAX_BACKLOG
    rig.bridge.input.idle()  # ... and the input thread, idle, passes on the last transport message held back
    assert [(type(e), e.running) for e in [work.get() for _ in range(work.qsize())]] == [(Transport, True)]
