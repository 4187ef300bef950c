"""Note lifetimes measured on training music (export/note_stats.py), stored with the model by `musebridge export`,
and used by every session of that model (engine/sessions/lifetimes.py)."""

from __future__ import annotations

import numpy as np
import pytest
from model_fixtures import make_model
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.engine.sessions.follow_config import FollowConfig
from musebridge.engine.sessions.lifetimes import DEFAULT_LIFETIMES, measured_lifetimes
from musebridge.engine.sessions.session import Engine
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES
from musebridge.export.dataset import TokenData
from musebridge.export.note_stats import MIN_NOTES, note_durations, note_lifetimes

PIANO, BASS = INSTRUMENT_NAMES.index("piano"), INSTRUMENT_NAMES.index("bass")


def piece(notes: list[tuple[int, int, int]]) -> list[int]:
    """(class, pitch, duration in grid steps) notes one after another, each followed by a 5-step rest."""
    out = V.conditioning("folk", sorted({c for c, _, _ in notes}))
    for cls, pitch, steps in notes:
        out += [V.velocity_token(20), V.note_on_token(cls, pitch), *V.time_tokens(steps),
                V.note_off_token(cls, pitch), V.time_token(5)]
    return out + [V.EOS]


def test_durations_pair_first_in_first_out_and_skip_notes_never_ended():
    tokens = V.conditioning("folk", [PIANO]) + [
        V.note_on_token(PIANO, 60), V.time_token(10), V.note_on_token(PIANO, 60), V.time_token(20),
        V.note_off_token(PIANO, 60), V.time_token(30), V.note_off_token(PIANO, 60),
        V.note_on_token(PIANO, 64), *V.time_tokens(250), V.EOS]  # 64 is never ended
    durations = note_durations(np.array(tokens))
    assert durations[PIANO] == pytest.approx([0.30, 0.50])  # the first note-off ends the oldest note


def test_lifetimes_are_a_high_quantile_per_class_with_enough_notes():
    piano = [(PIANO, 60, 200)] * 300 + [(PIANO, 62, 600)] * 2  # two seconds, and two 6 s outliers
    bass = [(BASS, 40, 120)] * (MIN_NOTES - 1)  # too few notes for a figure
    pieces = [piece(piano), piece(bass)]
    offsets = np.concatenate(([0], np.cumsum([len(p) for p in pieces])))
    data = TokenData(np.concatenate(pieces).astype(np.uint16), offsets, ("a", "b"), ("folk", "folk"))
    assert note_lifetimes(data) == {"piano": 2.0}  # the outliers are past the 99th percentile; no bass figure


def test_a_models_measured_lifetimes_reach_its_sessions(tmp_path):
    model = Model.load(_exported(tmp_path, {"lifetimes": {"piano": 1.5, "nonsense": 3.0, "bass": -1}}),
                       RuntimeOptions(provider="cpu"))
    engine = Engine(model)
    follow = engine.new_session(SessionConfig()).config.follow
    assert dict(follow.lifetimes) == {"piano": 1.5}  # unknown classes and bad times are ignored
    steps = follow.lifetime_steps()
    assert steps[PIANO] == 150 and steps[BASS] == round(DEFAULT_LIFETIMES["bass"] / V.GRID_S)
    chosen = engine.new_session(SessionConfig(follow=FollowConfig(lifetimes=(("piano", 2.0),)))).config.follow
    assert dict(chosen.lifetimes) == {"piano": 2.0}  # set by hand: kept
    session = engine.new_session(SessionConfig())
    session.reconfigure(SessionConfig(style="bach"))
    assert dict(session.config.follow.lifetimes) == {"piano": 1.5}  # kept across reconfigure
    assert measured_lifetimes(None) == () and measured_lifetimes({"lifetimes": "x"}) == ()


def _exported(folder, data: dict):
    from dataclasses import asdict

    from musebridge.export.onnx_export import export_model

    model = make_model(0)
    state = {"config": model.config.to_dict(), "vocab": asdict(V.vocab_info()), "train": {"step": 0},
             "data": {"corpus": "test", **data}}
    path = folder / "m.onnx"
    export_model(model, state, path)
    return path
