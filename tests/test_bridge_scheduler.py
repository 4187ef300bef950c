"""Output scheduler: due times, note ids, maximum note length, cancellation, release and panic (FakeClock)."""

from __future__ import annotations

import random
import time

import mido
from musebridge.bridge.clock import FakeClock, MonotonicClock
from musebridge.bridge.scheduler import ENGINE, THRU, Scheduler, SchedulerConfig

from tests.bridge_fakes import off, on, stuck_notes, unreleased_note_ons


def make(**config):
    clock = FakeClock(start=0.0)
    sent: list[tuple[float, mido.Message]] = []
    sched = Scheduler(lambda m: sent.append((clock.now(), m)), clock, SchedulerConfig(**config))
    return clock, sched, sent


def test_sends_each_event_at_its_due_time_in_order():
    clock, sched, sent = make()
    sched.schedule_events([(0.30, off(60, 5)), (0.10, on(60, 5)), (0.20, on(64, 5)), (0.25, off(64, 5))])
    for t in (0.05, 0.10, 0.15, 0.20, 0.25, 0.30):
        clock.set(t)
        sched.run_due()
    assert [(round(t, 2), m.type, m.note) for t, m in sent] == [
        (0.10, "note_on", 60), (0.20, "note_on", 64), (0.25, "note_off", 64), (0.30, "note_off", 60)]
    assert all(abs(e) < 1e-9 for e in sched.errors_s)


def test_nothing_is_sent_early():
    clock, sched, sent = make()
    sched.schedule(1.0, on(60))
    clock.set(0.999)
    assert sched.run_due() == 0 and not sent
    assert sched.next_due() == 1.0


def test_retrigger_sends_a_note_off_first_and_stale_note_offs_are_dropped():
    clock, sched, sent = make()
    sched.schedule(0.1, on(60, 5))
    sched.schedule(0.2, on(60, 5))  # the same pitch again before the first ended
    sched.schedule(0.3, off(60, 5))  # pairs with the second note
    for t in (0.1, 0.2, 0.3):
        clock.set(t)
        sched.run_due()
    kinds = [m.type for _, m in sent]
    assert kinds == ["note_on", "note_off", "note_on", "note_off"]
    assert not stuck_notes(m for _, m in sent)


def test_maximum_note_length_ends_a_note_without_note_off():
    clock, sched, sent = make(max_note_s=2.0)
    sched.schedule(0.0, on(60, 5))
    sched.run_due()
    clock.set(1.9)
    sched.run_due()
    assert stuck_notes(m for _, m in sent) == {(5, 60)}
    clock.set(2.0)
    sched.run_due()
    assert not stuck_notes(m for _, m in sent)
    assert sent[-1][1].type == "note_off" and sent[-1][0] == 2.0


def test_cancel_after_keeps_note_offs_of_sounding_notes():
    clock, sched, sent = make()
    sched.schedule_events([(0.0, on(60, 5)), (0.5, off(60, 5)), (0.3, on(62, 5)), (0.6, off(62, 5))])
    sched.run_due()  # 60 sounds
    assert sched.cancel_after(0.1) == 2  # the note-on of 62 and its note-off; 60's note-off stays
    clock.set(1.0)
    sched.run_due()
    assert [(m.type, m.note) for _, m in sent] == [("note_on", 60), ("note_off", 60)]


def test_replanned_note_off_pairs_with_a_sounding_note():
    clock, sched, sent = make()
    sched.schedule(0.0, on(60, 5))
    sched.run_due()
    sched.cancel_after(0.0)
    sched.schedule(0.4, off(60, 5))  # a new plan ends the note that already sounds
    clock.set(0.4)
    sched.run_due()
    assert not stuck_notes(m for _, m in sent)


def test_late_note_ons_are_dropped_with_their_note_offs():
    clock, sched, sent = make(late_drop_s=0.05)
    sched.schedule_events([(0.0, on(60, 5)), (0.2, off(60, 5))])
    clock.set(0.3)
    sched.run_due()
    assert not sent and sched.dropped_late == 1


