"""The decode graph's interface, in one place: what export/onnx_export.py writes and engine/inference/runtime.py
binds. Changing anything here changes the model file format: bump FORMAT (the engine refuses other formats).

    inputs   input_ids (B, T) int64; seqlens_k (B,) int32 = P + T - 1; total_sequence_length () int32 = P + T;
             past_key_i / past_value_i (B, H, W, D) float32 for each layer i
    outputs  logits (B, T, vocab) float32; present_key_i / present_value_i (B, H, W, D)

Rotary positions use ROPE frequencies base^(-2i/D), i = 0 .. D/2 - 1, float32: the exporter builds its cos/sin
tables from them and the engine rotates kept keys back by them when its window slides.
"""

from __future__ import annotations

import numpy as np

FORMAT = "musebridge-kv-gqa-1"
INPUT_IDS = "input_ids"
SEQLENS = "seqlens_k"
TOTAL_LENGTH = "total_sequence_length"
LOGITS = "logits"


def past(kind: str, layer: int) -> str:
    """The cache input of a layer; kind "key" or "value"."""
    return f"past_{kind}_{layer}"


def present(kind: str, layer: int) -> str:
    """The cache output of a layer (bound to the same buffer as its past input)."""
    return f"present_{kind}_{layer}"


def rope_frequencies(head_size: int, base: float) -> np.ndarray:
    """(head_size / 2,) float32 radians per position: base^(-2i / head_size)."""
    return np.float32(base) ** (-np.arange(0, head_size, 2, dtype=np.float32) / np.float32(head_size))
