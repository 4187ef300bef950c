"""Model files: where the bundled default model lives, and opening an exported ONNX file with its metadata checked.

An exported model (see export/onnx_export.py) carries JSON metadata: its graph format, the model config, the
vocabulary fingerprint of the codec it was trained with, and training/data summaries. The engine refuses a file
whose format or vocabulary differs from its own, with one line naming the file and the fix. A file that carries
the checksum of its graph (engine/inference/model_checksum.py) is checked against it before onnxruntime reads it: a
corrupt file is refused with one line instead of playing wrong notes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..errors import ModelError
from ..tokens import vocab as V
from .graph import FORMAT
from .model_checksum import verify

log = logging.getLogger(__name__)

DEFAULT_MODEL = "models/default.onnx"  # inside the musebridge.engine package (package-data)
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


@dataclass(frozen=True)
class ModelInfo:
    """What a model file says about itself. Sizes are counts (layers, heads, tokens)."""

    path: str
    n_layer: int
    n_head: int
    n_embd: int
    block_size: int  # the cache capacity in tokens
    vocab_size: int
    rope_base: float
    vocab: dict
    train: dict
    data: dict

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head


def default_model_path() -> Path:
    """Path of the model shipped inside the package (it may be missing in a source checkout)."""
    return Path(str(resources.files("musebridge.engine").joinpath(DEFAULT_MODEL)))


def choose_providers(provider: str = "auto") -> list[str]:
    """onnxruntime execution providers for "auto" (CUDA when onnxruntime-gpu sees a GPU), "cpu" or "cuda"."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if provider == "auto":
        provider = "cuda" if PROVIDERS["cuda"] in available else "cpu"
    if provider not in PROVIDERS:
        raise ModelError(f"unknown provider {provider!r}; choose auto, cpu or cuda")
    if PROVIDERS[provider] not in available:
        raise ModelError(f"provider {provider} is not available in this onnxruntime ({', '.join(available)}); "
                         "install onnxruntime-gpu for CUDA")
    return [PROVIDERS[provider]] + ([PROVIDERS["cpu"]] if provider != "cpu" else [])


def _json(meta: dict, key: str, path: str) -> dict:
    try:
        value = json.loads(meta[key])
    except KeyError:
        raise ModelError(f"{path}: not a MuseBridge model (no {key} metadata); export it with "
                         "`musebridge export`") from None
    except json.JSONDecodeError:
        raise ModelError(f"{path}: corrupt {key} metadata; export the model again") from None
    if not isinstance(value, dict):
        raise ModelError(f"{path}: corrupt {key} metadata; export the model again")
    return value


def check_metadata(meta: dict[str, str], path: str) -> ModelInfo:
    """Validate a model's metadata map against this engine (format, vocabulary) and return its ModelInfo."""
    fmt = meta.get("musebridge.format")
    if fmt != FORMAT:
        raise ModelError(f"{path}: model format {fmt!r}, this engine reads {FORMAT!r}; "
                         "export the model again with `musebridge export`")
    vocab, config = _json(meta, "musebridge.vocab", path), _json(meta, "musebridge.config", path)
    ours = V.vocab_info()
    if vocab.get("sha256") != ours.sha256 or vocab.get("size") != ours.size:
        raise ModelError(
            f"{path}: model vocabulary v{vocab.get('version')} ({str(vocab.get('sha256'))[:12]}, "
            f"{vocab.get('size')} tokens) does not match this codec v{ours.version} ({ours.sha256[:12]}, "
            f"{ours.size} tokens); retrain or export a model for this version"
        )
    try:
        info = ModelInfo(
            path=path, n_layer=int(config["n_layer"]), n_head=int(config["n_head"]),
            n_embd=int(config["n_embd"]), block_size=int(config["block_size"]),
            vocab_size=int(config["vocab_size"]), rope_base=float(config["rope_base"]), vocab=vocab,
            train=_json(meta, "musebridge.train", path), data=_json(meta, "musebridge.data", path),
        )
    except (KeyError, TypeError, ValueError):
        raise ModelError(f"{path}: incomplete model config metadata; export the model again") from None
    if info.vocab_size != ours.size:
        raise ModelError(f"{path}: model has {info.vocab_size} output tokens, the codec {ours.size}; "
                         "export a model for this vocabulary")
    return info


def open_session(path: str | os.PathLike | None, providers: list[str], threads: int = 1,
                 optimization: str = "all", profile: bool = False, spinning: bool = True):
    """Open an onnxruntime session for a model file (None: the bundled default); returns (session, ModelInfo).

    threads: intra-op threads (1 is usually fastest for one-token steps on a small CPU).
    optimization: onnxruntime graph optimization level: "disable", "basic", "extended" or "all".
    spinning: let idle intra-op threads spin (lower latency; burns a core between steps when threads > 1).
    """
    import onnxruntime as ort

    path = Path(path) if path is not None else default_model_path()
    if not path.is_file():
        hint = ("the package ships no default model; export one with `musebridge export CKPT -o MODEL.onnx`"
                if path == default_model_path() else "check the path")
        raise ModelError(f"{path}: no such model file; {hint}")
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = levels[optimization]
    options.enable_profiling = profile
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.log_severity_level = 3
    try:
        checked = verify(path.read_bytes(), str(path))
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model ({exc.strerror}); check the path") from None
    try:
        session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes for every kind of bad file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: cannot load the model ({first[:200]}); the file is truncated or not "
                         "an ONNX model, export it again") from None
    info = check_metadata(dict(session.get_modelmeta().custom_metadata_map), str(path))
    log.debug("loaded %s on %s (checksum %s)", path, session.get_providers(), "checked" if checked else "absent")
    return session, info
