"""ONNX export: logits agree with the torch model (prefill, cached steps, rollback, window slide); metadata;
bad model files are refused with one clear line."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from model_fixtures import export_small
from musebridge.engine.errors import ModelError
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from musebridge.export.model import rotate_keys

TOL = 1e-4


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "factorized-notes"])
def exported(tmp_path_factory, request):
    model, path = export_small(tmp_path_factory.mktemp("onnx"), factorized_notes=request.param)
    return model, path, Model.load(path, RuntimeOptions(provider="cpu"))


class Twin:
    """The torch model and an engine cache fed the same tokens and the same cache operations."""

    def __init__(self, model, onnx_model):
        self.model, self.cache = model, onnx_model.new_cache()
        self.k, self.v = model.empty_cache()

    def forward(self, tokens: list[int]) -> float:
        with torch.no_grad():
            ref, self.k, self.v = self.model.forward_cached(torch.tensor([tokens]), self.k, self.v)
        got = self.cache.forward(tokens)
        assert got.shape == ref[0].shape
        return float(np.abs(got - ref[0].numpy()).max())

    def steps(self, tokens: list[int]) -> float:
        return max(self.forward([t]) for t in tokens)

    def truncate(self, n: int) -> None:
        self.cache.truncate(n)
        self.k, self.v = self.k[:, :, :, :n], self.v[:, :, :, :n]

    def slide(self, keep: int, drop: int) -> None:
        self.cache.slide(keep, drop)
        cfg = self.model.config
        self.k = torch.cat((self.k[..., :keep, :], rotate_keys(self.k[..., keep + drop :, :], drop, cfg)), dim=3)
        self.v = torch.cat((self.v[..., :keep, :], self.v[..., keep + drop :, :]), dim=3)
        assert self.cache.length == self.k.shape[3]


def tokens(n: int, seed: int = 1) -> list[int]:
    return np.random.default_rng(seed).integers(0, 3259, n).tolist()


@pytest.mark.parametrize("prompt", [1, 7, 40])
def test_prefill_and_50_cached_steps_match_torch(exported, prompt):
    model, _, onnx_model = exported
    twin = Twin(model, onnx_model)
    toks = tokens(prompt + 50, seed=prompt)
    assert twin.forward(toks[:prompt]) <= TOL
    assert twin.steps(toks[prompt:]) <= TOL


def test_steps_after_rollback_match_torch(exported):
    model, _, onnx_model = exported
    twin = Twin(model, onnx_model)
    toks = tokens(120, seed=5)
    twin.forward(toks[:30])
    twin.steps(toks[30:50])
    twin.truncate(35)
    assert twin.steps(toks[60:110]) <= TOL
    assert twin.cache.length == 85


def test_steps_after_window_slide_match_torch(exported):
    model, _, onnx_model = exported
    twin = Twin(model, onnx_model)
    toks = tokens(200, seed=6)
    twin.forward(toks[:100])
    twin.steps(toks[100:128])  # cache full (block_size 128)
    twin.slide(keep=3, drop=60)
    assert twin.steps(toks[128:178]) <= TOL
    twin.slide(keep=3, drop=50)  # a second slide: keys rotated twice
    assert twin.forward(toks[178:190]) <= TOL  # a multi-token step after the slide


def test_metadata_inside_the_file(exported):
    model, path, onnx_model = exported
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["musebridge.config"]) == model.config.to_dict()
    assert json.loads(meta["musebridge.data"]) == {"corpus": "random test model"}
    assert onnx_model.info.block_size == 128 and onnx_model.info.n_layer == 2
    assert onnx_model.info.vocab["size"] == 3259


def _rewrite(path, out, key, value):
    m = onnx.load(str(path))
    for p in m.metadata_props:
        if p.key == key:
            p.value = value
    onnx.save(m, str(out))


def test_vocabulary_mismatch_refused_with_one_line(exported, tmp_path):
    _, path, _ = exported
    vocab = {"version": "0", "size": 3259, "sha256": "f" * 64}
    _rewrite(path, tmp_path / "other.onnx", "musebridge.vocab", json.dumps(vocab))
    with pytest.raises(ModelError) as err:
        Model.load(tmp_path / "other.onnx")
    msg = str(err.value)
    assert "\n" not in msg and "vocabulary" in msg and "does not match" in msg and "other.onnx" in msg


def test_missing_truncated_and_foreign_files_refused(exported, tmp_path):
    _, path, _ = exported
    data = path.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 3])
    _rewrite(path, tmp_path / "old.onnx", "musebridge.format", "musebridge-kv-0")
    for bad, words in [(tmp_path / "none.onnx", "no such model"), (tmp_path / "cut.onnx", "cannot load"),
                       (tmp_path / "old.onnx", "format")]:
        with pytest.raises(ModelError) as err:
            Model.load(bad)
        assert "\n" not in str(err.value) and words in str(err.value) and bad.name in str(err.value)


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_model_loads_and_stays_close(exported, tmp_path, bits):
    from musebridge.export.onnx_export import quantize_int4, quantize_int8

    _, path, onnx_model = exported
    (quantize_int8 if bits == 8 else quantize_int4)(path, tmp_path / "q.onnx")
    q = Model.load(tmp_path / "q.onnx")
    assert q.info.n_layer == onnx_model.info.n_layer  # metadata survives quantization
    toks = tokens(40, seed=9)
    a, b = onnx_model.new_cache().forward(toks), q.new_cache().forward(toks)
    assert np.abs(a - b).max() < 0.1 * np.abs(a).max() + 0.05


def test_export_command_writes_a_loadable_model_and_fails_cleanly(tmp_path, capsys):
    from dataclasses import asdict

    from model_fixtures import make_model
    from musebridge.engine.tokens import vocab as V
    from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES
    from musebridge.export.checkpoint import save_checkpoint
    from synth_corpus import write_corpus

    from musebridge.cli import main

    save_checkpoint(tmp_path / "m.pt", make_model(3), train={"step": 1}, data={"corpus": "test"})
    write_corpus(tmp_path / "corpus", (40, 2, 2), n_notes=40)
    out = tmp_path / "m.onnx"
    assert main(["export", str(tmp_path / "m.pt"), "-o", str(out), "--eval-tokens", "300", "--json",
                 "--card", str(tmp_path / "card.json"), "--corpus", str(tmp_path / "corpus")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["parity_max_abs"] <= TOL and report["nll_fp32"] > 0
    data = Model.load(out).info.data
    assert data["corpus"] == "test" and data["lifetimes"]  # measured on the corpus's train split
    assert all(name in INSTRUMENT_NAMES and seconds >= 0.5 for name, seconds in data["lifetimes"].items())
    assert json.loads((tmp_path / "card.json").read_text())["vocab"] == asdict(V.vocab_info())
    assert main(["export", str(tmp_path / "none.pt"), "-o", str(tmp_path / "x.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "none.pt" in err and not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize("bits", [32, 8])
def test_model_read_back_from_its_file_computes_the_same(exported, tmp_path, bits):
    """What `train --init` starts from: the fp32 file gives back the model's function exactly, the int8 file
    within its rounding (the summed token table goes into wte, the note parts are zero)."""
    from musebridge.export.onnx_export import model_from_onnx, quantize_int8

    model, path, _ = exported
    if bits == 8:
        quantize_int8(path, tmp_path / "q.onnx")
        path = tmp_path / "q.onnx"
    back, state = model_from_onnx(path)
    assert back.config == model.config and state["train"] == {"step": 0}
    x = torch.tensor([tokens(60, seed=4)])
    with torch.no_grad():
        a, b = model(x)[0], back(x)[0]
    tol = 1e-4 if bits == 32 else 0.05 * float(a.abs().max())
    assert float((a - b).abs().max()) <= tol


def test_model_read_back_refuses_int4_and_foreign_files(exported, tmp_path):
    from musebridge.export.errors import ExportError
    from musebridge.export.onnx_export import model_from_onnx, quantize_int4

    _, path, _ = exported
    quantize_int4(path, tmp_path / "q4.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    for bad, words in ((tmp_path / "q4.onnx", "int4"), (tmp_path / "junk.onnx", "not a readable ONNX model"),
                       (tmp_path / "none.onnx", "no such model file")):
        with pytest.raises(ExportError) as err:
            model_from_onnx(bad)
        assert "\n" not in str(err.value) and words in str(err.value) and bad.name in str(err.value)
