"""`musebridge train`: train a model on a token corpus (one device, or many processes through torchrun).

    musebridge train --config default --data data/corpus --out runs/default --minutes 70
    torchrun --nproc-per-node 4 -m musebridge train --config large --out runs/large
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys

from musebridge.export.augment import AugmentConfig
from musebridge.export.errors import ExportError

log = logging.getLogger(__name__)

_MODEL_HELP = {"n_layer": "transformer blocks", "n_head": "attention heads per block",
               "n_embd": "embedding width (a multiple of --n-head)", "block_size": "longest context in tokens",
               "dropout": "dropout probability while training"}
_MODEL_FLAGS = tuple(_MODEL_HELP)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from musebridge.export.config import PRESETS, TrainConfig

    d = TrainConfig()
    parser.add_argument("--config", default="default", choices=sorted(PRESETS),
                        help="model size preset (default: the shipped real-time model)")
    model = parser.add_argument_group("model (override the preset)")
    for name in _MODEL_FLAGS:
        model.add_argument(f"--{name.replace('_', '-')}", type=float if name == "dropout" else int, default=None,
                           help=_MODEL_HELP[name])
    parser.add_argument("--data", default=d.data, help="corpus folder holding tokens/train.npy, valid.npy")
    parser.add_argument("--out", default=d.out, help="folder for latest.pt, best.pt, loss.png, history.json")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/latest.pt (model and optimizer)")
    parser.add_argument("--init", metavar="MODEL", default=None,
                        help="start from these weights (a checkpoint .pt or an exported .onnx, e.g. the bundled "
                             "engine/models/default.onnx) with a new optimizer, unless --resume finds "
                             "OUT/latest.pt; the model flags and preset are not used")
    opt = parser.add_argument_group("optimisation (per process)")
    opt.add_argument("--batch-size", type=int, default=d.batch_size, help="windows per micro-batch")
    opt.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    opt.add_argument("--max-steps", type=int, default=d.max_steps, help="optimizer steps (cosine schedule length)")
    opt.add_argument("--minutes", type=float, default=None,
                     help="time budget in minutes (total, resumes included); the schedule decays within it")
    opt.add_argument("--lr", type=float, default=d.lr, help="peak learning rate")
    opt.add_argument("--min-lr", type=float, default=d.min_lr, help="final learning rate")
    opt.add_argument("--warmup-steps", type=int, default=d.warmup_steps,
                     help="steps of linear learning-rate warmup (default %(default)s)")
    opt.add_argument("--weight-decay", type=float, default=d.weight_decay,
                     help="AdamW weight decay (default %(default)s)")
    opt.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm (0: off)")
    opt.add_argument("--eval-interval", type=int, default=d.eval_interval, help="steps between validations")
    opt.add_argument("--eval-windows", type=int, default=d.eval_windows, help="validation windows")
    opt.add_argument("--seed", type=int, default=d.seed,
                     help="seed of the weights and of the batches (default %(default)s)")
    _add_augment(parser.add_argument_group("augmentation (export/augment.py)"))
    opt.add_argument("--mix", type=_mix, default=None, metavar="SRC=SHARE,...",
                     help="share of training windows per source: notated, band, live (the performer's piano "
                     "renderings, `corpus build --perform`), e.g. live=0.6,band=0.2,notated=0.2 (default: in "
                     "proportion to tokens)")
    opt.add_argument("--style-balance", type=float, default=0.0, metavar="B",
                     help="within each source, 0: styles in proportion to their tokens .. 1: every style alike "
                     "(default: %(default)s)")
    hw = parser.add_argument_group("hardware")
    hw.add_argument("--device", default=d.device, help="auto, cpu, cuda (torchrun: one GPU per process)")
    hw.add_argument("--dtype", default=d.dtype, choices=("auto", "float32", "bfloat16", "float16"),
                    help="autocast dtype (auto: bfloat16/float16 on CUDA, float32 on CPU)")
    hw.add_argument("--threads", type=int, default=None, help="torch CPU threads per process")
    hw.add_argument("--compile", action="store_true", help="torch.compile the model (GPU runs)")
    parser.add_argument("--quiet", "--no-progress", dest="no_progress", action="store_true",
                        help="no progress bar (logs only)")


def _add_augment(group) -> None:
    """The augmentation options (AugmentConfig's fields)."""
    group.add_argument("--no-augment", action="store_true", help="train on the corpus as it is")
    group.add_argument("--augment-prob", type=float, default=AugmentConfig.prob,
                       help="chance that a training window is augmented at all (the rest stay as written)")
    group.add_argument("--transpose", type=int, default=AugmentConfig.transpose,
                       help="max transposition, semitones")
    group.add_argument("--revoice-prob", type=float, default=AugmentConfig.revoice_prob,
                       help="chance to move a window onto other instruments of its group")
    group.add_argument("--tempo", type=float, nargs=2, default=AugmentConfig.tempo, metavar=("MIN", "MAX"),
                       help="tempo stretch factor range")
    group.add_argument("--humanize-prob", type=float, default=AugmentConfig.humanize_prob,
                       help="chance to jitter a window's event times by +-1 grid step (10 ms)")
    group.add_argument("--style-drop", type=_share, default=AugmentConfig.style_drop, metavar="P",
                       help="chance that a piece's style token is replaced by 'unknown', so the model also learns "
                       "the music without it (needed by style guidance, `play --style-guidance`; default: "
                       "%(default)s)")


def _share(text: str) -> float:
    """A probability from the command line; argparse reports the error."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a share from 0 to 1") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a share; give one from 0 to 1")
    return value


def _mix(text: str) -> tuple[tuple[str, float], ...]:
    """`live=0.6,band=0.2,notated=0.2` -> (("live", 0.6), ...); argparse reports the ValueError's message."""
    from musebridge.export.dataset import SOURCES

    pairs = []
    for item in text.split(","):
        name, _, share = item.partition("=")
        if name.strip() not in SOURCES:
            raise argparse.ArgumentTypeError(
                f"unknown source {name.strip()!r} in --mix; choose from {', '.join(SOURCES)}")
        try:
            value = float(share)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--mix {item!r}: give SOURCE=SHARE with a number, e.g. live=0.6") from None
        if not 0 <= value <= 1e6:
            raise argparse.ArgumentTypeError(f"--mix {item!r}: a share is a number >= 0")
        pairs.append((name.strip(), value))
    if sum(v for _, v in pairs) <= 0:
        raise argparse.ArgumentTypeError("--mix gives no source a share above 0")
    return tuple(pairs)


def configs_from_args(args: argparse.Namespace):
    """(GPTConfig, TrainConfig) from parsed arguments."""
    from musebridge.export.config import PRESETS, TrainConfig

    overrides = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k) is not None}
    model_cfg = dataclasses.replace(PRESETS[args.config], **overrides)
    augment = None if args.no_augment else AugmentConfig(
        transpose=args.transpose, tempo=tuple(args.tempo), revoice_prob=args.revoice_prob,
        humanize_prob=args.humanize_prob, prob=args.augment_prob, style_drop=args.style_drop)
    cfg = TrainConfig(
        data=args.data, out=args.out, init=args.init, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_steps=args.max_steps, minutes=args.minutes, lr=args.lr, min_lr=args.min_lr,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay, grad_clip=args.grad_clip,
        eval_interval=args.eval_interval, eval_windows=args.eval_windows, seed=args.seed, augment=augment,
        mix=args.mix, style_balance=args.style_balance,
        device=args.device, dtype=args.dtype, threads=args.threads, compile=args.compile,
        progress=not args.no_progress,
    )
    return model_cfg, cfg


def run(args: argparse.Namespace) -> int:
    from musebridge.export.train import train

    model_cfg, cfg = configs_from_args(args)
    try:
        state = train(model_cfg, cfg, resume=args.resume)
    except (ExportError, ValueError) as exc:
        print(f"musebridge train: {exc}", file=sys.stderr)
        return 1
    if state["history"] and os.environ.get("RANK", "0") == "0":
        last = state["history"][-1]
        log.info("done: %d steps, %.1f min, validation loss %.4f (best %.4f); checkpoints in %s",
                 state["step"], state["elapsed_s"] / 60, last["val_loss"], state["best_val"], cfg.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m musebridge.commands.train ...` (what torchrun can launch directly)."""
    parser = argparse.ArgumentParser(prog="musebridge train", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
