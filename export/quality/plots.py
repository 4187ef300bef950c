"""The judge's picture (PNG): the figures' distributions, real against model, and piano rolls of a few
prompt/answer pairs (player blue, model orange, bar lines grey where the tempo map is known)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from musebridge.engine.files import atomic_write
from musebridge.engine.render.pianoroll import matplotlib_or_error

from ..errors import ExportError

COLOURS = {"real": "#1f5fbf", "model": "#d9480f", "chance": "#868e96"}
SHARES = ("in_key", "long_share", "never_released", "ioi_overlap", "silence")
FOLLOW = (("_density", "onsets per second"), ("_register", "mean pitch"), ("_dynamics", "mean velocity"))


def draw(result: dict, path: str | os.PathLike) -> None:
    """Draw the judge's result into a PNG at `path` (written atomically)."""
    plt = matplotlib_or_error()
    continuing = _pick(result, "continue")
    duets = _pick(result, "accompany")
    examples = (continuing[1]["examples"][:2] if continuing else []) + (duets[1]["examples"][:1] if duets else [])
    fig = plt.figure(figsize=(15, 4 * (2 + len(examples))), dpi=80)
    grid = fig.add_gridspec(2 + len(examples), 3)
    if continuing:
        _bars(fig.add_subplot(grid[0, :2]), continuing[1]["table"], SHARES + ("density_follow", "register_follow",
                                                                               "dynamics_follow"),
              f"continue ({continuing[0]}): shares and follow correlations")
        _histogram(fig.add_subplot(grid[0, 2]), continuing[1]["per_piece"], "polyphony_ratio",
                   "polyphony / the prompt's, per piece")
        for k, (name, label) in enumerate(FOLLOW):
            _scatter(fig.add_subplot(grid[1, k]), continuing[1]["per_piece"], name, label)
    for row, example in enumerate(examples, start=2):
        _roll(fig.add_subplot(grid[row, :]), example)
    if duets:
        fig.axes[0].set_title(fig.axes[0].get_title() + f"   |   accompany ({duets[0]}): consonance "
                              + ", ".join(f"{k} {v:.2f}" for k, v in duets[1]["table"]["consonance"].items()))
    fig.tight_layout()
    _save(fig, Path(path), plt)


def _pick(result: dict, mode: str) -> tuple[str, dict] | None:
    """The live-like rendering of a mode when it was run, else the notated one."""
    runs = result.get("modes", {}).get(mode, {})
    for rendering in ("live-like", "notated", *runs):
        if runs.get(rendering, {}).get("table"):
            return rendering, runs[rendering]
    return None


def _bars(ax, table: dict, names, title: str) -> None:
    names = [n for n in names if n in table]
    x = np.arange(len(names))
    for k, kind in enumerate(("real", "model", "chance")):
        values = [table[n].get(kind, np.nan) for n in names]
        ax.bar(x + (k - 1) * 0.27, np.nan_to_num(values), 0.27, label=kind, color=COLOURS[kind])
    ax.set_xticks(x, [n.replace("_", " ") for n in names], rotation=20)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(title)
    ax.legend()


def _histogram(ax, per_piece: dict, name: str, title: str) -> None:
    for kind in ("real", "model"):
        values = np.array([v for v in per_piece.get(kind, {}).get(name, []) if v is not None], float)
        if values.size:
            ax.hist(np.clip(values, 0, 6), bins=np.linspace(0, 6, 25), alpha=0.6, label=kind, color=COLOURS[kind])
    ax.set_title(title)
    ax.legend()


def _scatter(ax, per_piece: dict, name: str, label: str) -> None:
    for kind in ("real", "model"):
        pairs = [p for p in per_piece.get(kind, {}).get(name, []) if None not in p]
        if pairs:
            a = np.array(pairs, float)
            ax.scatter(a[:, 0], a[:, 1], s=18, label=kind, color=COLOURS[kind], alpha=0.8)
    ax.set_xlabel(f"prompt: {label}")
    ax.set_ylabel(f"continuation: {label}")
    ax.set_title(f"following the player: {label}")
    ax.legend()


def _roll(ax, example: dict) -> None:
    for part, colour in (("player", COLOURS["real"]), ("model", COLOURS["model"])):
        for start, end, pitch, _ in example[part]:
            ax.add_patch(_rect(start, end, pitch, colour))
    notes = example["player"] + example["model"]
    if notes:
        ax.set_xlim(0, max(n[1] for n in notes) + 0.5)
        ax.set_ylim(min(n[2] for n in notes) - 2, max(n[2] for n in notes) + 2)
    for bar in example.get("bars", []):
        ax.axvline(bar, color="#adb5bd", linewidth=0.6, zorder=0)
    ax.set_title(f"{example['id']}: player (blue) and model (orange)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("MIDI pitch")


def _rect(start: float, end: float, pitch: int, colour: str):
    from matplotlib.patches import Rectangle  # noqa: PLC0415

    return Rectangle((start, pitch - 0.4), max(end - start, 0.02), 0.8, color=colour, alpha=0.85)


def _save(fig, path: Path, plt) -> None:
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"), ExportError)
    finally:
        plt.close(fig)
