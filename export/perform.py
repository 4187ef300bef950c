"""A rule-based pianist: plays a notated piece (quantized, one velocity, no pedal) the way a pianist would, so
that the training corpus and the quality evaluation's prompts look like what a live player sends.

    perform(events, conductor, config, seed) -> list[Timed]      timed messages of a file (seconds)
    perform_file(path, config, seed) -> list[Timed]              read_midi + perform

The rules follow the KTH rule system (Friberg, Bresin & Sundberg 2006) and the studies named in
docs/performer.md: phrase arches of tempo and dynamics (Todd 1992), a final ritardando (Friberg & Sundberg
1999), metrical accents, a louder and leading melody (Goebl 2001), articulation drawn per phrase (Bresin &
Battel 2000), high loud and duration contrast, and a legato pedal changed with the harmony (Repp 1996).

Timing is applied in one place: a warp from score position (quarter notes) to performed time (seconds), built
from every tempo rule at once and strictly increasing, so the rules compose and note order is kept. Onset
asynchrony and jitter move each note by less than half the distance to the neighbouring onsets. The output is
piano only (channel 0, program 0), drums dropped, sorted by time, every note released and the pedal up at the
end. The same seed gives the same performance; the piece's dynamic level, tempo and articulation are drawn
from the seed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import mido
import numpy as np
from musebridge.engine.tokens.codec import SUSTAIN_CC, Timed
from musebridge.engine.tokens.midifile import Conductor, read_midi

from .perform_score import (
    Clock,
    MetreGrid,
    Score,
    breath_points,
    harmony_segments,
    make_clock,
    melody_mask,
    metre_grid,
    metric_weight,
    phrase_bounds,
    read_score,
    sounding,
)

log = logging.getLogger(__name__)

CELLS_PER_QUARTER = 48  # resolution of the time warp (a 64th-note triplet)
MIN_NOTE_S = 0.02  # seconds: the shortest key press
RELEASE_GAP_S = 0.01  # seconds: a key is released at least this long before it is struck again


@dataclass(frozen=True)
class PerformerConfig:
    """Every rule's strength. Velocities are MIDI velocity units (1-127), times seconds, tempo factors ratios.

    Piece: level (lo, hi): base velocity, drawn uniformly (about pp 40 .. f 92); tempo (lo, hi): factor on the
    score's tempo, drawn log-uniformly.
    Phrases: phrase_quarters: nominal phrase length, rounded to 2-4 bars; long_note: a melody note this many
    times the median melody inter-onset interval (and at least a beat) ends a phrase.
    Phrase arch (Todd 1992): arch_tempo: tempo +- this fraction at the arch's peak / the phrase's ends;
    arch_velocity: velocity +- likewise; arch_peak: the peak's place in the phrase (0-1, +-0.1 per phrase);
    arch_spread: each phrase's arch is scaled by 1 +- up to this. A second, slower arch spans each section of
    section_phrases phrases, section_weight times as strong.
    Final ritardando (Friberg & Sundberg 1999): over the last rit_bars bars to the last onset, tempo falls to
    rit_final of its value along v(x) = (1 + (rit_final**q - 1) x) ** (1/q), q = rit_curve.
    accent: velocity added on a downbeat (weight 1; the middle of a bar 0.5, other beats 0.25, half beats 0.1).
    Melody (Goebl 2001): melody_velocity added to the skyline note where other notes sound with it;
    melody_lead_s: it sounds this much earlier than the other notes of its chord.
    Asynchrony: onset_jitter_s: standard deviation of each chord's time; chord_jitter_s: of each note within
    its chord; velocity_jitter: standard deviation of each velocity.
    high_loud: velocity per octave above middle C (less below). Duration contrast: contrast_velocity: velocity
    added to a note 4 times as long as the piece's median written duration and taken from one 4 times as
    short (in proportion to the log of the ratio between); contrast_duration: such a short note sounds this
    fraction shorter. score_dynamics: weight of the written velocities (against their median), where the file
    has dynamics.
    Articulation (Bresin & Battel 2000): a value from -1 (detached) to 1 (legato) per phrase: the piece's mean
    drawn from `articulation`, each phrase's +- articulation_spread (standard deviation). At 1 a note is held
    legato_overlap of its length longer (at most legato_max_s); at -1 it keeps detached_ratio of its length.
    Pedal (Repp 1996): pedal: use it at all; pressed pedal_down_s after a harmony's onset, lifted pedal_up_s
    before the next; not pressed for less than pedal_min_s, nor over a single line; detached phrases are
    pedalled with probability 1 + articulation, and never when their median inter-onset interval is under
    pedal_fast_s. Harmonies are compared per beat (per half bar or bar where a beat lasts less than
    harmony_min_s performed seconds): a window has a new one when another triad fits it better than the
    current one by more than harmony_margin of its sound, or when its bass moves outside the current triad.
    """

    level: tuple[float, float] = (40.0, 92.0)
    tempo: tuple[float, float] = (0.85, 1.15)
    phrase_quarters: float = 8.0
    long_note: float = 2.0
    arch_tempo: float = 0.06
    arch_velocity: float = 7.0
    arch_peak: float = 0.45
    arch_spread: float = 0.4
    section_phrases: int = 2
    section_weight: float = 0.5
    rit_bars: int = 2
    rit_final: float = 0.6
    rit_curve: float = 2.0
    accent: float = 10.0
    melody_velocity: float = 10.0
    melody_lead_s: float = 0.02
    onset_jitter_s: float = 0.01
    chord_jitter_s: float = 0.006
    velocity_jitter: float = 3.0
    high_loud: float = 2.0
    contrast_velocity: float = 3.0
    contrast_duration: float = 0.15
    score_dynamics: float = 0.5
    articulation: tuple[float, float] = (-0.4, 0.8)
    articulation_spread: float = 0.3
    legato_overlap: float = 0.15
    legato_max_s: float = 0.06
    detached_ratio: float = 0.55
    pedal: bool = True
    pedal_down_s: float = 0.08
    pedal_up_s: float = 0.02
    pedal_min_s: float = 0.1
    pedal_fast_s: float = 0.2
    harmony_min_s: float = 0.3
    harmony_margin: float = 0.3

    def __post_init__(self) -> None:
        checks = {
            "level within 1..127": 1 <= self.level[0] <= self.level[1] <= 127,
            "tempo factors > 0": 0 < self.tempo[0] <= self.tempo[1],
            "articulation within -1..1": -1 <= self.articulation[0] <= self.articulation[1] <= 1,
            "0 < rit_final, rit_curve": self.rit_final > 0 and self.rit_curve > 0,
            "rit_bars >= 1": self.rit_bars >= 1,
            "0 < detached_ratio <= 1": 0 < self.detached_ratio <= 1,
            "0 <= arch_spread < 1": 0 <= self.arch_spread < 1,
            "section_phrases >= 1, section_weight >= 0": self.section_phrases >= 1 and self.section_weight >= 0,
            "0 <= arch_tempo * (1 + arch_spread) * (1 + section_weight) < 1 (tempo stays positive)":
                0 <= self.arch_tempo * (1 + self.arch_spread) * (1 + self.section_weight) < 1,
            "0 < arch_peak < 1": 0 < self.arch_peak < 1,
            "phrase_quarters > 0": self.phrase_quarters > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"PerformerConfig: need {', '.join(bad)}")


@dataclass(frozen=True)
class _Shape:
    """What the seed draws: base velocity, tempo factor, per phrase the arch's scale and peak and the
    articulation (-1 detached .. 1 legato), per section the arch's scale."""

    level: float
    tempo: float
    arch: np.ndarray
    peak: np.ndarray
    articulation: np.ndarray
    section: np.ndarray


