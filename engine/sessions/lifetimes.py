"""How long the engine's notes may sound, per instrument class: no engine note outlives what real music holds for
its instrument (engine/sessions/follow.py, the "lifetime" rule).

A model exported with its training corpus at hand carries the measured limits in its data summary
(`data["lifetimes"]`, seconds per class name: the 99th percentile of its training notes' durations, by
export/note_stats.py); every session of that model uses them (engine/sessions/session.py). A model without them,
and any class it has too few notes of, keeps DEFAULT_LIFETIMES. FollowConfig.lifetimes set by hand overrides both.
"""

from __future__ import annotations

from ..tokens.instruments import INSTRUMENT_NAMES

# Longest a note of each class may sound, seconds, where the model measured none.
DEFAULT_LIFETIMES = {"piano": 4.0, "chromatic": 3.0, "organ": 6.0, "guitar": 4.0, "bass": 3.0, "strings": 6.0,
                     "voice": 6.0, "brass": 5.0, "reed": 5.0, "pipe": 5.0, "synth": 6.0, "drums": 0.5}


def measured_lifetimes(data: dict | None) -> tuple[tuple[str, float], ...]:
    """A model's measured note lifetimes from its data summary, as FollowConfig.lifetimes: only entries that name
    a class and a positive time; () for a model without them."""
    table = (data or {}).get("lifetimes")
    if not isinstance(table, dict):
        return ()
    return tuple((name, float(s)) for name, s in sorted(table.items())
                 if name in INSTRUMENT_NAMES and isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0)
