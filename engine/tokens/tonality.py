"""Keys: naming them, and hearing them in a pitch-class profile (Krumhansl & Kessler 1982 probe-tone profiles,
correlated with each of the 24 major and minor keys, as in the Krumhansl-Schmuckler key-finding algorithm).
A key is (tonic pitch class 0-11, "major" | "minor")."""

from __future__ import annotations

import numpy as np

# Krumhansl & Kessler (1982) probe-tone profiles, C major and C minor.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
MAJOR_SCALE = (0, 2, 4, 5, 7, 9, 11)
MINOR_SCALE = (0, 2, 3, 5, 7, 8, 10, 11)  # natural minor with the raised leading tone
NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def parse_key(text: str) -> tuple[int, str]:
    """("E minor" | "Bb major" | "f#") -> (tonic pitch class, "major" | "minor"); raises ValueError."""
    parts = text.replace("_", " ").split()
    flats = {"Db": "C#", "D#": "Eb", "Gb": "F#", "G#": "Ab", "A#": "Bb"}
    if not parts or len(parts) > 2:
        raise ValueError(f"unknown key {text!r}; write a tonic and a mode, e.g. 'E minor' or 'Bb major'")
    tonic = parts[0][:1].upper() + parts[0][1:].lower().replace("s", "#") if parts[0] else ""
    tonic = flats.get(tonic, tonic)
    mode = parts[1].lower() if len(parts) == 2 else "major"
    if tonic not in NOTE_NAMES or mode not in ("major", "minor"):
        raise ValueError(f"unknown key {text!r}; tonics: {', '.join(NOTE_NAMES)}; modes: major, minor")
    return NOTE_NAMES.index(tonic), mode


def key_name(key: tuple[int, str] | None) -> str:
    return "-" if key is None else f"{NOTE_NAMES[key[0]]} {key[1]}"


def _standardized(rows: np.ndarray) -> np.ndarray:
    return (rows - rows.mean(axis=-1, keepdims=True)) / rows.std(axis=-1, keepdims=True)


_KEY_ROWS = _standardized(np.array([np.roll(MAJOR_PROFILE, k) for k in range(12)]
                                   + [np.roll(MINOR_PROFILE, k) for k in range(12)]))


def key_scores(profile: np.ndarray) -> np.ndarray:
    """(24,) correlation of a pitch-class profile with the 12 major then the 12 minor key profiles."""
    if profile.std() == 0:
        return np.zeros(24)
    return _KEY_ROWS @ _standardized(profile) / 12.0


def scale_of(key: tuple[int, str]) -> tuple[int, ...]:
    tonic, mode = key
    return tuple(sorted((tonic + i) % 12 for i in (MAJOR_SCALE if mode == "major" else MINOR_SCALE)))
