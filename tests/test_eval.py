"""Evaluation: the n-gram baseline, sliding-window scoring, `musebridge eval --json`, and a sampling check of a
tiny model trained in the test run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from musebridge.engine import vocab as V
from musebridge.engine.codec import decode_tokens
from musebridge.engine.instruments import INSTRUMENTS
from musebridge.export import ngram, train_cli
from musebridge.export.checkpoint import load_checkpoint
from musebridge.export.dataset import TokenData, load_split
from musebridge.export.errors import ExportError
from musebridge.export.evaluate import model_nll, piece_chunks
from musebridge.export.model import GPT, GPTConfig
from musebridge.export.sample import sample
from synth_corpus import KINDS, kind_instruments, write_corpus

from musebridge.cli import main as cli_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained by the project's own command on a synthetic corpus where each style comes with its
    own instruments (600 steps: about 20 s on a CPU; at 120 steps whether the model had learned to follow the
    instrument set depended on the seed)."""
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, (32, 4, 4), n_notes=24)
    out = root / "run"
    argv = ["--config", "tiny", "--n-embd", "64", "--batch-size", "8", "--max-steps", "600", "--eval-interval",
            "100", "--warmup-steps", "10", "--lr", "3e-3", "--no-augment", "--threads", "1", "--no-progress",
            "--data", str(root), "--out", str(out)]
    assert train_cli.main(argv) == 0
    return root, out / "best.pt"


def note_instruments(tokens):
    return [divmod(V.token_kind(t)[1], V.N_PITCHES)[0] for t in tokens
            if V.token_kind(t)[0] in ("note_on", "note_off")]


def test_ngram_is_a_distribution():
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 60, size=5000)
    model = ngram.fit(tokens, 3)
    for context in ([5, 7], [59, 59], [1000, 2000]):  # seen, maybe seen, never seen
        grams = np.column_stack([np.tile(context, (V.VOCAB_SIZE, 1)), np.arange(V.VOCAB_SIZE)])
        assert ngram._prob(model, grams).sum() == pytest.approx(1.0)


def test_ngram_learns_a_repeating_pattern_and_order_is_chosen_on_validation():
    pattern = [V.BOS, V.style_token("folk"), 100, 200, 300, 100, 200, 400, V.EOS]
    train = np.array(pattern * 200)
    model, scores = ngram.choose_order(train, [np.array(pattern)] * 3, orders=(1, 2, 3))
    assert model.order == 3 and scores[3] < scores[2] < scores[1]
    assert ngram.nll(model, [np.array(pattern)])[0] / (len(pattern) - 1) < 0.5


def test_chunks_score_every_target_once_and_keep_the_prefix():
    piece = np.array(V.conditioning("bach", [6]) + list(range(100, 140)))
    chunks = piece_chunks(0, piece, prefix_len=3, block=16, stride=5)
    scored = np.concatenate([c.tokens[c.positions + 1] for c in chunks])
    assert scored.tolist() == piece[1:].tolist()
    for c in chunks:
        assert len(c.tokens) <= 16 and c.tokens[:3].tolist() == piece[:3].tolist()


def test_sliding_windows_match_a_full_pass_when_the_piece_fits():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=256)).eval()
    piece = np.array(V.conditioning("bach", [6]) + [V.time_token(5), V.note_on_token(6, 60)] * 20 + [V.EOS])
    data = TokenData(piece, np.array([0, len(piece)]), ("a",), ("bach",))
    x = torch.from_numpy(piece)[None]
    with torch.no_grad():
        logits, _ = model(x)
    full = torch.nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum").item()

    assert model_nll(model, data)[0] == pytest.approx(full, rel=1e-5)
    assert model_nll(model, data, stride=7)[0] == pytest.approx(full, rel=1e-5)  # fits: one window


def test_a_shorter_context_scores_in_windows_of_that_length():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=256)).eval()
    piece = np.array(V.conditioning("bach", [6]) + [V.time_token(5), V.note_on_token(6, 60)] * 60 + [V.EOS])
    data = TokenData(piece, np.array([0, len(piece)]), ("a",), ("bach",))
    whole = model_nll(model, data)[0]  # 124 tokens: one window
    short = model_nll(model, data, context=32)[0]
    assert short == pytest.approx(model_nll(model, data, stride=16, context=32)[0])  # stride: context / 2
    assert short != pytest.approx(whole, rel=1e-4)  # windows of 32: less to attend to, other figures
    for bad in (31, 257):
        with pytest.raises(ExportError, match=f"context {bad}: give 32 to 256 tokens"):
            model_nll(model, data, context=bad)


def test_eval_json_last_line(trained, capsys):
    root, ckpt = trained
    assert cli_main(["eval", "--ckpt", str(ckpt), "--data", str(root), "--json", "--orders", "2,3"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"model_nll", "ngram_nll", "model_nll_per_note", "ngram_nll_per_note"} <= set(result)
    data = load_split(root, "test")
    assert result["tokens"] == len(data.tokens) - len(data) and result["pieces"] == len(data)
    assert set(result["per_style"]) == set(data.styles)
    assert result["model_nll"] < np.log(V.VOCAB_SIZE)
    assert result["context"] == load_checkpoint(ckpt)[0].config.block_size


def test_trained_model_follows_the_style_and_instrument_prefix(trained):
    """Unmasked: the model's own notes mostly use the prefix's instruments. Masked: all of them do."""
    _, ckpt = trained
    model, _ = load_checkpoint(ckpt)
    hits = total = 0
    for style, names in KINDS:
        wanted = kind_instruments(names)
        for seed in range(4):
            notes = note_instruments(sample(model, V.conditioning(style, wanted), 60, seed=seed))
            hits += sum(n in wanted for n in notes)
            total += len(notes)
    assert total > 100 and hits / total >= 0.75  # ignoring the prefix would give about 0.3


def test_masked_sampling_gives_music_in_the_chosen_instruments(trained):
    _, ckpt = trained
    model, _ = load_checkpoint(ckpt)
    wanted = [6]  # voice, asked of a style the model only saw with other instruments
    tokens = sample(model, V.conditioning("folk", wanted), 80, instruments=wanted, seed=1, stop_at_eos=False)
    assert note_instruments(tokens) and set(note_instruments(tokens)) == {6}
    channels = {m.msg.channel for m in decode_tokens(tokens) if m.msg.type == "note_on"}
    assert channels == {INSTRUMENTS[6].channel}
    assert sample(model, V.conditioning("folk", wanted), 80, instruments=wanted, seed=1,
                  stop_at_eos=False) == tokens  # seeded
