"""MIDI clock follower: tempo under jitter, transport, song position, quantization, internal clock."""

from __future__ import annotations

import random

import mido
import pytest
from musebridge.bridge.errors import ConfigError
from musebridge.bridge.midiclock import ClockConfig, ClockFollower, grid_beats

TICK = mido.Message("clock")


def ticks(follower, start, bpm, n, jitter=0.0, rng=None):
    rng = rng or random.Random(0)
    spt = 60 / bpm / 24
    for i in range(n):
        follower.handle(start + i * spt + rng.gauss(0, jitter), TICK)
    return start + n * spt


@pytest.mark.parametrize("bpm", [72.0, 120.0, 174.0])
def test_tempo_estimate_is_robust_to_jitter_and_a_late_tick(bpm):
    f = ClockFollower()
    rng = random.Random(1)
    spt = 60 / bpm / 24
    for i in range(96):
        late = 0.01 if i == 80 else 0.0  # one tick 10 ms late
        f.handle(1.0 + i * spt + rng.gauss(0, 0.001) + late, TICK)
    assert f.bpm == pytest.approx(bpm, rel=0.01)


def test_tempo_follows_a_change():
    f = ClockFollower()
    end = ticks(f, 0.0, 120, 96)
    ticks(f, end, 90, 96)
    assert f.bpm == pytest.approx(90, rel=0.005)


def test_start_stop_continue_and_song_position():
    f = ClockFollower()
    f.handle(10.0, mido.Message("start"))
    end = ticks(f, 10.0, 120, 49)  # two beats and the tick of beat 2
    assert f.beat_at(end - 0.5 / 24) == pytest.approx(2.0, abs=1e-6)
    f.handle(end, mido.Message("stop"))
    frozen = f.beat_at(end)
    assert not f.running and f.beat_at(end + 5.0) == frozen
    f.handle(end + 5.0, mido.Message("continue"))
    assert f.running and f.beat_at(end + 5.0) == pytest.approx(49 / 24)
    f.handle(end + 6.0, mido.Message("stop"))
    f.handle(end + 6.1, mido.Message("songpos", pos=16))  # 16 sixteenths: beat 4
    f.handle(end + 7.0, mido.Message("continue"))
    assert f.beat_at(end + 7.0) == pytest.approx(4.0)


def test_quantize_to_sixteenths_and_triplets():
    f = ClockFollower(ClockConfig(bpm=120, quantize="1/16"), start=0.0)
    assert f.quantize(0.130) == pytest.approx(0.125)
    assert f.quantize(0.070) == pytest.approx(0.125) and f.quantize(0.060) == pytest.approx(0.0)
    assert f.quantize(0.060, not_before=0.05) == pytest.approx(0.125), "never into the past"
    f = ClockFollower(ClockConfig(bpm=120, quantize="1/8t"), start=0.0)
    assert f.quantize(0.18) == pytest.approx(1 / 6)
    assert grid_beats("off") is None
    with pytest.raises(ConfigError, match="choose from"):
        grid_beats("1/5")


def test_quantize_leaves_times_alone_while_the_transport_is_stopped():
    """With the transport stopped the beat position stands still, so quantize leaves times as they are rather than
    snapping every note of a plan to the one grid line there (all of them at once)."""
    f = ClockFollower(ClockConfig(bpm=120, quantize="1/4"), start=0.0)
    f.handle(1.0, mido.Message("stop"))
    assert [f.quantize(t, not_before=1.0) for t in (1.1, 1.3, 1.7)] == [1.1, 1.3, 1.7]


def test_internal_clock_without_ticks_and_external_detection():
    f = ClockFollower(ClockConfig(bpm=90), start=2.0)
    assert f.bpm == pytest.approx(90) and f.beat_at(4.0) == pytest.approx(3.0)
    assert not f.external(4.0)
    end = ticks(f, 5.0, 140, 30)
    assert f.external(end) and not f.external(end + 1.0)
    with pytest.raises(ConfigError):
        ClockConfig(bpm=5)
