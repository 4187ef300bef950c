"""The output scheduler under random plans (bridge/scheduler.py with a FakeClock): engine notes scheduled at random
times on a few keys, cancellations, releases, thru notes and panics in any order. What goes out is always
well-formed: no note-off for a key that is not sounding, a key struck again is first ended, no engine note lasts
longer than max_note_s, and after a panic nothing sounds."""

from __future__ import annotations

import mido
from hypothesis import given, settings
from hypothesis import strategies as st
from musebridge.bridge.clock import FakeClock
from musebridge.bridge.notes import note_off
from musebridge.bridge.scheduler import ENGINE, THRU, Scheduler, SchedulerConfig

MAX_NOTE_S = 0.5
TICK_S = 0.005  # run_due is called every 5 ms: a guard note-off goes out at the first call after its time
KEYS = st.tuples(st.sampled_from([0, 5]), st.integers(min_value=60, max_value=62))  # (channel, note)
SOON = st.floats(min_value=0.0, max_value=0.4)  # seconds from now
OPS = st.one_of(
    st.tuples(st.just("note"), KEYS, SOON, st.floats(min_value=0.0, max_value=1.0)),  # note-on, note-off later
    st.tuples(st.just("on"), KEYS, SOON),  # a note-on whose note-off never comes
    st.tuples(st.just("off"), KEYS, SOON),  # a note-off alone
    st.tuples(st.just("cancel_after"), st.floats(min_value=-0.1, max_value=0.4)),
    st.tuples(st.just("release")),
    st.tuples(st.just("thru_on"), KEYS),
    st.tuples(st.just("thru_off"), KEYS),
    st.tuples(st.just("panic")),
    st.tuples(st.just("run"), st.floats(min_value=0.0, max_value=0.3)),
)


def _check(out: list[tuple[float, mido.Message, str]]) -> dict:
    """Well-formedness of what went out; returns the keys left sounding -> the source that started them."""
    sounding: dict[tuple[int, int], tuple[float, str]] = {}
    for t, msg, source in out:
        if msg.type == "control_change" and msg.control == 123:
            assert not any(k[0] == msg.channel for k in sounding), "CC123 comes after the note-offs"
            continue
        if msg.type not in ("note_on", "note_off"):
            continue
        key = (msg.channel, msg.note)
        if msg.type == "note_on" and msg.velocity > 0:
            assert key not in sounding, f"{key} struck again without a note-off first"
            sounding[key] = (t, source)
        else:
            assert key in sounding, f"a note-off for {key}, which is not sounding"
            started, first = sounding.pop(key)
            if first != THRU:
                assert t - started <= MAX_NOTE_S + TICK_S + 1e-9, f"{key} sounded {t - started:.3f} s"
    return {key: source for key, (_, source) in sounding.items()}


@settings(max_examples=400, deadline=None)
@given(ops=st.lists(OPS, max_size=40))
def test_random_plans_go_out_well_formed(ops):
    clock = FakeClock()
    out: list[tuple[float, mido.Message, str]] = []
    sched = Scheduler(lambda msg: None, clock, SchedulerConfig(max_note_s=MAX_NOTE_S, realtime_priority=0))
    sched.on_sent.append(lambda t, msg, source: out.append((t, msg, source)))
    for op in ops:
        now = clock.now()
        kind = op[0]
        if kind == "note":
            (ch, n), start, length = op[1:]
            sched.schedule(now + start, mido.Message("note_on", channel=ch, note=n, velocity=90))
            sched.schedule(now + start + length, note_off(ch, n))
        elif kind == "on":
            sched.schedule(now + op[2], mido.Message("note_on", channel=op[1][0], note=op[1][1], velocity=90))
        elif kind == "off":
            sched.schedule(now + op[2], note_off(*op[1]))
        elif kind == "cancel_after":
            sched.cancel_after(now + op[1])
        elif kind == "release":
            sched.release(ENGINE)
        elif kind == "thru_on":
            sched.send_now(mido.Message("note_on", channel=op[1][0], note=op[1][1], velocity=70), THRU)
        elif kind == "thru_off":
            sched.send_now(note_off(*op[1]), THRU)
        elif kind == "panic":
            sched.panic()
            assert not _check(out), "a panic leaves nothing sounding"
        else:
            end = now + op[1]
            while clock.now() < end:
                clock.advance(TICK_S)
                sched.run_due()
    for _ in range(200):  # let every planned note end (at most max_note_s after it starts)
        clock.advance(TICK_S)
        sched.run_due()
    assert ENGINE not in _check(out).values(), "engine notes end by themselves"
    sched.panic()
    assert not _check(out)
