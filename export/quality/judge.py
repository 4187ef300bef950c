"""The judge: generate from held-out prompts in each offline mode and set the model's figures beside the real
music's on the same prompts and chance's (see docs/quality.md). Deterministic for a seed: every generated piece
is sampled with its own seed, derived from the run's seed and the piece's id."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.follow_config import FollowConfig
from musebridge.engine.sessions.session import Engine
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES, instrument_index
from musebridge.engine.tokens.midifile import Note, notes_from_events

from . import metrics as M
from . import modes
from . import style as S
from .figures import Continuation, aggregate, continuation_row, duet_row, per_piece
from .prompts import (
    NOTATED,
    RENDERINGS,
    Duet,
    Piece,
    Source,
    crop,
    duet,
    interleave,
    piece,
    piece_seed,
    read_source,
    rendered_notes,
)

log = logging.getLogger(__name__)

MODES = ("continue", "respond", "accompany", "harmonize", "instruments", "style")
INSTRUMENT_SETS = (("strings", "organ"), ("piano", "bass", "drums"), ("piano",), ("guitar", "bass", "drums"),
                   ("voice", "strings"))
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class JudgeConfig:
    """How much to generate and how. Seconds throughout; `prompts` pieces per rendering and mode."""

    prompts: int = 96  # the IOI overlap of 24 prompts moved by 0.02 with the machine (docs/quality.md)
    prompt_s: float = 15.0
    continuation_s: float = 15.0
    phrase_s: float = 8.0
    duet_s: float = 20.0
    voices: int = 3
    grace_s: float = 2.0  # generation runs this long past a span, so a note started near its end can end
    renderings: tuple[str, ...] = RENDERINGS
    modes: tuple[str, ...] = MODES
    instrument_sets: tuple[tuple[str, ...], ...] = INSTRUMENT_SETS
    instrument_runs: int = 2
    instrument_seconds: float = 12.0
    style_pieces: int = 12  # a style's share moves in steps of 1/12 (docs/quality.md, "The figures")
    style_seconds: float = S.WINDOW_S  # as long as the span of a real piece the style classifier reads
    style_train: int = 150  # real train-split pieces per style the classifier is fitted on
    style_guidance: float = 1.0  # the style mode's pieces from scratch (engine/inference/guidance.py)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)  # what `play` and the server sample with
    follow: FollowConfig = field(default_factory=FollowConfig)
    best_of: int = 1  # continue, respond and accompany plan each chunk as the best of this many candidates
    seed: int = 0


def _quiet(stage: str, done: int, total: int) -> None:
    return None


def _window(notes: Sequence[Note], start: float, end: float) -> list[Note]:
    return [n for n in notes if start <= n.start < end]


def _continuations(engine: Engine, sources: Sequence[Source], config: JudgeConfig, rendering: str, mode: str,
                   progress: Progress) -> dict:
    """continue or respond on one rendering: per-piece rows for real, model and chance, and their table."""
    prompt_s, span_s = (config.prompt_s, config.continuation_s) if mode == "continue" else (config.phrase_s,) * 2
    pieces: list[Piece] = []
    for source in sources:
        found = piece(source, rendering, prompt_s, span_s, config.seed)
        if found is not None:
            pieces.append(found)
        if len(pieces) == config.prompts:
            break
    generate = modes.continue_ if mode == "continue" else modes.respond
    real, model = [], []
    for i, p in enumerate(pieces):
        progress(f"{mode} {rendering}", i, len(pieces))
        sampling = modes.seeded(config.sampling, piece_seed(p.source.id, config.seed))
        events = generate(engine, p, sampling, config.grace_s, config.follow, config.best_of)
        notes = _window(notes_from_events(events, p.end + config.grace_s), p.prompt_end, p.end)
        model.append(_measured(p, notes, events))
        real.append(_measured(p, p.continuation_notes(), p.events))
    chance = [Continuation(c.prompt, c.prompt_end, o.notes, o.start, o.end, o.hanging, o.pedal)
              for c, o in zip(real, real[1:] + real[:1], strict=True)]
    rows = {"real": [continuation_row(c) for c in real], "model": [continuation_row(c) for c in model],
            "chance": [continuation_row(c) for c in chance]} if len(pieces) > 1 else {}
    examples = [_example(p.prompt_notes(), m.notes, p) for p, m in zip(pieces[:3], model[:3], strict=True)]
    return {"pieces": [p.source.id for p in pieces], "table": aggregate(rows) if rows else {},
            "per_piece": per_piece(rows) if rows else {}, "examples": examples}


def _measured(p: Piece, notes: Sequence[Note], events) -> Continuation:
    """A continuation of p's prompt: its notes in [prompt_end, end) and the messages they came from."""
    span = p.end - p.prompt_end
    return Continuation(p.prompt_notes(), p.prompt_end, notes, p.prompt_end, p.end,
                        M.never_released(events, p.prompt_end, p.end),
                        M.pedal_presses_per_minute(crop(events, p.prompt_end, p.end), span))


