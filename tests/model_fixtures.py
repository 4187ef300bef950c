"""Small randomly initialised models for the engine tests: a checkpoint and its ONNX export (built once)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

SMALL = dict(n_layer=2, n_head=2, n_embd=64, block_size=128)  # head size 32: GroupQueryAttention needs 16k


def make_model(seed: int = 0, **overrides):
    """A random GPT (eval mode) of the small test size."""
    import torch
    from musebridge.export.model import GPT, GPTConfig

    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **overrides})).eval()


def export_small(folder: Path, seed: int = 0, train: dict | None = None, **overrides) -> tuple[object, Path]:
    """(torch model, path of its fp32 ONNX export with full metadata; `train`: its training summary)."""
    from musebridge.engine.tokens import vocab as V
    from musebridge.export.onnx_export import export_model

    model = make_model(seed, **overrides)
    state = {"config": model.config.to_dict(), "vocab": asdict(V.vocab_info()),
             "train": train or {"step": 0}, "data": {"corpus": "random test model"}}
    path = Path(folder) / f"small_{seed}{'_trained' if train else ''}.onnx"
    export_model(model, state, path)
    return model, path
