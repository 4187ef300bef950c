"""Token corpus on disk, and packed training windows that always start with a conditioning prefix.

On-disk format (written by `musebridge corpus build`, or by write_split for any list of token sequences):
    <root>/tokens/<split>.npy          uint16, the pieces of the split concatenated; each piece is its
                                       conditioning prefix ``BOS STYLE SET...``, its events, then EOS
    <root>/tokens/<split>.offsets.npy  int64, pieces + 1 entries: piece i is tokens[offsets[i]:offsets[i+1]]
    <root>/tokens/<split>.json         {"ids": [...], "styles": [...]}, one entry per piece

Windows (`WindowSampler`): a window of n tokens starts at a position drawn uniformly over the split's tokens
(so long pieces are seen in proportion to their length). When that position is inside a piece, the piece's
prefix is re-inserted in front, so the model always knows the style and instrument set of what it continues.
Pieces follow one another inside a window (packing, no padding except at the very end of the split); each
one is augmented on its own. A re-inserted prefix is trained like any piece start (the model learns the style
and set tokens at position 0, and what follows a prefix at a real start); only the first token after it, which
follows the prefix in no real piece, is not a loss target.

Sources and mix: a piece is "notated" (the corpus as written), "band" (band parts over a melody, export/band.py)
or "live" (a notated piece played on piano by the performer, export/live_corpus.py; its own splits live-train and
live-valid). `load_training` joins a split with its live split. By default windows are drawn in proportion to
tokens; `mix_weights` instead gives each source a share of the windows and, within a source, flattens the
styles (style_balance 0: in proportion to their tokens, 1: every style equally), so that the piano renderings can
dominate and folk melodies (70% of the notated pieces) do not.

A share START_PROB of the windows starts exactly at the beginning of the piece its drawn position falls in. Without
them the model never learns what follows a prefix at the very start of its input (there it is almost always a
re-inserted prefix with no target after it), which is exactly where every engine session and every evaluated
piece begins: the step-2001 default model gave the first velocity of a piece 8 nats there.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES

from .augment import AugmentConfig, augment, prefix_length
from .errors import DataError

START_PROB = 0.1  # share of training windows that start at a piece's first token (see the module docstring)
SOURCES = ("notated", "band", "live")
LIVE_MARK = "@live"  # in a live rendering's id: "<piece id>@live<k>" (export/live_corpus.py)


@dataclass(frozen=True)
class TokenData:
    """One split: tokens (uint16, memory-mapped), offsets (int64, pieces + 1), piece ids and style names."""

    tokens: np.ndarray
    offsets: np.ndarray
    ids: tuple[str, ...]
    styles: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def piece(self, i: int) -> np.ndarray:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]]

    def prefix_lengths(self) -> np.ndarray:
        """Conditioning prefix length of every piece (tokens)."""
        return np.array([prefix_length(self.tokens[a : a + 32]) for a in self.offsets[:-1]], dtype=np.int64)

    def notes(self) -> np.ndarray:
        """Number of note-ons in every piece."""
        is_on = (self.tokens >= V.OFFSETS["note_on"]) & (self.tokens < V.OFFSETS["note_off"])
        cum = np.concatenate(([0], np.cumsum(is_on, dtype=np.int64)))
        return cum[self.offsets[1:]] - cum[self.offsets[:-1]]

    def instrument_notes(self) -> dict[str, int]:
        """Note-ons per instrument class over the whole split."""
        on = self.tokens[(self.tokens >= V.OFFSETS["note_on"]) & (self.tokens < V.OFFSETS["note_off"])]
        per_class = np.bincount((on.astype(np.int64) - V.OFFSETS["note_on"]) // V.N_PITCHES,
                                minlength=V.N_INSTRUMENTS)
        return {name: int(n) for name, n in zip(INSTRUMENT_NAMES, per_class, strict=True)}


def piece_source(piece_id: str, style: str) -> str:
    """"live", "band" or "notated": where a piece of a corpus split comes from (by its id)."""
    if LIVE_MARK in piece_id:
        return "live"
    return "band" if piece_id.startswith(f"{style}-band-") else "notated"


def concat(parts: list[TokenData]) -> TokenData:
    """One TokenData holding the pieces of `parts` in order (tokens copied into memory)."""
    if len(parts) == 1:
        return parts[0]
    tokens = np.concatenate([p.tokens for p in parts])
    starts = np.cumsum([0] + [len(p.tokens) for p in parts[:-1]])
    offsets = np.concatenate([[0]] + [p.offsets[1:] + s for p, s in zip(parts, starts, strict=True)])
    return TokenData(tokens, offsets.astype(np.int64), sum((p.ids for p in parts), ()),
                     sum((p.styles for p in parts), ()))


def live_split(split: str) -> str:
    """The name of the split holding `split`'s live-like renderings (export/live_corpus.py)."""
    return f"live-{split}"