def test_release_ends_one_source_and_keeps_the_other():
    clock, sched, sent = make()
    sched.send_now(on(48, 0), THRU)
    sched.schedule_events([(0.0, on(60, 5)), (1.0, off(60, 5)), (0.5, on(62, 5))])
    sched.run_due()
    sched.release(ENGINE)
    assert [(m.type, m.note) for _, m in sent] == [("note_on", 48), ("note_on", 60), ("note_off", 60)]
    clock.set(2.0)
    sched.run_due()
    assert stuck_notes(m for _, m in sent) == {(0, 48)}  # the player's thru note waits for its note-off


def test_panic_sends_note_offs_then_cc123_and_cc120_per_used_channel():
    clock, sched, sent = make()
    sched.send_now(on(48, 0), THRU)
    sched.schedule_events([(0.0, on(60, 5)), (0.0, on(64, 4)), (1.0, off(60, 5)), (2.0, on(70, 5))])
    sched.run_due()
    n = len(sent)
    sched.panic()
    tail = [m for _, m in sent[n:]]
    assert {(m.channel, m.note) for m in tail if m.type == "note_off"} == {(0, 48), (5, 60), (4, 64)}
    ccs = [(m.channel, m.control) for m in tail if m.type == "control_change"]
    assert ccs == [(0, 123), (0, 120), (4, 123), (4, 120), (5, 123), (5, 120)]
    assert tail.index(next(m for m in tail if m.type == "control_change")) == 3  # note-offs come first
    assert sched.next_due() is None and len(sched.held) == 0
    assert not unreleased_note_ons(m for _, m in sent)


def test_random_plans_cancels_and_panics_never_leave_a_note_hanging():
    rng = random.Random(7)
    for _ in range(30):
        clock, sched, sent = make(max_note_s=1.0, late_drop_s=0.02)
        for _step in range(60):
            action = rng.random()
            now = clock.now()
            if action < 0.5:
                start = now + rng.uniform(-0.05, 0.5)
                note, ch = rng.randrange(60, 66), rng.choice((4, 5))
                sched.schedule(start, on(note, ch))
                if rng.random() < 0.8:
                    sched.schedule(start + rng.uniform(0.01, 0.6), off(note, ch))
            elif action < 0.65:
                sched.cancel_after(now + rng.uniform(-0.1, 0.3))
            elif action < 0.7:
                sched.release(ENGINE)
            elif action < 0.75:
                sched.send_now(on(rng.randrange(40, 44), 0))
                sched.send_now(off(rng.randrange(40, 44), 0))
            clock.advance(rng.uniform(0.0, 0.1))
            sched.run_due()
        sched.panic()
        assert not unreleased_note_ons(m for _, m in sent)


def test_thread_sends_in_order_with_the_real_clock():
    clock = MonotonicClock()
    sent = []
    sched = Scheduler(lambda m: sent.append(m), clock)
    sched.start()
    try:
        t0 = clock.now() + 0.02
        sched.schedule_events([(t0 + i * 0.004, on(60 + i, 5)) for i in range(10)])
        deadline = time.monotonic() + 5
        while len(sent) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        sched.stop()
    assert [m.note for m in sent[:10]] == list(range(60, 70))
    assert not unreleased_note_ons(sent)  # stop() silenced the ten notes


def test_plans_made_before_a_panic_are_refused():
    clock, sched, sent = make()
    epoch = sched.epoch
    sched.panic()
    assert not sched.schedule_events([(0.0, on(60, 5))], ENGINE, epoch=epoch)
    assert sched.schedule_events([(0.0, on(61, 5))], ENGINE, epoch=sched.epoch)
    sched.run_due()
    assert [m.note for _, m in sent if m.type == "note_on"] == [61]
