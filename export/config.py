"""What a model and a training run are, as frozen dataclasses, without torch: the CLIs read them for --help.

GPTConfig (the network's shape) is saved in every checkpoint and in the exported model's metadata; PRESETS names
the sizes `musebridge train --config` offers; TrainConfig holds optimisation, data and bookkeeping.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from musebridge.engine.tokens import vocab as V

from .augment import AugmentConfig


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = V.VOCAB_SIZE
    block_size: int = 1024  # longest context (tokens) the model is trained on and the engine keeps
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 256
    dropout: float = 0.0
    rope_base: float = 10000.0
    # Note tokens embedded as token + instrument part + pitch part (export/model.py), so what is learned about
    # a pitch on one instrument carries to the others. The exported graph holds the summed table (no run cost).
    factorized_notes: bool = False

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def to_dict(self) -> dict:
        return asdict(self)


# Model presets. "default" is the shipped real-time model (see docs/model-card.md for the latency reasoning).
PRESETS: dict[str, GPTConfig] = {
    "tiny": GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=64),
    "small": GPTConfig(n_layer=2, n_head=4, n_embd=128, block_size=512),
    "default": GPTConfig(n_layer=4, n_head=4, n_embd=256, block_size=1024, factorized_notes=True),
    "large": GPTConfig(n_layer=8, n_head=8, n_embd=512, block_size=1024, dropout=0.1, factorized_notes=True),
    "xl": GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=2048, dropout=0.1, factorized_notes=True),
}


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping. Sizes are per process: tokens per step = batch_size * grad_accum *
    block_size * processes. Times in minutes; learning rates per step; losses in nats per token."""

    data: str = "data/corpus"
    out: str = "runs/default"
    init: str | None = None  # start from these weights (.pt or exported .onnx) at step 0, with a new optimizer
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 5000
    minutes: float | None = None  # time budget; training stops (decayed) when it is spent
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 100
    eval_windows: int = 64
    seed: int = 1337
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    mix: tuple[tuple[str, float], ...] | None = None  # (source, share of windows); None: by tokens
    style_balance: float = 0.0  # 0: styles by their tokens .. 1: every style alike, within each source
    device: str = "auto"  # auto: cuda when available, else cpu
    dtype: str = "auto"  # auto: bfloat16 (or float16) autocast on CUDA, float32 on CPU
    threads: int | None = None  # torch CPU threads per process (None: torch's default)
    compile: bool = False  # torch.compile the model (worth it on GPUs for long runs)
    progress: bool = True