def load_training(root: str | os.PathLike, split: str) -> TokenData:
    """A split joined with its live-like renderings (live_split(split)) when the corpus has them."""
    data = load_split(root, split)
    if split_paths(root, live_split(split))[0].is_file():
        live = load_split(root, live_split(split))
        if len(live):
            return concat([data, live])
    return data


def mix_weights(data: TokenData, mix: dict[str, float] | None, style_balance: float = 0.0) -> np.ndarray | None:
    """Per-piece sampling weight per token (None: every token alike). mix: the share of windows for each source
    (normalized over the sources the data has; a source left out gets none); style_balance in [0, 1]: within a
    source, style s gets a share proportional to tokens(s) ** (1 - style_balance). Raises DataError when the
    mix leaves no source with data."""
    if not 0 <= style_balance <= 1:
        raise DataError(f"style balance must be between 0 and 1, not {style_balance}")
    if not mix and style_balance == 0:
        return None
    lengths = np.diff(data.offsets).astype(np.float64)
    keys = [(piece_source(i, s), s) for i, s in zip(data.ids, data.styles, strict=True)]
    tokens: dict[tuple[str, str], float] = {}
    for key, n in zip(keys, lengths, strict=True):
        tokens[key] = tokens.get(key, 0.0) + n
    present = {src for src, _ in tokens}
    if mix:
        shares = {src: mix.get(src, 0.0) for src in present}
    else:  # sources keep their token shares
        shares = {src: sum(n for (s, _), n in tokens.items() if s == src) for src in present}
    if sum(shares.values()) <= 0:
        raise DataError(f"the mix {mix} gives no windows to the sources this corpus has "
                        f"({', '.join(sorted(present))}); give one of them a share")
    norm = sum(shares.values())
    style_mass = {key: n ** (1.0 - style_balance) for key, n in tokens.items()}
    source_mass = {src: sum(m for (s, _), m in style_mass.items() if s == src) for src in present}
    per_token = {(src, st): shares[src] / norm * style_mass[src, st] / source_mass[src] / tokens[src, st]
                 for src, st in tokens}
    return np.array([per_token[k] for k in keys], dtype=np.float64)


def split_paths(root: str | os.PathLike, split: str) -> tuple[Path, Path, Path]:
    base = Path(root) / "tokens"
    return base / f"{split}.npy", base / f"{split}.offsets.npy", base / f"{split}.json"


def load_split(root: str | os.PathLike, split: str) -> TokenData:
    """Read one split of a corpus; raises DataError naming what is missing and how to make it."""
    tok_path, off_path, meta_path = split_paths(root, split)
    missing = [str(p) for p in (tok_path, off_path, meta_path) if not p.is_file()]
    if missing:
        raise DataError(
            f"corpus split {split!r} not found in {root} (missing {', '.join(missing)}); "
            "build it with `musebridge corpus build` or pass --data DIR"
        )
    try:
        tokens = np.load(tok_path, mmap_mode="r")
        offsets = np.load(off_path).astype(np.int64)
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"corpus split {split!r} in {root} is unreadable ({exc}); rebuild it") from None
    ids, styles = tuple(meta.get("ids", ())), tuple(meta.get("styles", ()))
    if len(offsets) < 1 or offsets[0] != 0 or offsets[-1] != len(tokens) or len(styles) != len(offsets) - 1:
        raise DataError(f"corpus split {split!r} in {root} is inconsistent (offsets/tokens/styles); rebuild it")
    return TokenData(tokens, offsets, ids, styles)


def write_split(root: str | os.PathLike, split: str, pieces, ids=None, styles=None) -> None:
    """Write token sequences (each: prefix, events, EOS) as one split in the on-disk format above."""
    pieces = [np.asarray(p, dtype=np.uint16) for p in pieces]
    ids = list(ids) if ids is not None else [f"{split}-{i}" for i in range(len(pieces))]
    styles = list(styles) if styles is not None else ["unknown"] * len(pieces)
    tok_path, off_path, meta_path = split_paths(root, split)
    tok_path.parent.mkdir(parents=True, exist_ok=True)
    offsets = np.concatenate(([0], np.cumsum([len(p) for p in pieces]))).astype(np.int64)
    tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.uint16)
    np.save(tok_path, tokens)
    np.save(off_path, offsets)
    meta_path.write_text(json.dumps({"ids": ids, "styles": styles}))


