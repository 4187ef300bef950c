"""A model file carries the checksum of its graph: a corrupt weight is refused at load with one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from musebridge.engine.errors import ModelError
from musebridge.engine.inference import model_checksum as M
from musebridge.engine.inference.model_file import choose_providers, default_model_path, open_session

onnx = pytest.importorskip("onnx")


def weight_offset(data: bytes, path: Path) -> tuple[int, int]:
    """(offset in the file, length) of the raw data of the model's largest initializer."""
    model = onnx.load(str(path))
    raw = max((t.raw_data for t in model.graph.initializer), key=len)
    offset = data.find(raw)
    assert offset > 0 and len(raw) > 1000
    return offset, len(raw)


def flipped_copy(src: Path, dst: Path, count: int = 200) -> Path:
    data = bytearray(src.read_bytes())
    offset, length = weight_offset(bytes(data), src)
    for i in range(count):
        data[offset + (i * 37) % length] ^= 0xFF
    dst.write_bytes(bytes(data))
    return dst


def without_checksum(src: Path, dst: Path) -> Path:
    model = onnx.load(str(src))
    kept = [p for p in model.metadata_props if p.key != M.CHECKSUM_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(dst))
    return dst


def test_the_bundled_model_carries_its_checksum_and_loads():
    path = default_model_path()
    assert M.verify(path.read_bytes(), str(path)) is True
    _, info = open_session(path, choose_providers("cpu"))
    assert info.n_layer > 0


def test_flipped_weight_bytes_are_refused_with_one_line(tmp_path):
    bad = flipped_copy(default_model_path(), tmp_path / "model.onnx")
    with pytest.raises(ModelError) as err:
        open_session(bad, choose_providers("cpu"))
    message = str(err.value)
    assert str(bad) in message and "export it again or restore it" in message and "\n" not in message


def test_serve_refuses_a_corrupt_model_in_one_line(tmp_path):
    bad = flipped_copy(default_model_path(), tmp_path / "model.onnx")
    run = subprocess.run([sys.executable, "-m", "musebridge", "serve", "--model", str(bad), "--port", "0"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and str(bad) in lines[0] and "checksum" in lines[0], run.stderr


def test_a_model_without_a_checksum_still_loads_and_stamp_adds_it_keeping_the_graph(tmp_path):
    plain = without_checksum(default_model_path(), tmp_path / "plain.onnx")
    before = plain.read_bytes()
    assert M.verify(before, str(plain)) is False
    open_session(plain, choose_providers("cpu"))  # loads, unchecked
    run = subprocess.run([sys.executable, "-m", "musebridge", "export", "--stamp", str(plain)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    after = plain.read_bytes()
    assert after.startswith(before) and M.verify(after, str(plain)) is True  # only the entry was appended
    assert M.stamped(after) == after  # stamping again changes nothing
    flipped_copy(plain, tmp_path / "bad.onnx")
    with pytest.raises(ModelError, match="checksum"):
        open_session(tmp_path / "bad.onnx", choose_providers("cpu"))


def test_an_exported_model_carries_a_checksum_and_quantizing_recomputes_it(tmp_path):
    pytest.importorskip("torch")
    from musebridge.export.onnx_export import quantize_int8

    from tests.model_fixtures import export_small

    _, path = export_small(tmp_path)
    assert M.verify(path.read_bytes(), str(path)) is True
    quantize_int8(path, tmp_path / "q.onnx")
    data = (tmp_path / "q.onnx").read_bytes()
    assert M.verify(data, "q.onnx") is True
    assert len(M._checksum_entries(memoryview(data))) == 1


def test_a_corrupt_checksum_entry_or_non_model_bytes(tmp_path):
    data = default_model_path().read_bytes()
    wrong = M.stamped(data)[: -64] + b"0" * 64
    with pytest.raises(ModelError, match="do not match"):
        M.verify(wrong, "x.onnx")
    assert M.verify(b"not a protobuf \xff\xff\xff", "x.onnx") is False  # onnxruntime refuses it next
    with pytest.raises(ModelError, match="not an ONNX model"):
        M.stamp_file(_write(tmp_path / "junk.onnx", b"\xff\xff\xff"))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
