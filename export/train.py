"""Training loop: one device, or many processes through torchrun (DDP; gloo on CPU, nccl on GPU).

Everything is explicit: a GPTConfig (model) and a TrainConfig (optimisation, data, output) go in, checkpoints
come out of `<out>/latest.pt` (every evaluation, with the optimizer, for --resume) and `<out>/best.pt` (lowest
validation loss), with `<out>/loss.png` (the loss curve) and `<out>/history.json` beside them. A run started
from another model (`--init`) carries that model's own training (its stages: config and history) in its
checkpoints, so an exported file says how all of its weights were trained, and its loss curve shows every stage.

Batches are a pure function of (seed, rank, step) (see export/dataset.py), so a resumed run sees the same data
it would have seen. The learning rate follows linear warmup then a cosine decay to min_lr over the run, where the
run's progress is max(step / max_steps, elapsed / time budget): a run cut by --minutes still ends decayed.
Losses are mean cross-entropy in nats per predicted token.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from musebridge.engine.files import atomic_write
from torch.nn.parallel import DistributedDataParallel as DDP

from .checkpoint import load_checkpoint, load_weights, save_checkpoint
from .config import TrainConfig
from .dataset import TokenData, WindowSampler, load_training, mix_weights, piece_source
from .errors import CheckpointError
from .model import GPT, GPTConfig

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size and local rank (for the GPU index)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_type: str) -> Dist:
    """Join the torchrun process group when WORLD_SIZE > 1 (nccl on CUDA, gloo on CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def pick_device(name: str, ddp: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        torch.cuda.set_device(ddp.local_rank)
        return torch.device("cuda", ddp.local_rank)
    return torch.device(name)


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for this device, or None for plain float32."""
    if name == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def lr_at(progress: float, step: int, cfg: TrainConfig) -> float:
    """Learning rate: linear warmup over warmup_steps, then cosine from lr to min_lr as progress goes 0 -> 1."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    p = min(1.0, max(0.0, progress))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * p))


def make_optimizer(model: GPT, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def data_summary(root: str, train: TokenData, valid: TokenData) -> dict:
    """What the model was trained on, stored in the checkpoint (and carried into the exported model)."""
    styles = sorted(set(train.styles))
    return {
        "corpus": str(root),
        "train_pieces": len(train), "train_tokens": int(len(train.tokens)),
        "valid_pieces": len(valid), "valid_tokens": int(len(valid.tokens)),
        "styles": {s: train.styles.count(s) for s in styles},
        "sources": {src: sum(1 for i, s in zip(train.ids, train.styles, strict=True) if piece_source(i, s) == src)
                    for src in ("notated", "band", "live")},
        "instruments": train.instrument_notes(),  # note-ons per class (musebridge styles shows both)
    }


class Trainer:
    """Holds the model, optimizer, data and history of one run; `run()` trains until a limit is reached."""

    def __init__(self, model_cfg: GPTConfig, cfg: TrainConfig, resume: bool = False):
        self.cfg = cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        auto = "cuda" if torch.cuda.is_available() else "cpu"
        self.ddp = setup_distributed(torch.device(auto if cfg.device == "auto" else cfg.device).type)
        self.device = pick_device(cfg.device, self.ddp)
        self.amp_dtype = autocast_dtype(cfg.dtype, self.device)
        self.out = Path(cfg.out)
        self.train_data, self.valid_data = load_training(cfg.data, "train"), load_training(cfg.data, "valid")
        self.state = {"step": 0, "tokens": 0, "elapsed_s": 0.0, "best_val": float("inf"), "history": []}
        self.stages: list[dict] = []  # the runs the starting weights came from, oldest first (`stages`)
        ckpt = None
        if resume and (self.out / "latest.pt").is_file():
            self.model, ckpt = load_checkpoint(self.out / "latest.pt")
            self.state.update(ckpt.get("train", {}).get("state", {}))
            self.stages = ckpt.get("train", {}).get("stages", [])
            if self.ddp.main:
                log.info("resuming %s at step %d", self.out / "latest.pt", self.state["step"])
        elif cfg.init:
            self.model, start = load_weights(cfg.init)
            self.stages = stages(start.get("train") or {})
            if self.ddp.main:
                log.info("starting from the weights of %s (its model config; the preset is not used)", cfg.init)
        elif resume:
            raise CheckpointError(f"{self.out / 'latest.pt'}: nothing to resume; drop --resume to start afresh")
        else:
            torch.manual_seed(cfg.seed)
            self.model = GPT(model_cfg)
        self.model_cfg = self.model.config
        self.model.to(self.device).train()
        self.optimizer = make_optimizer(self.model, cfg, self.device)
        if ckpt is not None and "optimizer" in ckpt:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.net = DDP(self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None) \
            if self.ddp.world > 1 else self.model
        if cfg.compile:
            self.net = torch.compile(self.net)
        bs = self.model_cfg.block_size
        weights = mix_weights(self.train_data, dict(cfg.mix) if cfg.mix else None, cfg.style_balance)
        self.train_sampler = WindowSampler(self.train_data, bs, cfg.augment, seed=cfg.seed, weights=weights)
        self.valid_sampler = WindowSampler(self.valid_data, bs, None, seed=cfg.seed)

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _to(self, arr: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(arr).to(self.device, non_blocking=True)

    def train_step(self, step: int, lr: float) -> float:
        """One optimizer step (with gradient accumulation); returns the mean training loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = 0.0
        for micro in range(self.cfg.grad_accum):
            x, y = self.train_sampler.batch(self.cfg.batch_size, step * self.cfg.grad_accum + micro, self.ddp.rank)
            sync = micro == self.cfg.grad_accum - 1
            ctx = self.net.no_sync() if isinstance(self.net, DDP) and not sync else nullcontext()
            with ctx, self._autocast():
                _, loss = self.net(self._to(x), self._to(y))
            self.scaler.scale(loss / self.cfg.grad_accum).backward()
            total += loss.item() / self.cfg.grad_accum
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return total

    @torch.no_grad()
    def validate(self) -> float:
        """Mean loss (nats per predicted token) over the fixed validation windows, summed over all ranks."""
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.device)
        batches = self.valid_sampler.fixed_batches(self.cfg.eval_windows, self.cfg.batch_size,
                                                   self.ddp.rank, self.ddp.world)
        for x, y in batches:
            with self._autocast():
                _, loss = self.model(self._to(x), self._to(y))
            n = int((y != 0).sum())
            sums += torch.tensor([loss.item() * n, n], dtype=torch.float64, device=self.device)
        if self.ddp.world > 1:
            dist.all_reduce(sums)
        self.model.train()
        return float(sums[0] / max(sums[1], 1))

    def _progress(self, step: int, elapsed: float) -> tuple[float, bool]:
        """(progress 0..1, stop?) decided by rank 0 and shared, so every rank agrees."""
        budget = self.cfg.minutes * 60 if self.cfg.minutes else None
        progress = max(step / self.cfg.max_steps, elapsed / budget if budget else 0.0)
        flag = torch.tensor([progress, float(step >= self.cfg.max_steps or progress >= 1.0)], device=self.device)
        if self.ddp.world > 1:
            dist.broadcast(flag, src=0)
        return float(flag[0]), bool(flag[1])

    def save(self, val: float) -> None:
        """latest.pt (resumable) every evaluation, best.pt when validation improved; plus curve and history."""
        if not self.ddp.main:
            return
        train = {"state": self.state, "config": _jsonable(asdict(self.cfg)), "world": self.ddp.world,
                 "device": str(self.device), "amp": str(self.amp_dtype), "params": self.model.num_params(),
                 "stages": self.stages}
        data = data_summary(self.cfg.data, self.train_data, self.valid_data)
        save_checkpoint(self.out / "latest.pt", self.model, train=train, data=data, optimizer=self.optimizer)
        if val <= self.state["best_val"]:
            save_checkpoint(self.out / "best.pt", self.model, train=train, data=data)
        (self.out / "history.json").write_text(json.dumps(self.state["history"], indent=1))
        plot_history(whole_history(self.stages, self.state["history"]), self.out / "loss.png")

    def _evaluate_and_save(self, step: int, train_loss: float) -> float:
        val = self.validate()
        self.state["history"].append({"step": step, "tokens": self.state["tokens"], "train_loss": train_loss,
                                      "val_loss": val, "elapsed_s": round(self.state["elapsed_s"], 1)})
        self.state["best_val"] = min(self.state["best_val"], val)
        self.save(val)
        if self.ddp.main:
            log.info("step %d: train %.4f val %.4f (best %.4f)", step, train_loss, val, self.state["best_val"])
        return val

    def run(self) -> dict:
        """Train until max_steps or the time budget; returns the final training state."""
        step, start = self.state["step"], time.monotonic() - self.state["elapsed_s"]
        tokens_per_step = self.cfg.batch_size * self.cfg.grad_accum * self.model_cfg.block_size * self.ddp.world
        bar = _progress_bar(self.cfg.max_steps, step, self.ddp.main and self.cfg.progress)
        smooth, last_eval = None, step
        while True:
            progress, stop = self._progress(step, time.monotonic() - start)
            if stop:
                break
            t0 = time.monotonic()
            loss = self.train_step(step, lr_at(progress, step, self.cfg))
            step += 1
            smooth = loss if smooth is None else 0.9 * smooth + 0.1 * loss
            self.state.update(step=step, tokens=self.state["tokens"] + tokens_per_step,
                              elapsed_s=time.monotonic() - start)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{smooth:.3f}", tok_s=f"{tokens_per_step / (time.monotonic() - t0):.0f}")
            if step % self.cfg.eval_interval == 0:
                self._evaluate_and_save(step, smooth)
                last_eval = step
        if step != last_eval or not self.state["history"]:
            self._evaluate_and_save(step, smooth if smooth is not None else float("nan"))
        if bar is not None:
            bar.close()
        return self.state

    def close(self) -> None:
        if self.ddp.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _progress_bar(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True, mininterval=2.0)


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def stages(train: dict) -> list[dict]:
    """The training stages of a model whose training summary (a checkpoint's or an exported file's "train") is
    `train`, oldest first: its own earlier stages, then its run itself. Each is {"config": the run's TrainConfig,
    "state": its step, tokens, elapsed_s, best_val and history}. A summary without a run (a file from elsewhere)
    has none."""
    if "state" not in train:
        return []
    keep = ("step", "tokens", "elapsed_s", "best_val", "history")
    return [*train.get("stages", []), {"config": train.get("config", {}),
                                        "state": {k: train["state"][k] for k in keep if k in train["state"]}}]


def whole_history(earlier: list[dict], history: list[dict]) -> list[dict]:
    """The history of a run after its earlier stages': steps and tokens counted from the first stage's start."""
    out: list[dict] = []
    for part in [*(stage["state"].get("history", []) for stage in earlier), history]:
        steps, tokens = (out[-1]["step"], out[-1]["tokens"]) if out else (0, 0)
        out += [dict(h, step=h["step"] + steps, tokens=h["tokens"] + tokens) for h in part]
    return out


def plot_history(history: list[dict], path: Path) -> None:
    """Training and validation loss (nats per token) against tokens seen, as a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    tokens = [h["tokens"] for h in history]
    ax.plot(tokens, [h["train_loss"] for h in history], label="train (smoothed)")
    ax.plot(tokens, [h["val_loss"] for h in history], label="validation")
    ax.set_xlabel("training tokens")
    ax.set_ylabel("loss (nats / token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), CheckpointError)
    finally:
        plt.close(fig)


def train(model_cfg: GPTConfig, cfg: TrainConfig, resume: bool = False) -> dict:
    """Build a Trainer, run it, leave the process group. Returns the final training state."""
    trainer = Trainer(model_cfg, cfg, resume=resume)
    try:
        if trainer.ddp.main:
            log.info("model %s: %.2fM parameters, %s on %s x%d", trainer.model_cfg,
                     trainer.model.num_params() / 1e6, trainer.amp_dtype or "float32", trainer.device,
                     trainer.ddp.world)
        return trainer.run()
    finally:
        trainer.close()


