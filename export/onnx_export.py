"""ONNX export of the GPT for the engine: one graph for prefill and one-token steps over a KV cache.

The graph is written node by node (onnx.helper), not traced, so that it has as few nodes as the engine needs:
per layer one packed QKV MatMul (+ bias), one com.microsoft GroupQueryAttention (rotary inside, the new keys
and values written into the cache in place when past and present share one buffer), the output projection, the
MLP (MatMul, FastGelu with its bias, MatMul), and two com.microsoft SkipLayerNormalization nodes that each do a
residual add, an output bias and the next LayerNorm: 9 nodes per layer.

Graph interface (B = 1 batch, T new tokens, W cache capacity = block_size, H heads, D head size):
    inputs   input_ids (1, T) int64; seqlens_k (1,) int32 = P + T - 1 (P tokens already cached);
             total_sequence_length () int32 = P + T; past_key_i / past_value_i (1, H, W, D) float32 per layer
    outputs  logits (1, T, vocab) float32; present_key_i / present_value_i (1, H, W, D)
Keys are cached rotated at their cache index (rotary position = index), exactly as export/model.py does, so the
engine's rollback (truncation) and window slide (drop, rotate kept keys back) match model.forward_cached.
The engine binds each present_* output to the same buffer as past_* (IO binding): no copy of the cache per step.

Metadata (model.metadata_props, JSON strings): musebridge.format, musebridge.config, musebridge.vocab,
musebridge.train, musebridge.data; and musebridge.graph_sha256, the checksum of the graph's bytes in the file
(engine/inference/model_checksum.py), which every file written here carries and the engine checks at load.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch
from google.protobuf.message import DecodeError
from musebridge.engine.errors import ModelError
from musebridge.engine.files import atomic_write
from musebridge.engine.inference import graph as G
from musebridge.engine.inference.model_checksum import CHECKSUM_KEY, stamped
from musebridge.engine.inference.model_file import check_metadata
from musebridge.engine.inference.runtime import Model, RuntimeOptions
from onnx import TensorProto, helper, numpy_helper

from .errors import ExportError
from .model import GPT, GPTConfig, rope_tables

log = logging.getLogger(__name__)

OPSET = 17
LN_EPS = 1e-5


class _Builder:
    """Collects nodes and initializers; names are derived from a prefix."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | str, domain: str = "", **attrs) -> str:
        outs = [outputs] if isinstance(outputs, str) else outputs
        name = f"{op}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain, **attrs))
        return outs[0]


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float32).cpu().numpy()


def _linear(b: _Builder, x: str, sd: dict, name: str, out: str) -> str:
    """x @ W^T + bias for an nn.Linear `name` in the state dict."""
    w = b.init(f"{name}.weight_t", _np(sd[f"{name}.weight"]).T)
    h = b.node("MatMul", [x, w], f"{out}_mm")
    return b.node("Add", [h, b.init(f"{name}.bias", _np(sd[f"{name}.bias"]))], out)


def _layernorm(b: _Builder, x: str, sd: dict, name: str, out: str) -> str:
    g, beta = b.init(f"{name}.weight", _np(sd[f"{name}.weight"])), b.init(f"{name}.bias", _np(sd[f"{name}.bias"]))
    return b.node("LayerNormalization", [x, g, beta], out, axis=-1, epsilon=LN_EPS)


def _skip_layernorm(b: _Builder, x: str, skip: str, bias: str, sd: dict, name: str, out: str,
                    keep_sum: bool) -> tuple[str, str]:
    """LayerNorm(x + skip + bias) in one com.microsoft node; also returns the sum (the new residual stream)."""
    g, beta = b.init(f"{name}.weight", _np(sd[f"{name}.weight"])), b.init(f"{name}.bias", _np(sd[f"{name}.bias"]))
    outs = [out, "", "", f"{out}_sum"] if keep_sum else [out]
    b.node("SkipLayerNormalization", [x, skip, g, beta, bias], outs, domain="com.microsoft", epsilon=LN_EPS)
    return out, f"{out}_sum"