def _example(prompt: Sequence[Note], answer: Sequence[Note], p: Piece | Duet) -> dict:
    """A prompt/answer pair for the piano rolls (notes as [start, end, pitch, channel]; bar lines in seconds)."""
    end = max([n.end for n in list(prompt) + list(answer)], default=1.0)
    return {"id": p.source.id, "player": [[n.start, n.end, n.pitch, n.channel] for n in prompt],
            "model": [[n.start, n.end, n.pitch, n.channel] for n in answer],
            "bars": p.conductor.bar_starts(end) if p.conductor.metres or p.conductor.tempos else []}


def _duets(engine: Engine, sources: Sequence[Source], config: JudgeConfig, rendering: str, mode: str,
           progress: Progress) -> dict:
    """accompany or harmonize on one rendering. The real accompaniment is measured against the notated melody
    (the performer renders one part at a time), the model against the melody it was given."""
    pairs: list[tuple[Duet, Duet]] = []  # (as given to the model, as notated)
    for source in sources:
        given = duet(source, rendering, config.duet_s, config.seed)
        if given is not None:
            pairs.append((given, given if rendering == NOTATED else duet(source, NOTATED, config.duet_s, 0)))
        if len(pairs) == config.prompts:
            break
    real, model, chance = [], [], []
    for i, (given, notated) in enumerate(pairs):
        progress(f"{mode} {rendering}", i, len(pairs))
        sampling = modes.seeded(config.sampling, piece_seed(given.source.id, config.seed))
        if mode == "accompany":
            events = modes.accompany(engine, given, sampling, config.grace_s, config.follow, config.best_of)
        else:
            events = modes.harmonize(engine, given, sampling, config.voices, config.follow)
        notes = [n for n in notes_from_events(events, given.end + config.grace_s) if n.start < given.end]
        model.append(duet_row(given.melody_notes, notes, given.end, M.never_released(events, 0.0, given.end)))
        real.append(duet_row(notated.melody_notes, notated.accompaniment, notated.end, float("nan")))
        other = pairs[(i + 1) % len(pairs)][1]
        chance.append(duet_row(given.melody_notes, other.accompaniment, given.end, float("nan")))
        if i < 3:
            model[-1]["_example"] = _example(given.melody_notes, notes, given)
    examples = [row.pop("_example") for row in model if "_example" in row]
    rows = {"real": real, "model": model, "chance": chance} if len(pairs) > 1 else {}
    return {"pieces": [g.source.id for g, _ in pairs], "table": aggregate(rows) if rows else {},
            "per_piece": per_piece(rows) if rows else {}, "examples": examples}


def _instruments(engine: Engine, config: JudgeConfig, progress: Progress) -> list[dict]:
    """For each requested set: the share of its instruments that play, and each one's share of the notes."""
    out = []
    for k, names in enumerate(config.instrument_sets):
        progress("instruments", k, len(config.instrument_sets))
        classes = tuple(sorted(instrument_index(n) for n in names))
        playing, shares = [], Counter()
        for run in range(config.instrument_runs):
            sampling = modes.seeded(config.sampling, piece_seed(f"{'+'.join(names)}:{run}", config.seed))
            notes = notes_from_events(modes.from_scratch(engine, "unknown", classes, config.instrument_seconds,
                                                         sampling, config.follow))
            counts = Counter(INSTRUMENT_NAMES[n.instrument] for n in notes)
            playing.append(sum(counts[n] > 0 for n in names) / len(names))
            for name in names:
                shares[name] += counts[name] / max(1, len(notes)) / config.instrument_runs
        out.append({"set": list(names), "playing_share": sum(playing) / len(playing),
                    "all_play_share": sum(p == 1.0 for p in playing) / len(playing),
                    "note_shares": {n: round(shares[n], 4) for n in names}})
    return out