@dataclass(frozen=True)
class Warp:
    """Score position (quarter notes) -> performed time (seconds): piecewise linear, strictly increasing."""

    quarters: np.ndarray
    seconds: np.ndarray

    def __call__(self, q) -> np.ndarray:
        return np.interp(q, self.quarters, self.seconds)


def perform(
    events: Sequence[Timed], conductor: Conductor, config: PerformerConfig = PerformerConfig(), seed: int = 0
) -> list[Timed]:
    """Play timed messages (seconds; a file's, with its tempo map and metre) as a pianist: see the module."""
    events = list(events)
    clock = make_clock(conductor, max((t for t, _ in events), default=0.0))
    score = read_score(events, clock)
    program = Timed(0.0, mido.Message("program_change", channel=0, program=0))
    if not len(score):
        return [program]
    rng = np.random.default_rng(seed)
    grid = metre_grid(conductor, clock, float(score.onsets[0]), float(score.end.max()))
    melody = melody_mask(score)
    breaths = breath_points(score, grid, melody, config.long_note)
    bounds = phrase_bounds(score, grid, breaths, config.phrase_quarters)
    shape = _draw_shape(config, rng, len(bounds) - 1)
    warp = _warp(score, grid, clock, bounds, shape, config)
    onset = _onsets(score, warp, melody, config, rng)
    velocity = _velocities(score, grid, melody, bounds, shape, config, rng)
    release = _releases(score, warp, onset, bounds, shape, config)
    pedal = _pedal(score, grid, clock, warp, bounds, shape, onset, release, config, rng) if config.pedal else []
    log.debug("performed %d notes: level %.0f, tempo x%.2f, %d phrases, %d pedal presses",
              len(score), shape.level, shape.tempo, len(bounds) - 1, len(pedal))
    return _assemble(program, score, onset, release, velocity, pedal)