def _block(b: _Builder, h: str, res: str, sd: dict, i: int, c: GPTConfig) -> tuple[str, str]:
    """One transformer block. h = ln_1(res) is given; returns (the next LayerNorm's output, residual stream).
    The residual adds, output biases and the following LayerNorm are fused into SkipLayerNormalization."""
    p = f"blocks.{i}"
    qkv = _linear(b, h, sd, f"{p}.attn.qkv", f"l{i}_qkv")  # (1, T, 3C): q, k, v, each heads x D
    attn = b.node(
        "GroupQueryAttention",
        [qkv, "", "", G.past("key", i), G.past("value", i), G.SEQLENS, G.TOTAL_LENGTH,
         "rope_cos", "rope_sin"],
        [f"l{i}_attn", G.present("key", i), G.present("value", i)],
        domain="com.microsoft", num_heads=c.n_head, kv_num_heads=c.n_head, do_rotary=1, rotary_interleaved=0,
    )
    wp = b.init(f"{p}.attn.proj.weight_t", _np(sd[f"{p}.attn.proj.weight"]).T)
    a = b.node("MatMul", [attn, wp], f"l{i}_proj")
    proj_bias = b.init(f"{p}.attn.proj.bias", _np(sd[f"{p}.attn.proj.bias"]))
    h, res = _skip_layernorm(b, res, a, proj_bias, sd, f"{p}.ln_2", f"l{i}_ln2", keep_sum=True)
    w1 = b.init(f"{p}.mlp.0.weight_t", _np(sd[f"{p}.mlp.0.weight"]).T)
    m = b.node("MatMul", [h, w1], f"l{i}_fc_mm")
    m = b.node("FastGelu", [m, b.init(f"{p}.mlp.0.bias", _np(sd[f"{p}.mlp.0.bias"]))], f"l{i}_gelu",
               domain="com.microsoft")
    m = b.node("MatMul", [m, b.init(f"{p}.mlp.2.weight_t", _np(sd[f"{p}.mlp.2.weight"]).T)], f"l{i}_fc2")
    fc2_bias = b.init(f"{p}.mlp.2.bias", _np(sd[f"{p}.mlp.2.bias"]))
    last = i == c.n_layer - 1
    ln = "ln_f" if last else f"blocks.{i + 1}.ln_1"
    return _skip_layernorm(b, res, m, fc2_bias, sd, ln, f"l{i + 1}_ln1", keep_sum=not last)


def build_graph(model: GPT) -> onnx.ModelProto:
    """The decode graph for `model` (weights copied as float32 initializers), without metadata."""
    c = model.config
    sd = {k: v for k, v in model.state_dict().items()}
    b = _Builder()
    cos, sin = rope_tables(c)  # (block_size, D/2), the tables the torch model uses
    b.init("rope_cos", _np(cos))
    b.init("rope_sin", _np(sin))
    table = _np(model.token_table().detach())  # the summed table when note embeddings are factorized
    res = b.node("Gather", [b.init("wte", table), G.INPUT_IDS], "x0", axis=0)
    h = _layernorm(b, res, sd, "blocks.0.ln_1", "l0_ln1")
    for i in range(c.n_layer):
        h, res = _block(b, h, res, sd, i, c)
    b.node("MatMul", [h, b.init("lm_head_t", table.T)], G.LOGITS)

    H, D = c.n_head, c.head_size
    cache = ["batch", H, "max_seq", D]
    inputs = [
        helper.make_tensor_value_info(G.INPUT_IDS, TensorProto.INT64, ["batch", "seq"]),
        helper.make_tensor_value_info(G.SEQLENS, TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info(G.TOTAL_LENGTH, TensorProto.INT32, []),
    ]
    outputs = [helper.make_tensor_value_info(G.LOGITS, TensorProto.FLOAT, ["batch", "seq", c.vocab_size])]
    for i in range(c.n_layer):
        for kind in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(G.past(kind, i), TensorProto.FLOAT, cache))
            outputs.append(helper.make_tensor_value_info(G.present(kind, i), TensorProto.FLOAT, cache))
    graph = helper.make_graph(b.nodes, "musebridge_gpt", inputs, outputs, b.inits)
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)]
    onnx_model = helper.make_model(graph, opset_imports=opsets, producer_name="musebridge")
    onnx_model.ir_version = 8
    return onnx_model


def set_metadata(onnx_model: onnx.ModelProto, state: dict) -> None:
    """Store the model config, vocabulary fingerprint and training summaries (JSON) in the file."""
    meta = {
        "musebridge.format": G.FORMAT,
        "musebridge.config": json.dumps(state["config"], sort_keys=True),
        "musebridge.vocab": json.dumps(state["vocab"], sort_keys=True),
        "musebridge.train": json.dumps(state.get("train") or {}, sort_keys=True, default=str),
        "musebridge.data": json.dumps(state.get("data") or {}, sort_keys=True, default=str),
    }
    del onnx_model.metadata_props[:]
    for key, value in meta.items():
        onnx_model.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))


def save_atomic(onnx_model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write the model, with the checksum of its graph (a checksum it carried is replaced), to a temporary file in
    the target folder, then rename it over `path`."""
    data = stamped(onnx_model.SerializeToString())
    atomic_write(path, lambda tmp: tmp.write_bytes(data), ExportError, make_folder=True)


def export_model(model: GPT, state: dict, path: str | os.PathLike) -> onnx.ModelProto:
    """Build, check and write the fp32 decode graph with its metadata."""
    onnx_model = build_graph(model)
    set_metadata(onnx_model, state)
    onnx.checker.check_model(onnx_model)
    save_atomic(onnx_model, path)
    log.info("wrote %s (%d nodes, %.1f MB)", path, len(onnx_model.graph.node), Path(path).stat().st_size / 1e6)
    return onnx_model


def _quiet_quantizer():
    """The onnxruntime quantizers log every tensor (root logger and their own): raise both to ERROR."""
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    return lambda: [lg.setLevel(level) for lg, level in zip(loggers, levels, strict=True)]


def quantize_int8(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Dynamic int8 quantization of the MatMul weights (per tensor; activations quantized per call by
    DynamicQuantizeMatMul); metadata is kept."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def quantize(tmp: str) -> onnx.ModelProto:
        quantize_dynamic(str(src), tmp, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        return onnx.load(tmp)

    _quantized(src, dst, quantize)


def quantize_int4(src: str | os.PathLike, dst: str | os.PathLike, block_size: int = 32) -> None:
    """Block-wise int4 weights (com.microsoft MatMulNBits, symmetric, `block_size` weights per scale, int8
    compute): a quarter of the fp32 weight bytes; metadata is kept."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    def quantize(tmp: str) -> onnx.ModelProto:
        q = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=block_size, is_symmetric=True,
                                 accuracy_level=4)
        q.process()
        return q.model.model

    _quantized(src, dst, quantize)


