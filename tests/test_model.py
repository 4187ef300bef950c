"""The transformer's token table: with factorized note embeddings, what is learned about a pitch on one
instrument moves the same pitch on the others; the table is what the output layer and the export use."""

from __future__ import annotations

import pytest
import torch
from model_fixtures import make_model
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES

PIANO, STRINGS = INSTRUMENT_NAMES.index("piano"), INSTRUMENT_NAMES.index("strings")


def test_factorized_table_adds_parts_to_note_tokens_only():
    model = make_model(factorized_notes=True)
    table, base = model.token_table().detach(), model.wte.weight.detach()
    others = [V.BOS, V.style_token("bach"), V.time_token(7), V.velocity_token(3), V.pedal_token(PIANO, True)]
    assert torch.equal(table[others], base[others])
    on_p, on_s = V.note_on_token(PIANO, 60), V.note_on_token(STRINGS, 60)
    pitch_part = model.pitch_part.weight[1 + 60].detach()
    assert torch.allclose(table[on_p] - base[on_p] - model.inst_part.weight[1 + PIANO].detach(), pitch_part)
    assert torch.allclose(table[on_s] - base[on_s] - model.inst_part.weight[1 + STRINGS].detach(), pitch_part)
    # note-off has parts of its own
    off_part = model.pitch_part.weight[1 + V.N_PITCHES + 60].detach()
    off = V.note_off_token(PIANO, 60)
    assert torch.allclose(table[off] - base[off] - model.inst_part.weight[1 + V.N_INSTRUMENTS + PIANO].detach(),
                          off_part)


def logit_change_on_strings(factorized: bool) -> float:
    """Teach the model that piano plays C4 after a context; return how the strings' C4 logit moved there."""
    torch.manual_seed(0)
    model = make_model(factorized_notes=factorized).train()
    context = torch.tensor([V.conditioning("folk", [PIANO, STRINGS]) + [V.velocity_token(20)]])
    target = torch.full_like(context, V.PAD)
    target[0, -1] = V.note_on_token(PIANO, 60)
    strings_c4 = V.note_on_token(STRINGS, 60)
    with torch.no_grad():
        before = model(context)[0][0, -1, strings_c4].item()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(5):
        optimizer.zero_grad()
        model(context, target)[1].backward()
        optimizer.step()
    with torch.no_grad():
        return model(context)[0][0, -1, strings_c4].item() - before


@pytest.mark.parametrize("factorized", [False, True])
def test_a_pitch_learned_on_piano_carries_to_strings_only_when_factorized(factorized):
    change = logit_change_on_strings(factorized)
    assert (change > 0) == factorized, change
