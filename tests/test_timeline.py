"""The timeline: commit, rollback and window slides keep the tokens, their steps, the stream states and the KV
cache in step; the session's grid rounding is the codec's."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_fixtures import export_small
from musebridge.engine.errors import EngineBug, EngineError
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.engine.sessions.timeline import Entries, State, Timeline
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import EventEncoder

PREFIX = V.conditioning("bach", (0, 5))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return Model.load(export_small(tmp_path_factory.mktemp("tl"))[1], RuntimeOptions(provider="cpu"))


def music(n: int, start: int = 0) -> list[int]:
    """n tokens of engine music: time shifts, then a note-on, then its note-off, repeated."""
    out: list[int] = []
    k = start
    while len(out) < n:
        pitch = 60 + k % 12
        out += [V.time_tokens(5 + k % 7)[0], V.note_on_token(5, pitch), V.time_tokens(3)[0],
                V.note_off_token(5, pitch)]
        k += 1
    return out[:n]


@given(st.floats(min_value=0, max_value=3600, allow_nan=False))
def test_grid_step_is_the_codecs_rounding(time_s):
    tokens = EventEncoder().feed(time_s, mido.Message("note_on", note=60, velocity=64))
    shifted = sum(V.token_kind(t)[1] + 1 for t in tokens if V.token_kind(t)[0] == "time")
    assert V.grid_step(time_s) == shifted


def test_entries_keep_each_tokens_player_flag_and_step():
    entries, state = Entries(), State()
    entries.push([V.time_tokens(10)[0], V.note_on_token(0, 60)], True, state)
    entries.push([V.time_tokens(5)[0], V.note_on_token(5, 67)], False, state)
    assert entries.steps == [10, 10, 15, 15] and entries.player == [True, True, False, False]
    assert entries.after(10, 0) == 2 and entries.after(14, 0) == 2 and entries.after(15, 0) == 4
    assert entries.after(10, 3) == 3  # never before lo
    entries.replace_prefix(1, PREFIX)
    assert entries.tokens[: len(PREFIX)] == PREFIX
    assert len(entries.tokens) == len(entries.player) == len(entries.steps) == len(PREFIX) + 3
    entries.drop(len(PREFIX), 2)
    assert entries.tokens == PREFIX + [V.note_on_token(5, 67)] and entries.steps[-1] == 15


def test_rollback_restores_the_state_the_cache_and_the_logits(model):
    tl = Timeline(model, PREFIX)
    tl.append(music(20), player=False)
    tl.commit_to(len(tl.tokens))
    keep, step, held = len(tl.tokens), tl.live.step, dict(tl.live.decoder.held)
    logits = tl.next_logits().copy()
    assert tl.append(music(17, start=5), player=False)  # engine note events
    assert len(tl.tokens) == keep + 17 and tl.live.step > step
    assert tl.rollback(keep) == 17
    assert tl.tokens[-1] == music(20)[-1] and len(tl.tokens) == keep
    assert tl.cache.length == keep and tl.live.step == step and dict(tl.live.decoder.held) == held
    assert np.abs(tl.next_logits() - logits).max() < 1e-5  # the last kept token stepped again, nothing else
    with pytest.raises(EngineBug):
        tl.rollback(keep - 1)  # committed


def test_state_at_a_cut_replays_the_speculative_tokens(model):
    tl = Timeline(model, PREFIX)
    tl.append(music(12), player=False)
    tl.commit_to(len(tl.tokens))
    tl.append(music(30, start=3), player=False)
    cut = tl.cut(tl.committed.step + 20)
    assert tl.commit_index <= cut < len(tl.tokens)
    assert all(s <= tl.committed.step + 20 for s in tl.entries.steps[:cut])
    fresh = Timeline(model, PREFIX)
    fresh.append(tl.tokens[len(PREFIX) : cut], player=False)
    assert tl.state_at(cut).step == fresh.live.step
    assert tl.state_at(cut).decoder.held == fresh.live.decoder.held


def test_a_slide_keeps_the_prefix_and_drops_committed_tokens_only(model):
    tl = Timeline(model, PREFIX, context=48, slide=8)
    for k in range(20):
        tl.append(music(7, start=k), player=False)
        tl.commit_to(len(tl.tokens) - 3)  # the last 3 stay speculative until a slide needs them
        assert tl.tokens[: len(PREFIX)] == PREFIX
        assert len(tl.tokens) == len(tl.entries.steps) == len(tl.entries.player) <= 48
        assert tl.cache.length == len(tl.tokens)
    assert tl.dropped >= 80 and tl.dropped % 8 == 0
    assert tl.commit_index >= len(PREFIX)


def test_slide_commits_the_speculative_part_rather_than_dropping_it(model):
    tl = Timeline(model, PREFIX, context=32, slide=8)
    tl.append(music(32 - len(PREFIX)), player=False)  # all speculative, window full
    assert tl.commit_index == len(PREFIX)
    tl.append(music(1), player=False)
    assert tl.dropped == 8 and tl.commit_index == len(tl.tokens) - 1


def test_slide_must_leave_room():
    class Tiny:
        def new_cache(self, capacity=None):
            return type("C", (), {"capacity": 10, "length": 0})()

    with pytest.raises(EngineError):
        Timeline(Tiny(), PREFIX, slide=10 - len(PREFIX))


def test_anticipate_is_tentative_until_an_event_keeps_it(model):
    tl = Timeline(model, PREFIX)
    tl.append(music(10), player=False)
    end, n, length = tl.end_step, len(tl.tokens), tl.cache.length
    assert tl.anticipate(end + 150) == 2  # TIME_100 TIME_50
    assert tl.end_step == end and tl.tokens[n:] == V.time_tokens(150) and tl.pending == 2
    assert tl.anticipate(end + 150) == 2 and len(tl.tokens) == n + 2  # the same step: nothing new
    tl.precompute()
    tl.drop_tentative()
    assert len(tl.tokens) == n and tl.cache.length == length and tl.live.step == end


def test_a_new_prefix_rereads_the_window_behind_it(model):
    tl = Timeline(model, PREFIX)
    body = music(40)
    tl.append(body, player=False)
    tl.commit_to(30)
    new = V.conditioning("jazz", (0, 4, 5))
    tl.set_prefix(new)
    assert tl.tokens == new + body and tl.cache.length == 0 and tl.pending == len(tl.tokens)
    assert tl.commit_index == 30 + len(new) - len(PREFIX) and tl.prefix_len == len(new)
    assert tl.precompute(budget=16) and tl.cache.length == 16
    fresh = Timeline(model, new)
    fresh.append(body, player=False)
    assert np.abs(tl.next_logits() - fresh.next_logits()).max() < 1e-4
