"""Per-piece figures and their aggregation into the judge's table: each figure for the real music on the same
prompt (the ceiling), the model, and chance (the real music of another piece, paired with this prompt).

A row of a table is {"real": x, "model": y, "chance": z}; per-piece values are kept beside it for the plots.
Times are seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from musebridge.engine.tokens.midifile import Note

from . import metrics as M

KINDS = ("real", "model", "chance")


@dataclass(frozen=True)
class Continuation:
    """One prompt and one continuation of it: notes (seconds), the prompt's span [0, prompt_end) and the
    continuation's [start, end); `hanging` is the share of its note-ons never released; `pedal` its pedal presses
    per minute."""

    prompt: Sequence[Note]
    prompt_end: float
    notes: Sequence[Note]
    start: float
    end: float
    hanging: float
    pedal: float


def continuation_row(c: Continuation) -> dict[str, float]:
    """The figures of one continuation against its prompt."""
    span = c.end - c.start
    prompt_poly = M.polyphony(c.prompt, 0.0, c.prompt_end)
    prompt_density = M.density(c.prompt, c.prompt_end)
    return {
        "in_key": M.in_key_share(c.notes, c.prompt),
        "dissonance": M.dissonance(c.notes),
        "polyphony": M.polyphony(c.notes, c.start, c.end),
        "polyphony_ratio": M.polyphony(c.notes, c.start, c.end) / prompt_poly if prompt_poly else np.nan,
        "long_share": M.long_share(c.notes),
        "never_released": c.hanging,
        "ioi_overlap": M.overlap(M.ioi_histogram(c.notes), M.ioi_histogram(c.prompt)),
        "silence": M.silence_share(c.notes, c.start, c.end),
        "density_ratio": M.density(c.notes, span) / prompt_density if prompt_density else np.nan,
        "centre_distance": abs(M.register(c.notes) - M.register(c.prompt)),
        "pedal_per_min": c.pedal,
        # the follow-the-player pairs: prompt figure, continuation figure (correlated across prompts)
        "_density": (prompt_density, M.density(c.notes, span)),
        "_register": (M.register(c.prompt), M.register(c.notes)),
        "_dynamics": (M.dynamics(c.prompt), M.dynamics(c.notes)),
    }


def duet_row(melody: Sequence[Note], accompaniment: Sequence[Note], end: float,
             hanging: float) -> dict[str, float]:
    """The figures of one accompaniment against its melody over [0, end) seconds."""
    return {
        "consonance": M.consonance(melody, accompaniment),
        "onset_alignment": M.onset_alignment(melody, accompaniment),
        "in_key": M.in_key_share(accompaniment, melody),
        "polyphony": M.polyphony(accompaniment, 0.0, end),
        "long_share": M.long_share(accompaniment),
        "never_released": hanging,
        "silence": M.silence_share(accompaniment, 0.0, end),
    }


def aggregate(rows: dict[str, list[dict]]) -> dict[str, dict]:
    """Rows per kind (real, model, chance), one per prompt, into {figure: {kind: value}}: means over prompts
    (nan-skipping), and for the "_" pairs the correlation across prompts ("density_follow" ...)."""
    table: dict[str, dict] = {}
    names = [k for k in rows["model"][0]] if rows.get("model") else []
    for name in names:
        if name.startswith("_"):
            table[f"{name[1:]}_follow"] = {
                kind: M.correlation([r[name][0] for r in rows[kind]], [r[name][1] for r in rows[kind]])
                for kind in KINDS if rows.get(kind)}
            continue
        table[name] = {kind: _mean([r[name] for r in rows[kind]]) for kind in KINDS if rows.get(kind)}
    return table


def per_piece(rows: dict[str, list[dict]]) -> dict[str, dict[str, list]]:
    """{kind: {figure: [value per prompt]}}, for the JSON and the plots (pairs kept as [prompt, continuation])."""
    return {kind: {name: [_plain(r[name]) for r in kind_rows] for name in kind_rows[0]}
            for kind, kind_rows in rows.items() if kind_rows}


def _mean(values: Sequence[float]) -> float:
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else float("nan")


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return None if not np.isfinite(value) else round(float(value), 4)