@dataclass(frozen=True)
class Window:
    """length tokens, and for each whether it counts as a prediction target (False: the token after a
    re-inserted prefix, PAD)."""

    tokens: np.ndarray
    target: np.ndarray


def _targets(length: int, reinserted: int | None) -> list[bool]:
    """Which tokens of a segment are prediction targets. A re-inserted prefix is a real piece start, so its own
    transitions (BOS -> STYLE -> SET...) are learned; the jump from it into the middle of the piece is not."""
    if reinserted is None or reinserted >= length:
        return [True] * length
    return [True] * reinserted + [False] + [True] * (length - reinserted - 1)


class WindowSampler:
    """Packed windows from a TokenData split. Batches are a pure function of (seed, rank, step)."""

    def __init__(self, data: TokenData, block_size: int, augment_config: AugmentConfig | None = None,
                 seed: int = 0, weights: np.ndarray | None = None):
        """weights: per piece, the sampling weight of each of its tokens (mix_weights); None: all alike."""
        if len(data) == 0 or len(data.tokens) == 0:
            raise DataError("the corpus split is empty; build a corpus with pieces in it")
        self.data = data
        self.block_size = block_size
        self.augment_config = augment_config
        self.seed = seed
        self.prefix_len = data.prefix_lengths()
        self.weights = weights
        if weights is not None:
            self._mass = np.cumsum(np.diff(data.offsets) * weights)  # cumulative weighted tokens, per piece

    def _draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """n window start positions: uniform over tokens, or over weighted tokens."""
        if self.weights is None:
            return rng.integers(0, len(self.data.tokens), size=n)
        u = rng.random(n) * self._mass[-1]
        piece = np.minimum(np.searchsorted(self._mass, u, side="right"), len(self.data) - 1)
        before = np.where(piece > 0, self._mass[piece - 1], 0.0)
        inside = ((u - before) / self.weights[piece]).astype(np.int64)
        return np.minimum(self.data.offsets[piece] + inside, self.data.offsets[piece + 1] - 1)

    def window(self, start: int, length: int, rng: np.random.Generator | None = None) -> Window:
        """`length` tokens starting at token position `start` of the split (with its piece's prefix in front
        when `start` is inside a piece); augmented when the sampler has a config and `rng` is given."""
        offsets, out, target = self.data.offsets, [], []
        piece = int(np.searchsorted(offsets, start, side="right")) - 1
        pos = start
        while len(out) < length and piece < len(self.data):
            a, b = int(offsets[piece]), int(offsets[piece + 1])
            plen = int(self.prefix_len[piece])
            pos = a if pos - a < plen else pos
            head = self.data.tokens[a : a + plen] if pos > a else self.data.tokens[a:a]
            need = length - len(out)
            body = self.data.tokens[pos : min(b, pos + need + need // 4 + 32)]
            seg = np.concatenate((head, body)).astype(np.int64)
            if self.augment_config is not None and rng is not None:
                seg = np.asarray(augment(seg, self.augment_config, rng), dtype=np.int64)
            out.extend(seg.tolist())
            target.extend(_targets(len(seg), prefix_length(seg) if pos > a else None))
            piece, pos = piece + 1, b
        out, target = out[:length], target[:length]
        pad = length - len(out)
        return Window(np.array(out + [V.PAD] * pad, dtype=np.int64), np.array(target + [False] * pad))

    def batch(self, batch_size: int, step: int, rank: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Inputs x and targets y, each (batch_size, block_size) int64; y is PAD where nothing is predicted."""
        rng = np.random.default_rng([self.seed, rank, step])
        starts = self._draw(rng, batch_size)
        at_start = rng.random(batch_size) < START_PROB
        piece_first = self.data.offsets[np.searchsorted(self.data.offsets, starts, side="right") - 1]
        starts = np.where(at_start, piece_first, starts)
        return self._stack([self.window(int(s), self.block_size + 1, rng) for s in starts])

    def fixed_batches(self, n_windows: int, batch_size: int, rank: int = 0, world: int = 1):
        """Evenly spaced, unaugmented windows (the validation set of training): this rank's share, batched."""
        starts = np.linspace(0, len(self.data.tokens) - 1, n_windows).astype(np.int64)[rank::world]
        for i in range(0, len(starts), batch_size):
            yield self._stack([self.window(int(s), self.block_size + 1) for s in starts[i : i + batch_size]])

    @staticmethod
    def _stack(windows: list[Window]) -> tuple[np.ndarray, np.ndarray]:
        tokens = np.stack([w.tokens for w in windows])
        target = np.stack([w.target for w in windows])
        y = np.where(target[:, 1:], tokens[:, 1:], V.PAD)
        return tokens[:, :-1], y
