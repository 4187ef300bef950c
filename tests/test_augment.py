"""Augmentation: pure, seeded token -> token functions, checked as properties over random pieces."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import decode_tokens
from musebridge.engine.tokens.instruments import DRUMS, INSTRUMENTS
from musebridge.export import augment as A
from synth_corpus import synth_piece

SETTINGS = settings(max_examples=40, deadline=None)

instrument_sets = st.lists(st.integers(0, V.N_INSTRUMENTS - 1), min_size=1, max_size=4, unique=True)
pieces = st.builds(lambda inst, seed: synth_piece("bach", sorted(inst), seed, n_notes=12),
                   instrument_sets, st.integers(0, 2**31))


def notes(tokens):
    """(kind, instrument, pitch) of every note token, in order."""
    out = []
    for t in tokens:
        kind, arg = V.token_kind(t)
        if kind in ("note_on", "note_off"):
            out.append((kind, *divmod(arg, V.N_PITCHES)))
    return out


def events_and_steps(tokens):
    tokens = tokens[A.prefix_length(tokens):]
    events, steps, now = [], [], 0
    for t in tokens:
        kind, arg = V.token_kind(t)
        if kind == "time":
            now += arg + 1
        else:
            events.append(t)
            steps.append(now)
    return events, steps


def in_range(tokens):
    return all(i == DRUMS or INSTRUMENTS[i].low <= p <= INSTRUMENTS[i].high for _, i, p in notes(tokens))


@SETTINGS
@given(pieces, st.integers(-12, 12))
def test_transpose_keeps_ranges_and_drums(piece, want):
    lo, hi = A.transpose_range(piece)
    assert lo <= 0 <= hi
    shift = int(np.clip(want, lo, hi))
    out = A.transpose(piece, shift)
    assert len(out) == len(piece) and out[: A.prefix_length(piece)] == piece[: A.prefix_length(piece)]
    assert in_range(out)
    for (k0, i0, p0), (k1, i1, p1) in zip(notes(piece), notes(out), strict=True):
        assert (k0, i0) == (k1, i1)
        assert p1 == (p0 if i0 == DRUMS else p0 + shift)
    assert A.transpose(out, -shift) == piece


def test_transpose_refuses_to_leave_midi():
    piece = V.conditioning("folk", [0]) + [V.note_on_token(0, 120), V.time_token(5), V.note_off_token(0, 120)]
    with pytest.raises(ValueError, match="outside MIDI pitches"):
        A.transpose(piece, 12)
    assert A.transpose_range(piece)[1] == 0  # already above the piano's range: may not go further up


@SETTINGS
@given(pieces, st.floats(0.5, 2.0))
def test_stretch_scales_times_and_keeps_events(piece, factor):
    out = A.stretch_time(piece, factor)
    ev0, st0 = events_and_steps(piece)
    ev1, st1 = events_and_steps(out)
    assert ev0 == ev1
    assert st1 == [round(s * factor) for s in st0]
    assert A.stretch_time(piece, 1.0) == piece


@SETTINGS
@given(pieces, st.integers(-40, 40))
def test_velocity_shift_only_moves_velocity_bins(piece, shift):
    out = A.shift_velocity(piece, shift)
    assert len(out) == len(piece)
    for a, b in zip(piece, out, strict=True):
        ka, xa = V.token_kind(a)
        kb, xb = V.token_kind(b)
        assert ka == kb
        assert xb == (min(V.VELOCITY_BINS - 1, max(0, xa + shift)) if ka == "velocity" else xa)


@SETTINGS
@given(pieces, st.integers(0, 2**31), st.integers(1, 3))
def test_humanize_jitters_within_bounds_and_keeps_music(piece, seed, max_steps):
    out = A.humanize(piece, np.random.default_rng(seed), max_steps)
    ev0, st0 = events_and_steps(piece)
    ev1, st1 = events_and_steps(out)
    assert ev0 == ev1  # same events in the same order: times stay monotone by construction
    assert all(abs(a - b) <= max_steps for a, b in zip(st0, st1, strict=True))
    on = [m for m in decode_tokens(out) if m.msg.type == "note_on"]
    assert len(on) == len([m for m in decode_tokens(piece) if m.msg.type == "note_on"])
    assert out == A.humanize(piece, np.random.default_rng(seed), max_steps)  # seeded


def test_humanize_moves_something():
    piece = synth_piece("folk", [5, 9], seed=3, n_notes=30)
    assert A.humanize(piece, np.random.default_rng(0), 2) != piece


@SETTINGS
@given(pieces, st.integers(0, 2**31))
def test_revoice_is_one_to_one_in_range_and_updates_the_set(piece, seed):
    mapping = A.revoice_mapping(piece, np.random.default_rng(seed))
    assert len(set(mapping.values())) == len(mapping)
    out = A.revoice(piece, mapping)
    prefix = out[: A.prefix_length(out)]
    declared = [t - V.OFFSETS["set"] for t in prefix if V.token_kind(t)[0] == "set"]
    assert declared == sorted(mapping.get(i, i) for i in A.instruments_in(piece))
    assert {i for _, i, _ in notes(out)} <= set(declared)
    assert [(k, p) for k, _, p in notes(out)] == [(k, p) for k, _, p in notes(piece)]
    assert in_range(out)
    for src, dst in mapping.items():
        group = next(g for g in A.REVOICE_GROUPS if V.INSTRUMENT_NAMES[src] in g)
        assert V.INSTRUMENT_NAMES[dst] in group


def test_revoice_choral_piece_onto_other_sustained_instruments():
    piece = synth_piece("bach", [6], seed=1)  # voice
    targets = {A.revoice_mapping(piece, np.random.default_rng(s)).get(6) for s in range(40)}
    assert targets - {6} and targets <= {2, 5, 6, 7, 8, 9}  # organ, strings, voice, brass, reed, pipe


@SETTINGS
@given(pieces, st.integers(0, 2**31))
def test_augment_is_seeded_and_valid(piece, seed):
    cfg = A.AugmentConfig(revoice_prob=0.5, humanize_prob=1.0)
    out = A.augment(piece, cfg, np.random.default_rng(seed))
    assert out == A.augment(piece, cfg, np.random.default_rng(seed))
    assert out[0] == V.BOS and all(0 <= t < V.VOCAB_SIZE for t in out)
    assert in_range(out) or not in_range(piece)
    assert len(notes(out)) == len(notes(piece))


def test_prefix_length():
    assert A.prefix_length(V.conditioning("bach", [6, 5]) + [V.time_token(3)]) == 4
    assert A.prefix_length([V.time_token(3), V.BOS]) == 0
    assert A.prefix_length([V.BOS, V.EOS]) == 1


def test_augment_prob_leaves_that_share_of_windows_as_written():
    piece = synth_piece("bach", [6], seed=3)
    cfg = A.AugmentConfig(transpose=5, velocity=3, prob=0.3)
    rng = np.random.default_rng(11)
    clean = sum(A.augment(piece, cfg, rng) == list(piece) for _ in range(400))
    # 70% untouched, plus the few augmented draws that happen to be the identity (shift 0, factor 1)
    assert 0.62 * 400 < clean < 0.8 * 400
    assert A.augment(piece, A.AugmentConfig(prob=0.0), rng) == list(piece)


def test_style_drop_replaces_only_the_style_in_that_share_of_pieces():
    piece = synth_piece("bach", [0, 6], seed=4)
    cfg = A.AugmentConfig(prob=0.0, style_drop=0.25)
    rng = np.random.default_rng(5)
    outs = [A.augment(piece, cfg, rng) for _ in range(400)]
    dropped = [o for o in outs if o != list(piece)]
    assert 0.18 * 400 < len(dropped) < 0.32 * 400
    assert all(o == A.drop_style(piece) for o in dropped)
    assert A.drop_style(piece) == V.conditioning("unknown", [0, 6]) + list(piece[4:])

