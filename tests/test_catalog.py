"""Styles and instrument classes a model has data for: names in any case, styles without data refused."""

from __future__ import annotations

import json

import pytest
from musebridge.engine.errors import EngineError
from musebridge.engine.inference.catalog import Catalog
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, instrument_index
from musebridge.export.dataset import load_split

from musebridge.cli import main
from tests.synth_corpus import KINDS, write_corpus

DATA = {"styles": {"bach": 374, "folk": 11436, "pop": 2}, "instruments": {"voice": 900, "piano": 12}}


def test_style_names_are_case_insensitive():
    catalog = Catalog.from_data(DATA)
    assert catalog.style("Bach") == catalog.style("BACH") == catalog.style(" bach ") == "bach"
    assert instrument_index("Piano") == instrument_index("piano")


def test_a_style_without_data_is_refused_with_the_styles_that_have_it():
    with pytest.raises(EngineError) as err:
        Catalog.from_data(DATA).style("JAZZ")
    message = str(err.value)
    assert "'jazz' has no training data" in message
    assert message.endswith("choose from: folk, bach, pop, unknown")  # most trained first
    assert "\n" not in message


def test_unknown_is_always_accepted_and_a_model_without_a_summary_accepts_every_style():
    assert Catalog.from_data(DATA).style("Unknown") == "unknown"
    assert Catalog.from_data({}).style("jazz") == "jazz"
    with pytest.raises(EngineError, match="unknown style 'swing'"):
        Catalog.from_data({}).style("swing")


def test_the_training_data_summary_records_note_ons_per_instrument(tmp_path):
    from musebridge.export.train import data_summary

    write_corpus(tmp_path, pieces_per_split=(6, 2, 2))
    train = load_split(tmp_path, "train")
    summary = data_summary(str(tmp_path), train, load_split(tmp_path, "valid"))
    notes = summary["instruments"]
    assert set(notes) == set(INSTRUMENT_NAMES)
    assert sum(notes.values()) == int(train.notes().sum())
    played = {name for _, names in KINDS for name in names}  # 6 pieces cycle through all of KINDS
    assert {name for name, n in notes.items() if n > 0} == played
    assert Catalog.from_data(summary).instruments == notes


def test_styles_command_lists_the_bundled_models_styles(capsys):
    assert main(["styles", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["styles"]["folk"] > 10_000 and shown["styles"]["user1"] == 0  # user styles: no corpus data
    assert "user1" not in shown["styles_accepted"] and "folk" in shown["styles_accepted"]
    assert set(shown["styles"]) == set(V.STYLES)
    assert main(["styles"]) == 0
    no_data = next(line for line in capsys.readouterr().out.splitlines() if "no data:" in line)
    assert "user1" in no_data and "folk" not in no_data


def test_the_server_refuses_a_style_the_bundled_model_has_no_data_for():
    from musebridge.engine.server.protocol import ProtocolError
    from musebridge.engine.server.service import Service
    from musebridge.engine.sessions.session import Engine

    service = Service(Engine.load())
    with pytest.raises(ProtocolError) as err:
        service.handle("session.create", {"style": "User1", "instruments": ["strings"]})
    assert err.value.code == "bad_argument" and "'user1' has no training data" in str(err.value)
    assert "folk" in str(err.value)
    sid = service.handle("session.create", {"style": "BACH", "instruments": ["Strings"]})[0]["session"]
    assert service.sessions[sid].session.config.style == "bach"
    with pytest.raises(ProtocolError, match="'user2' has no training data"):
        service.handle("set", {"session": sid, "style": "user2"})