def _style(engine: Engine, test: dict[str, list[Source]], train: dict[str, list[Source]], config: JudgeConfig,
           cache_dir, progress: Progress) -> dict:
    """Fit the classifier on real train pieces; the share recognised per style, real test pieces (as notated and
    as performed) against the model's pieces generated from scratch with that style token and the style's usual
    instruments."""
    usable = {s: v[: config.style_train] for s, v in train.items() if len(v) >= 10 and s != "unknown"}
    if len(usable) < 2:
        return {}
    x, labels = S.training_set([src for v in usable.values() for src in v], cache_dir, config.seed)
    classifier = S.fit(x, labels)
    ceiling = S.cross_validate(x, labels, np.arange(len(labels)) // len(RENDERINGS), seed=config.seed)
    result = {}
    for k, style in enumerate(classifier.styles):
        progress("style", k, len(classifier.styles))
        real = [S.features(notes) for src in test.get(style, [])[: 2 * config.style_pieces]
                for notes in rendered_notes(src, config.seed)]
        made: list[np.ndarray] = []
        for run in range(config.style_pieces):
            sampling = modes.seeded(config.sampling, piece_seed(f"style:{style}:{run}", config.seed))
            events = modes.from_scratch(engine, style, _usual_instruments(usable[style]), config.style_seconds,
                                        sampling, config.follow, config.style_guidance)
            made.append(S.features(notes_from_events(events)))
        result[style] = {"real": _share(classifier, real, style), "real_cv": ceiling.get(style),
                         "model": _share(classifier, made, style), "chance": 1.0 / len(classifier.styles),
                         "model_named": dict(Counter(classifier.predict(np.array(made))).most_common()),
                         "furthest": S.furthest(x[np.array(labels) == style], np.array(made))}
    return {"styles": list(classifier.styles), "per_style": result, "train_pieces": len(labels)}


def _share(classifier: S.StyleClassifier, rows: list, style: str) -> float | None:
    if not rows:
        return None
    return sum(p == style for p in classifier.predict(np.array(rows))) / len(rows)


def _usual_instruments(sources: Sequence[Source]) -> tuple[int, ...]:
    """The instrument set most of these pieces use (of their first 20)."""
    sets = Counter()
    for src in sources[:20]:
        midi = read_source(src)
        if midi is not None:
            sets[tuple(sorted({n.instrument for n in notes_from_events(midi.events)}))] += 1
    return sets.most_common(1)[0][0] if sets else (0,)


def judge(engine: Engine, test: dict[str, list[Source]], config: JudgeConfig,
          train: dict[str, list[Source]] | None = None, cache_dir=None, progress: Progress | None = None) -> dict:
    """Every mode of config.modes on every rendering; the JSON object `musebridge judge --json` writes.
    test: held-out sources by style (taken a style at a time); train: real pieces for the style classifier."""
    progress = progress or _quiet
    sources = interleave(test.values())
    started = time.monotonic()
    result: dict = {"config": _config_json(config), "modes": {}}
    for mode in ("continue", "respond", "accompany", "harmonize"):
        if mode in config.modes:
            run = _continuations if mode in ("continue", "respond") else _duets
            result["modes"][mode] = {r: run(engine, sources, config, r, mode, progress) for r in config.renderings}
    if "instruments" in config.modes:
        result["instruments"] = _instruments(engine, config, progress)
    if "style" in config.modes and train:
        result["style"] = _style(engine, test, train, config, cache_dir, progress)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def _config_json(config: JudgeConfig) -> dict:
    out = {k: v for k, v in config.__dict__.items() if k not in ("sampling", "follow")}
    out["sampling"] = dict(config.sampling.__dict__)
    out["follow"] = dict(config.follow.__dict__)
    return out

