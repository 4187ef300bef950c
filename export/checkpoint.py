"""Checkpoint files: the model's weights with its config, vocabulary fingerprint, and training summary.

A checkpoint is a torch.save'd dict:
    "model":     state_dict of export.model.GPT
    "config":    GPTConfig as a dict (the model is rebuilt from it, nothing else is needed)
    "vocab":     {"version", "size", "sha256"} of the codec the model was trained with
    "train":     training state summary (step, tokens seen, losses, time, hardware ...)
    "data":      training data summary (corpus, styles, split, token counts ...)
    "optimizer": optimizer state_dict (optional; present in resumable training checkpoints)
Writes are atomic (temporary file then rename).
"""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path

import torch
from musebridge.engine.files import atomic_write
from musebridge.engine.tokens import vocab as V

from .errors import CheckpointError
from .model import GPT, GPTConfig

__all__ = ["CheckpointError", "load_checkpoint", "load_weights", "save_checkpoint"]


def save_checkpoint(path: str | os.PathLike, model: GPT, train: dict | None = None, data: dict | None = None,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write a checkpoint atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = model.module if hasattr(model, "module") else model  # unwrap DDP
    state = {
        "model": raw.state_dict(),
        "config": raw.config.to_dict(),
        "vocab": asdict(V.vocab_info()),
        "train": train or {},
        "data": data or {},
    }
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    atomic_write(path, lambda tmp: torch.save(state, tmp), CheckpointError)


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> tuple[GPT, dict]:
    """Rebuild the model from a checkpoint; returns (model in eval mode, the whole checkpoint dict)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint; train one with `musebridge train`") from None
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc}); retrain or copy it again") from None
    if not isinstance(state, dict) or not {"model", "config", "vocab"} <= set(state):
        raise CheckpointError(f"{path}: not a MuseBridge checkpoint (missing model/config/vocab)")
    if state["vocab"].get("sha256") != V.vocab_info().sha256:
        raise CheckpointError(
            f"{path}: trained with vocabulary v{state['vocab'].get('version')} "
            f"({str(state['vocab'].get('sha256'))[:12]}), this codec is v{V.VOCAB_VERSION} "
            f"({V.vocab_info().sha256[:12]}); retrain the model with this version"
        )
    model = GPT(GPTConfig(**state["config"]))
    model.load_state_dict(state["model"])
    model.eval()
    return model, state


def load_weights(path: str | os.PathLike) -> tuple[GPT, dict]:
    """A model to start training from: a checkpoint (.pt) or a file written by `musebridge export` (.onnx, fp32
    or int8, dequantized); returns (model in eval mode, its config, vocab, train and data summaries)."""
    if Path(path).suffix.lower() == ".onnx":
        from .onnx_export import model_from_onnx  # onnx is only needed here

        return model_from_onnx(path)
    return load_checkpoint(path)