def _quantized(src, dst, quantize) -> None:
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp.onnx", dir=dst.parent)
    os.close(fd)
    restore = _quiet_quantizer()
    try:
        q = quantize(tmp)
        del q.metadata_props[:]
        q.metadata_props.extend(p for p in onnx.load(str(src), load_external_data=False).metadata_props
                                if p.key != CHECKSUM_KEY)  # save_atomic writes the quantized graph's own
        save_atomic(q, dst)
    finally:
        restore()
        if os.path.exists(tmp):
            os.unlink(tmp)


def model_from_onnx(path: str | os.PathLike) -> tuple[GPT, dict]:
    """Rebuild the torch model from a file written by this module (fp32 or int8): (model in eval mode, a
    checkpoint-like dict with "config", "vocab", "train" and "data"). int8 weights are dequantized (scale x
    (q - zero point)); the token table is stored summed, so a factorized model gets it whole in `wte` and zero
    instrument and pitch parts: the same function as the file. What a fine-tune starts from (``train --init``)."""
    path = Path(path)
    try:
        onnx_model = onnx.load(str(path))
    except FileNotFoundError:
        raise ExportError(f"{path}: no such model file; give an exported .onnx or a checkpoint .pt") from None
    except (OSError, ValueError, DecodeError) as exc:
        raise ExportError(f"{path}: not a readable ONNX model ({exc}); export it again") from None
    meta = {p.key: p.value for p in onnx_model.metadata_props}
    try:
        info = check_metadata(meta, str(path))  # the engine's checks: format, vocabulary, config
    except ModelError as exc:
        raise ExportError(str(exc)) from None
    inits = {t.name: numpy_helper.to_array(t) for t in onnx_model.graph.initializer}
    if any(n.op_type == "MatMulNBits" for n in onnx_model.graph.node):
        raise ExportError(f"{path}: int4 weights cannot be trained from; start from the fp32 or int8 file")

    def weight(name: str) -> np.ndarray:
        """The (out, in) weight `name` of an nn.Linear, from its (in, out) initializer, dequantized if int8."""
        if f"{name}_t" in inits:
            return inits[f"{name}_t"].T
        q, scale, zero = (inits.get(f"{name}_t_{part}") for part in ("quantized", "scale", "zero_point"))
        if q is None:
            raise ExportError(f"{path}: no weights for {name}; export the model again")
        return ((q.astype(np.float32) - np.float32(zero)) * np.float32(scale)).T

    state = {"config": json.loads(meta["musebridge.config"]), "vocab": info.vocab, "train": info.train,
             "data": info.data}
    model = GPT(GPTConfig(**state["config"]))
    sd = model.state_dict()
    for key in sd:
        if key == "wte.weight":
            value = inits["wte"]
        elif key.endswith("_part.weight"):
            value = np.zeros(tuple(sd[key].shape), np.float32)  # the table above already holds them
        elif key == "lm_head.weight":
            continue  # tied to wte
        elif key.endswith(".weight") and sd[key].dim() == 2:
            value = weight(key)
        elif key in inits:
            value = inits[key]
        else:
            raise ExportError(f"{path}: no tensor for {key}; export the model again")
        sd[key] = torch.tensor(value, dtype=torch.float32)
    model.load_state_dict(sd)
    model.eval()
    return model, state


def parity(model, path: str | Path, tokens: list[int], steps: int = 20) -> float:
    """Max abs logit difference between torch forward_cached and the ONNX graph: a prefill then `steps` steps."""
    onnx_model = Model.load(path, RuntimeOptions(provider="cpu"))
    cache = onnx_model.new_cache()
    k, v = model.empty_cache()
    n = min(len(tokens), model.config.block_size) - steps
    worst = 0.0
    with torch.no_grad():
        ref, k, v = model.forward_cached(torch.tensor([tokens[:n]]), k, v)
        worst = float(np.abs(cache.forward(tokens[:n]) - ref[0].numpy()).max())
        for t in tokens[n : n + steps]:
            ref, k, v = model.forward_cached(torch.tensor([[t]]), k, v)
            worst = max(worst, float(np.abs(cache.forward([t]) - ref[0].numpy()).max()))
    return worst
