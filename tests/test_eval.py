"""Evaluation: the n-gram baseline, sliding-window scoring, `musebridge eval --json`, and a sampling check of a
tiny model trained in the test run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.codec import decode_tokens
from musebridge.engine.tokens.instruments import INSTRUMENTS
from musebridge.export import ngram
from musebridge.export.checkpoint import load_checkpoint
from musebridge.export.dataset import TokenData, load_split, write_split
from musebridge.export.errors import ExportError
from musebridge.export.model import GPT, GPTConfig
from musebridge.export.sample import sample
from musebridge.export.scoring import model_nll, piece_chunks
from synth_corpus import KINDS, kind_instruments, synth_piece, write_corpus

from musebridge.cli import main as cli_main
from musebridge.commands import train as train_cli


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


# --- any model the engine loads, MIDI inputs, per-kind figures, the n-gram cache, no torch ---

def write_midi_folder(folder, n_good: int = 2, bad: bool = True):
    """A folder of MIDI files: synthetic pieces (one in a sub-folder), and an empty and a corrupt .mid."""
    from musebridge.engine.tokens.midifile import decode_to_file

    (folder / "sub").mkdir(parents=True, exist_ok=True)
    for i in range(n_good):
        style, names = KINDS[i % len(KINDS)]
        target = folder / ("sub" if i else "") / f"p{i}.mid"
        decode_to_file(synth_piece(style, kind_instruments(names), seed=i), target)
    if bad:
        (folder / "empty.mid").write_bytes(b"")
        (folder / "corrupt.mid").write_bytes(b"MThd\x00\x00\x00\x06garbage")
    return folder


def run_json(argv, capsys) -> tuple[int, dict | None, str]:
    code = cli_main(["eval", *argv, "--json", "--quiet"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


@pytest.fixture(scope="module")
def exported_trained(trained, tmp_path_factory):
    """The trained tiny model (block 64) exported to fp32 ONNX."""
    from musebridge.export.onnx_export import export_model

    _, ckpt = trained
    model, state = load_checkpoint(ckpt)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_model(model, state, path)
    return path


def test_token_kinds_cover_the_vocabulary():
    from musebridge.export.evaluate import KINDS as TOKEN_KINDS
    from musebridge.export.evaluate import token_kinds

    kind, sizes = token_kinds()
    assert len(kind) == V.VOCAB_SIZE and sizes.sum() == V.VOCAB_SIZE
    names = [name for name, _ in TOKEN_KINDS]
    assert names[kind[V.time_token(7)]] == "time" and names[kind[V.velocity_token(3)]] == "velocity"
    assert names[kind[V.note_on_token(0, 60)]] == "note_on" and names[kind[V.note_off_token(11, 36)]] == "note_off"
    assert names[kind[V.pedal_token(0, True)]] == names[kind[V.pedal_token(4, False)]] == "pedal"
    assert {names[kind[t]] for t in V.conditioning("bach", [0, 5])} == {"conditioning"}
    assert names[kind[V.EOS]] == "eos" and sizes[names.index("pedal")] == 2 * V.N_INSTRUMENTS


def test_per_kind_figures_add_up_to_the_total():
    from musebridge.export.evaluate import summarize
    from musebridge.export.scoring import flat_targets

    pieces = [synth_piece("bach", [6], seed=1), synth_piece("folk", [5, 9], seed=2)]
    pieces[0] = pieces[0][:3] + [V.pedal_token(6, True)] + pieces[0][3:]
    offsets = np.cumsum([0] + [len(p) for p in pieces])
    data = TokenData(np.concatenate(pieces), offsets, ("a", "b"), ("bach", "folk"))
    nll = np.random.default_rng(0).random(len(flat_targets(data))) * 5
    result = summarize(data, {"model": nll})
    kinds = result["per_kind"]
    assert sum(k["tokens"] for k in kinds.values()) == result["tokens"] == sum(len(p) - 1 for p in pieces)
    assert sum(k["model_nll"] * k["tokens"] for k in kinds.values()) == pytest.approx(nll.sum())
    assert sum(k["model_nll_per_note"] for k in kinds.values()) == pytest.approx(result["model_nll_per_note"])
    assert result["model_nll"] == pytest.approx(nll.mean())
    assert kinds["pedal"]["tokens"] == 1 and kinds["eos"]["tokens"] == 2 and kinds["eos"]["uniform_nll"] == 0.0
    assert kinds["conditioning"]["tokens"] == 2 + 3  # STYLE SET, STYLE SET SET (BOS is never a target)
    assert kinds["note_on"]["tokens"] == result["notes"]
    assert kinds["note_on"]["uniform_nll"] == pytest.approx(np.log(V.N_INSTRUMENTS * V.N_PITCHES))
    styles = result["per_style"]
    assert styles["bach"]["tokens"] + styles["folk"]["tokens"] == result["tokens"]


def test_onnx_and_torch_score_the_same(trained, exported_trained):
    from musebridge.export.scoring import OnnxScorer, TorchScorer

    root, _ = trained
    data = load_split(root, "test")
    model, _ = load_checkpoint(trained[1])
    assert max(np.diff(data.offsets)) > 2 * model.config.block_size  # several windows per piece
    for context in (None, 32):
        ref = TorchScorer(model, context).token_nll(data)
        got = OnnxScorer(exported_trained, context).token_nll(data)
        assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-3
        assert ref.mean() < 2.0  # a trained model: a misplaced target would cost several nats


def test_eval_cli_gives_the_same_figures_for_the_onnx_export_and_the_checkpoint(trained, exported_trained, capsys):
    root, ckpt = trained
    figures = {}
    for model in (ckpt, exported_trained):
        code, result, _ = run_json(["--model", str(model), "--data", str(root), "--orders", "2,3"], capsys)
        assert code == 0
        figures[result["format"]] = result
    onnx_, torch_ = figures["onnx"], figures["torch"]
    assert onnx_["model_nll"] == pytest.approx(torch_["model_nll"], rel=1e-5)
    for kind, f in torch_["per_kind"].items():
        assert onnx_["per_kind"][kind]["model_nll"] == pytest.approx(f["model_nll"], rel=1e-4, abs=1e-5)
    assert onnx_["ngram_nll"] == torch_["ngram_nll"] and onnx_["context"] == torch_["context"] == 64


def test_ngram_is_fitted_once_per_corpus_and_cached(tmp_path, monkeypatch):
    from musebridge.export.evaluate import EvalConfig, _ngram_column

    write_corpus(tmp_path, (12, 3, 3), n_notes=16)
    cfg = EvalConfig(data=str(tmp_path), orders=(2, 3))
    data = load_split(tmp_path, "test")
    first, info = _ngram_column(cfg, data)
    cached = list((tmp_path / "cache").glob("ngram-*.npz"))
    assert len(cached) == 1 and str(cached[0]) == info["ngram_cache"]
    mtime = cached[0].stat().st_mtime_ns

    def no_fit(*args, **kwargs):
        raise AssertionError("the n-gram was fitted again")

    monkeypatch.setattr(ngram, "fit", no_fit)
    second, info2 = _ngram_column(cfg, data)
    assert np.array_equal(first, second) and info2 == info
    assert cached[0].stat().st_mtime_ns == mtime and list((tmp_path / "cache").iterdir()) == cached
    monkeypatch.undo()

    cached[0].write_bytes(b"truncated")  # an unreadable cache is fitted again and replaced
    assert np.array_equal(_ngram_column(cfg, data)[0], first)
    assert ngram.load(cached[0])[0].order == info["ngram_order"]
    other = ngram.cache_path(tmp_path, (2, 3, 4))
    assert other != cached[0]  # other orders, another file
    write_split(tmp_path, "train", [synth_piece("bach", [6], seed=9)], styles=["bach"])
    assert ngram.cache_path(tmp_path, (2, 3)) != cached[0]  # another train split, another file


def test_midi_folder_skips_a_corrupt_and_an_empty_file(tmp_path, capsys):
    folder = write_midi_folder(tmp_path / "midi", n_good=2)
    code, result, err = run_json([str(folder), "--style", "bach", "--data", str(tmp_path / "none")], capsys)
    assert code == 0 and result["pieces"] == 2 and set(result["per_style"]) == {"bach"}
    assert result["ngram_nll"] is None and "musebridge corpus build" in result["ngram_missing"]
    lines = err.strip().splitlines()
    assert sum("empty.mid" in line for line in lines) == 1 and sum("corrupt.mid" in line for line in lines) == 1
    assert {"time", "note_on", "note_off", "conditioning", "eos"} <= set(result["per_kind"])
    assert result["model"].endswith("default.onnx")  # the bundled model by default

    only_bad = tmp_path / "bad"
    only_bad.mkdir()
    (only_bad / "x.midi").write_bytes(b"")
    code, _, err = run_json([str(only_bad)], capsys)
    assert code == 2 and "x.midi" in err and err.strip().splitlines()[-1].startswith("musebridge eval: no usable")


def test_no_corpus_and_no_files_is_one_line(tmp_path, capsys):
    code, _, err = run_json(["--data", str(tmp_path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "musebridge corpus build" in err


def test_eval_runs_without_torch(tmp_path):
    """The bundled model on a folder of MIDI files, n-gram from a corpus, with torch and tqdm hidden."""
    import subprocess
    import sys

    folder = write_midi_folder(tmp_path / "midi", n_good=2)
    write_corpus(tmp_path / "corpus", (8, 2, 2), n_notes=12)
    script = (
        "import sys, json\n"
        "sys.modules['torch'] = None\nsys.modules['tqdm'] = None\n"
        "from musebridge.cli import main\n"
        f"args = ['eval', {str(folder)!r}, '--data', {str(tmp_path / 'corpus')!r}, '--orders', '2,3']\n"
        "assert main(args) == 0\n"
        "assert main(args + ['--json', '--limit', '1']) == 0\n"
        "assert sys.modules['torch'] is None and sys.modules['tqdm'] is None\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    table, last = done.stdout.strip().rsplit("\n", 1)
    assert "note_on" in table and "ngram/tok" in table and "uniform/tok" in table
    result = json.loads(last)
    assert result["pieces"] == 1 and result["ngram_nll"] > 0 and "eval: " in done.stderr  # plain progress line


def test_live_like_plays_each_notated_piece_the_same_way_and_skips_a_missing_one(tmp_path, capsys):
    from musebridge.engine.tokens.midifile import decode_to_file
    from musebridge.export.eval_inputs import corpus_pieces, live_like_tokens, piece_seed

    write_corpus(tmp_path, (4, 2, 3), n_notes=16)
    written = load_split(tmp_path, "test")  # and a band piece (its .mid under midi/band-<style>/): left out
    band_id = f"{written.styles[0]}-band-{written.ids[0]}"
    write_split(tmp_path, "test", [written.piece(i) for i in range(3)] + [written.piece(0)],
                ids=[*written.ids, band_id], styles=[*written.styles, written.styles[0]])
    test = load_split(tmp_path, "test")
    for i, (piece_id, style) in enumerate(zip(test.ids[:3], test.styles[:3], strict=True)):
        if i:  # the first piece's .mid is missing
            (tmp_path / "midi" / style).mkdir(parents=True, exist_ok=True)
            decode_to_file(test.piece(i).tolist(), tmp_path / "midi" / style / f"{piece_id}.mid")
    skipped = []
    data = corpus_pieces(tmp_path, "test", live_like=True, skip=skipped.append)
    assert len(skipped) == 1 and test.ids[0] in skipped[0] and data.ids == test.ids[1:3]
    first = live_like_tokens(tmp_path / "midi" / test.styles[1] / f"{test.ids[1]}.mid", test.styles[1],
                             piece_seed(test.ids[1]))[0]
    assert data.piece(0).tolist() == first and first != test.piece(1).tolist()  # played, not as written
    assert first[:3] == V.conditioning(test.styles[1], [0]) and first[-1] == V.EOS  # piano only
    assert any(V.token_kind(t)[0] == "pedal_on" for t in first)  # on piano, with pedal

    argv = ["--data", str(tmp_path), "--live-like", "--orders", "2"]
    code, result, err = run_json(argv, capsys)
    assert code == 0 and result["live_like"] and result["pieces"] == 2 and test.ids[0] in err
    assert "pedal" in result["per_kind"] and result["ngram_nll"] > 0
    assert run_json(argv, capsys)[1]["model_nll"] == result["model_nll"]  # the same performance every time


def test_sources_choose_the_notated_or_the_band_pieces_of_a_split():
    from musebridge.engine.tokens import vocab as V
    from musebridge.export.eval_inputs import NoInput, from_pieces, of_sources

    piece = V.conditioning("folk", [0]) + [V.time_token(3), V.EOS]
    data = from_pieces([piece, piece, piece], ["folk-a", "folk-band-folk-a", "jazz-band-folk-b"],
                       ["folk", "folk", "jazz"])
    assert of_sources(data, ()).ids == data.ids
    assert of_sources(data, ("notated",)).ids == ("folk-a",)
    assert of_sources(data, ("band",)).ids == ("folk-band-folk-a", "jazz-band-folk-b")
    with pytest.raises(NoInput, match="no live pieces"):
        of_sources(data, ("live",))
