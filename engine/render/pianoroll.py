"""Piano-roll pictures of a session or a generated file (PNG, through matplotlib, imported only when drawing).

Each part (e.g. "player", "model") gets its own colour family; each instrument within a part its own shade, and the
legend names them ("model: strings"). Written atomically.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EngineError
from ..files import atomic_write
from ..tokens.instruments import INSTRUMENT_NAMES
from ..tokens.midifile import Note

PART_COLOURS = {"player": ("#1f5fbf", "#4f8fdf", "#8fbfef"), "model": ("#d9480f", "#f08c00", "#e8590c", "#c2255c",
                                                                      "#a61e4d", "#862e9c")}
OTHER_COLOURS = ("#2b8a3e", "#5c940d", "#087f5b")


def matplotlib_or_error():
    """Import matplotlib with a headless backend, or raise EngineError saying how to install it."""
    try:
        import matplotlib  # noqa: PLC0415

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise EngineError("piano rolls need matplotlib: pip install 'musebridge[viz]' (or pip install matplotlib)"
                          ) from None
    return plt


def draw(parts: dict[str, list[Note]], path: str | os.PathLike, title: str = "") -> None:
    """Draw notes grouped by part name (seconds on x, MIDI pitch on y) into a PNG at `path`."""
    plt = matplotlib_or_error()
    path = Path(path)
    fig, ax = plt.subplots(figsize=(12, 5), dpi=100)
    end, pitches = 1.0, [60]
    for part, notes in parts.items():
        palette = PART_COLOURS.get(part, OTHER_COLOURS)
        for k, inst in enumerate(sorted({n.instrument for n in notes})):
            group = [n for n in notes if n.instrument == inst]
            colour = palette[k % len(palette)]
            for n in group:
                ax.add_patch(plt.Rectangle((n.start, n.pitch - 0.4), max(n.end - n.start, 0.02), 0.8,
                                           color=colour, alpha=0.85, linewidth=0))
            ax.plot([], [], color=colour, linewidth=6, label=f"{part}: {INSTRUMENT_NAMES[inst]} ({len(group)})")
            end = max(end, max(n.end for n in group))
            pitches += [n.pitch for n in group]
    ax.set_xlim(0, end * 1.02)
    ax.set_ylim(min(pitches) - 2, max(pitches) + 2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("MIDI pitch")
    ax.set_title(title)
    ax.grid(True, alpha=0.25)
    if any(parts.values()):
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, path, plt)


def _save(fig, path: Path, plt) -> None:
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