def perform_file(
    path: str | os.PathLike, config: PerformerConfig = PerformerConfig(), seed: int = 0
) -> list[Timed]:
    """read_midi(path) performed (MidiFileError, naming the file, if it cannot be read)."""
    midi = read_midi(path)
    return perform(midi.events, midi.conductor, config, seed)


def _draw_shape(config: PerformerConfig, rng: np.random.Generator, phrases: int) -> _Shape:
    level = float(rng.uniform(*config.level))
    tempo = float(np.exp(rng.uniform(*np.log(config.tempo))))
    arch = 1 + config.arch_spread * rng.uniform(-1, 1, phrases)
    peak = np.clip(config.arch_peak + rng.uniform(-0.1, 0.1, phrases), 0.1, 0.9)
    mean = rng.uniform(*config.articulation)
    articulation = np.clip(mean + rng.normal(0, config.articulation_spread, phrases), -1, 1)
    section = 1 + config.arch_spread * rng.uniform(-1, 1, -(-phrases // config.section_phrases))
    return _Shape(level, tempo, arch, peak, articulation, section)


def _arch(q: np.ndarray, bounds: np.ndarray, peak: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(phrase index, arch value) at positions q (quarters): the arch is 1 at the phrase's peak and falls as a
    parabola on each side to -1 at its ends (and outside the phrases)."""
    k = np.clip(np.searchsorted(bounds, q, "right") - 1, 0, len(bounds) - 2)
    p = np.clip((q - bounds[k]) / (bounds[k + 1] - bounds[k]), 0.0, 1.0)
    top = peak[k]
    x = np.where(p <= top, (top - p) / top, (p - top) / (1 - top))
    return k, 1 - 2 * x**2


def _contour(q: np.ndarray, bounds: np.ndarray, shape: _Shape, config: PerformerConfig
             ) -> tuple[np.ndarray, np.ndarray]:
    """(phrase index, contour) at positions q (quarters): each phrase's arch times its drawn scale, plus
    section_weight times the arch over its section (Todd's arches at two levels of the phrase hierarchy)."""
    k, phrase = _arch(q, bounds, shape.peak)
    sections = bounds[:: config.section_phrases]
    if sections[-1] != bounds[-1]:
        sections = np.append(sections, bounds[-1])
    j, section = _arch(q, sections, np.full(len(sections) - 1, config.arch_peak))
    return k, shape.arch[k] * phrase + config.section_weight * shape.section[j] * section


def _ritardando(q: np.ndarray, grid: MetreGrid, score: Score, config: PerformerConfig) -> np.ndarray:
    """Tempo factor of the final ritardando at positions q (quarters): 1 before it, rit_final from the last
    onset on (Friberg & Sundberg 1999, tempo against score position)."""
    last = float(score.onsets[-1])
    start = grid.bar_start(max(int(grid.bar_of(last)) - config.rit_bars + 1, 0))
    if last - start <= 0:
        start = grid.bar_start(max(int(grid.bar_of(last)) - config.rit_bars, 0))
    x = np.clip((q - start) / max(last - start, 1e-9), 0.0, 1.0)
    w, curve = config.rit_final, config.rit_curve
    return (1 + (w**curve - 1) * x) ** (1 / curve)


def _warp(score: Score, grid: MetreGrid, clock: Clock, bounds: np.ndarray, shape: _Shape,
          config: PerformerConfig) -> Warp:
    """Every tempo rule at once: the score's tempo map, the drawn tempo, the phrase arches, the ritardando."""
    stop = float(score.end.max()) + 1.0
    q = np.linspace(0.0, stop, int(np.ceil(stop * CELLS_PER_QUARTER)) + 1)
    mid = (q[1:] + q[:-1]) / 2
    _, contour = _contour(mid, bounds, shape, config)
    speed = shape.tempo * (1 + config.arch_tempo * contour) * _ritardando(mid, grid, score, config)
    seconds = np.concatenate(([0.0], np.cumsum(np.diff(clock.to_seconds(q)) / speed)))
    return Warp(q, seconds)


def _onsets(score: Score, warp: Warp, melody: np.ndarray, config: PerformerConfig,
            rng: np.random.Generator) -> np.ndarray:
    """Performed onsets (seconds): each chord's warped time, moved by its jitter, each note by its own and the
    melody's lead, by less than half the distance to the chords before and after (so order is kept)."""
    chord = warp(score.onsets)
    gap = np.diff(chord)
    room = 0.45 * np.minimum(np.append(np.inf, gap), np.append(gap, np.inf))[score.group]
    shift = rng.normal(0, config.onset_jitter_s, len(chord))[score.group]
    shift = shift + rng.normal(0, config.chord_jitter_s, len(score))
    lead = melody & (np.bincount(score.group)[score.group] > 1)
    shift = shift - np.where(lead, config.melody_lead_s, 0.0)
    return chord[score.group] + np.clip(shift, -room, room)


def _velocities(score: Score, grid: MetreGrid, melody: np.ndarray, bounds: np.ndarray, shape: _Shape,
                config: PerformerConfig, rng: np.random.Generator) -> np.ndarray:
    """MIDI velocities 1-127: the drawn level plus every dynamics rule."""
    _, contour = _contour(score.start, bounds, shape, config)
    written = score.end - score.start
    contrast = np.clip(np.log2(written / np.median(written)), -2, 2) / 2
    velocity = (
        shape.level
        + config.arch_velocity * contour
        + config.accent * metric_weight(grid, score.start)
        + config.melody_velocity * (melody & (sounding(score)[score.group] > 1))
        + config.high_loud * (score.pitch - 60) / 12
        + config.contrast_velocity * contrast
        + config.score_dynamics * (score.velocity - np.median(score.velocity))
        + rng.normal(0, config.velocity_jitter, len(score))
    )
    return np.clip(np.round(velocity), 1, 127).astype(int)


def _releases(score: Score, warp: Warp, onset: np.ndarray, bounds: np.ndarray, shape: _Shape,
              config: PerformerConfig) -> np.ndarray:
    """Performed key releases (seconds): the warped written length, shaped by the phrase's articulation and
    duration contrast, at least MIN_NOTE_S, and released before the same key is struck again."""
    k, _ = _arch(score.start, bounds, shape.peak)
    a = shape.articulation[k]
    length = warp(score.end) - warp(score.start)
    legato = length + a * np.minimum(config.legato_overlap * length, config.legato_max_s)
    detached = length * (1 + a * (1 - config.detached_ratio))
    written = score.end - score.start
    short = np.clip(np.log2(written / np.median(written)), -2, 0) / 2
    length = np.where(a >= 0, legato, detached) * (1 + config.contrast_duration * short)
    release = onset + np.maximum(length, MIN_NOTE_S)
    order = np.lexsort((onset, score.pitch))
    same = score.pitch[order][1:] == score.pitch[order][:-1]
    now, then = order[:-1][same], order[1:][same]
    gap = np.minimum(RELEASE_GAP_S, (onset[then] - onset[now]) / 2)
    release[now] = np.minimum(release[now], onset[then] - gap)
    return release


def _pedal(score: Score, grid: MetreGrid, clock: Clock, warp: Warp, bounds: np.ndarray, shape: _Shape,
           onset: np.ndarray, release: np.ndarray, config: PerformerConfig,
           rng: np.random.Generator) -> list[tuple[float, float]]:
    """(down, up) times in seconds of the sustain pedal: one press per harmony where two or more notes sound
    together, down pedal_down_s after its last onset, up pedal_up_s before the next harmony's first, at a
    rest's start, or with the last key."""
    starts = np.searchsorted(score.group, np.arange(len(score.onsets)))
    first, last = np.minimum.reduceat(onset, starts), np.maximum.reduceat(onset, starts)
    phrase, _ = _arch(score.onsets, bounds, shape.peak)
    fast = np.array([_median_ioi(first[phrase == k]) < config.pedal_fast_s for k in range(len(bounds) - 1)])
    a = shape.articulation
    pedalled = (a >= 0) | (~fast & (rng.random(len(a)) < 1 + a))
    together = sounding(score)
    presses = []
    for a_q, b_q, at_change in harmony_segments(score, grid, clock, config.harmony_min_s * shape.tempo,
                                                config.harmony_margin):
        g, h = np.searchsorted(score.onsets, [a_q - 1e-6, b_q - 1e-6])
        if not pedalled[phrase[g]] or together[g:h].max() < 2:  # a single line is legato from the fingers
            continue
        down = last[g] + config.pedal_down_s
        if at_change:
            up = first[h] - config.pedal_up_s
        else:
            up = float(release.max()) if b_q >= score.end.max() - 1e-6 else float(warp(b_q))
        if up - down >= config.pedal_min_s:
            presses.append((float(down), float(up)))
    return presses


def _median_ioi(times: np.ndarray) -> float:
    ioi = np.diff(times)
    return float(np.median(ioi)) if len(ioi) else np.inf


def _assemble(program: Timed, score: Score, onset: np.ndarray, release: np.ndarray, velocity: np.ndarray,
              pedal: list[tuple[float, float]]) -> list[Timed]:
    """Timed messages sorted by time (ties: releases, pedal, then strikes), shifted so none is before 0."""
    shift = max(0.0, -float(onset.min()))
    items = []
    for on, off, pitch, vel in zip(onset, release, score.pitch.tolist(), velocity.tolist(), strict=True):
        items.append((float(on) + shift, 3, pitch, mido.Message("note_on", channel=0, note=pitch, velocity=vel)))
        items.append((float(off) + shift, 1, pitch, mido.Message("note_off", channel=0, note=pitch, velocity=0)))
    for down, up in pedal:
        for time_s, value in ((down, 127), (up, 0)):
            msg = mido.Message("control_change", channel=0, control=SUSTAIN_CC, value=value)
            items.append((time_s + shift, 2, 0, msg))
    items.sort(key=lambda item: item[:3])
    return [program] + [Timed(t, msg) for t, _, _, msg in items]
