"""The performer (export/perform.py) on hand-made scores: determinism, no hanging notes, order kept, and each
rule visible in the output (melody, metrical accents, final ritardando, pedal with the harmony, tempo map and
metre). The melody, accent, arch and ritardando tests also switch their rule off and see the effect go."""

from __future__ import annotations

import mido
import numpy as np
import pytest
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import Conductor, MetreChange, TempoChange, read_midi, write_midi
from musebridge.export.perform import PerformerConfig, perform

from musebridge.cli import main

LEGATO = PerformerConfig(articulation=(0.5, 0.5), articulation_spread=0.0)  # every phrase pedalled
C, F, G = (48, 64, 67, 72), (53, 65, 69, 72), (55, 62, 67, 71)  # root-position triads, melody on top


def _events(notes, velocity=80) -> list[Timed]:
    """Timed messages of (start s, end s, pitch, channel) notes, releases before strikes at equal times."""
    items = []
    for start, end, pitch, channel in notes:
        items.append((start, 1, mido.Message("note_on", channel=channel, note=pitch, velocity=velocity)))
        items.append((end, 0, mido.Message("note_off", channel=channel, note=pitch)))
    items.sort(key=lambda item: item[:2])
    return [Timed(t, msg) for t, _, msg in items]


def _chords(chords, beat_s=0.5, start_s=0.0) -> list[Timed]:
    """One chord per beat, each voice on its own channel (bass on channel 3, melody on channel 0)."""
    notes = []
    for i, chord in enumerate(chords):
        t = start_s + i * beat_s
        notes += [(t, t + beat_s, p, len(chord) - 1 - v) for v, p in enumerate(chord)]
    return _events(notes)


def _played(events) -> list[tuple[float, float, int, int]]:
    """(on, off, pitch, velocity) sorted by onset; fails if a key is struck while down or left down."""
    down: dict[int, tuple[float, int]] = {}
    notes = []
    for t, msg in events:
        if msg.type == "note_on" and msg.velocity > 0:
            assert msg.note not in down, f"key {msg.note} struck again at {t:.3f} while down"
            down[msg.note] = (t, msg.velocity)
        elif msg.type in ("note_on", "note_off"):
            on, velocity = down.pop(msg.note)
            notes.append((on, t, msg.note, velocity))
    assert not down, f"keys left down: {sorted(down)}"
    return sorted(notes)


def _pedal(events) -> list[tuple[float, int]]:
    return [(t, msg.value) for t, msg in events if msg.type == "control_change" and msg.control == 64]


def _progression(bars=8) -> list[Timed]:
    return _chords([C, F, G, C] * bars)


def test_same_seed_same_performance_and_other_seeds_differ_within_musical_ranges():
    score = _progression()
    first = perform(score, Conductor(), seed=7)
    assert [(t, str(m)) for t, m in first] == [(t, str(m)) for t, m in perform(score, Conductor(), seed=7)]
    levels, lengths = [], []
    for seed in range(6):
        notes = _played(perform(score, Conductor(), seed=seed))
        levels.append(np.mean([n[3] for n in notes]))
        lengths.append(notes[-1][0])
    assert len({round(x, 3) for x in levels}) == 6 and len({round(x, 3) for x in lengths}) == 6
    assert 30 < min(levels) and max(levels) < 110 and max(levels) - min(levels) > 15  # pp..f across pieces
    assert 0.7 * 15.5 < min(lengths) and max(lengths) < 1.6 * 15.5  # the score's last onset is at 15.5 s


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_piano_only_every_key_released_and_the_pedal_up_at_the_end(seed):
    notes = [(i * 0.25, i * 0.25 + 0.2, 60 + i % 12, 1) for i in range(32)]
    notes += [(i * 0.5, i * 0.5 + 1.0, 48, 2) for i in range(16)]  # overlapping repeats of one key
    notes += [(i * 0.5, i * 0.5 + 0.1, 36, 9) for i in range(16)]  # drums: dropped
    out = perform(_events(notes), Conductor(), seed=seed)
    assert out[0].time == 0 and out[0].msg.type == "program_change" and out[0].msg.program == 0
    assert [t for t, _ in out] == sorted(t for t, _ in out) and out[0].time >= 0
    assert {m.channel for _, m in out} == {0}
    played = _played(out)
    assert len(played) == 48 and all(1 <= n[3] <= 127 and n[1] > n[0] for n in played)
    pedal = _pedal(out)
    assert pedal and [v for _, v in pedal] == [127, 0] * (len(pedal) // 2)
    assert pedal[-1][0] >= max(n[1] for n in played) - 1e-9


@pytest.mark.parametrize("seed", range(4))
def test_order_within_each_voice_is_kept_and_durations_are_positive(seed):
    """Voices in separate registers: a run of 32nd notes at 160 bpm (47 ms apart: the jitter and the melody's
    lead would swap them if unbounded), repeated keys under it, a held bass."""
    q = 60 / 160
    run = [(i * q / 8, (i + 1) * q / 8, 72 + (i * 5) % 12, 0) for i in range(64)]
    inner = [(i * q / 2, (i + 1) * q / 2, 60 + 2 * (i // 2 % 3), 1) for i in range(16)]
    bass = [(i * q * 2, (i + 1) * q * 2, 36 + i % 5, 2) for i in range(4)]
    out = _played(perform(_events(run + inner + bass), Conductor((TempoChange(0.0, 375000),)), seed=seed))
    assert all(off > on for on, off, _, _ in out)
    for voice, (lo, hi) in zip((run, inner, bass), ((72, 84), (60, 65), (36, 48)), strict=True):
        written = [p for _, _, p, _ in sorted(voice, key=lambda n: (n[0], n[2]))]
        assert [p for _, _, p, _ in out if lo <= p < hi] == written


def _chord_figures(config: PerformerConfig) -> tuple[float, float]:
    """Mean (melody - inner voices) velocity and onset (s) over the chords of the progression, 3 seeds."""
    velocity, onset = [], []
    for seed in range(3):
        notes = _played(perform(_progression(), Conductor(), config, seed))
        for i in range(0, len(notes), 4):
            chord = sorted(notes[i:i + 4], key=lambda n: n[2])
            assert len({round(n[0] * 4) for n in chord}) <= 2  # a chord, not two
            velocity.append(chord[-1][3] - np.mean([n[3] for n in chord[1:3]]))
            onset.append(chord[-1][0] - np.mean([n[0] for n in chord[1:3]]))
    return float(np.mean(velocity)), float(np.mean(onset))


def test_the_melody_is_louder_than_the_inner_voices_and_leads_them():
    louder, lead = _chord_figures(PerformerConfig(high_loud=0.0))
    assert louder > 6 and -0.03 < lead < -0.01
    louder, lead = _chord_figures(PerformerConfig(high_loud=0.0, melody_velocity=0.0, melody_lead_s=0.0))
    assert abs(louder) < 2 and abs(lead) < 0.004


def _by_beat(notes, beats_per_bar, offset=0):
    """Velocity means of one-note-per-eighth notes at beat 1 and at the off-beat eighths."""
    velocity = np.array([n[3] for n in notes])
    index = np.arange(len(notes)) - offset
    return velocity[index % (2 * beats_per_bar) == 0].mean(), velocity[index % 2 == 1].mean()


def test_downbeats_are_louder_than_offbeats_in_4_4_counted_from_the_first_note():
    """No time signature: 4/4 from the first note, which comes half a beat after the file's start."""
    eighths = [(0.25 + i * 0.25, 0.5 + i * 0.25, 67 + (i % 3), 0) for i in range(8 * 16)]
    figures = {}
    for name, config in (("on", PerformerConfig()), ("off", PerformerConfig(accent=0.0))):
        down, off = np.mean([_by_beat(_played(perform(_events(eighths), Conductor(), config, s)), 4)
                             for s in range(3)], axis=0)
        figures[name] = down - off
    assert figures["on"] > 4 and figures["off"] < 1


def _ioi_ratio(config: PerformerConfig) -> float:
    """Mean inter-onset interval of the last bar over that of bars 3-6, quarter notes over 8 bars, 3 seeds."""
    quarters = [(i * 0.5, i * 0.5 + 0.5, 60 + (i % 5), 0) for i in range(32)]
    ratios = []
    for seed in range(3):
        onsets = np.array([n[0] for n in _played(perform(_events(quarters), Conductor(), config, seed))])
        ioi = np.diff(onsets)
        ratios.append(ioi[28:].mean() / ioi[8:24].mean())
    return float(np.mean(ratios))


def test_a_final_ritardando_lengthens_the_last_bar():
    assert _ioi_ratio(PerformerConfig()) > 1.3
    assert _ioi_ratio(PerformerConfig(rit_final=1.0)) < 1.15


def _arch_figures(config: PerformerConfig) -> tuple[float, float]:
    """Quarter notes in 4/4 over 14 bars, in 2-bar phrases: mean velocity and inter-onset interval in the middle
    of a phrase (its beats 3-6) minus those at its ends (beats 1, 8), the last phrase (ritardando) left out."""
    quarters = [(i * 0.5, i * 0.5 + 0.5, 60 + (i % 5), 0) for i in range(56)]
    louder, faster = [], []
    for seed in range(3):
        notes = _played(perform(_events(quarters), Conductor(), config, seed))
        velocity = np.array([n[3] for n in notes[:48]], float).reshape(6, 8)
        ioi = np.diff([n[0] for n in notes])[:48].reshape(6, 8)  # ioi[:, 7]: into the next phrase
        louder.append(velocity[:, 2:6].mean() - velocity[:, [0, 7]].mean())
        faster.append(ioi[:, [0, 7]].mean() - ioi[:, 2:5].mean())
    return float(np.mean(louder)), float(np.mean(faster))


def test_phrase_arches_are_louder_and_faster_in_the_middle_of_a_phrase():
    louder, faster = _arch_figures(PerformerConfig(accent=0.0))
    assert louder > 6 and faster > 0.03
    louder, faster = _arch_figures(PerformerConfig(accent=0.0, arch_velocity=0.0, arch_tempo=0.0))
    assert abs(louder) < 2 and abs(faster) < 0.01


def test_articulation_overlaps_in_legato_and_shortens_when_detached():
    line = _events([(i * 0.5, i * 0.5 + 0.5, 60 + (i * 7) % 12, 0) for i in range(32)])
    for articulation, check in (((1.0, 1.0), lambda on, off, nxt: off > nxt),
                                ((-1.0, -1.0), lambda on, off, nxt: off - on < 0.7 * (nxt - on))):
        config = PerformerConfig(articulation=articulation, articulation_spread=0.0)
        notes = _played(perform(line, Conductor(), config, seed=1))
        pairs = [(a[0], a[1], b[0]) for a, b in zip(notes[:-1], notes[1:], strict=True)]
        assert all(check(*pair) for pair in pairs), articulation


def test_the_pedal_is_changed_at_each_new_harmony_and_held_through_one():
    """C C F F G G C, a beat each: a lift between the two chords of each change, none within C C, F F, G G."""
    progression = [C, C, F, F, G, G, C]
    for seed in range(4):
        out = perform(_chords(progression), Conductor(), LEGATO, seed)
        notes = _played(out)
        onsets = [[n[0] for n in notes[4 * i:4 * i + 4]] for i in range(len(progression))]
        ups = [t for t, v in _pedal(out) if v == 0]
        downs = [t for t, v in _pedal(out) if v == 127]
        for i in range(len(progression) - 1):
            lifts = [t for t in ups if min(onsets[i]) < t <= max(onsets[i + 1])]
            if progression[i] == progression[i + 1]:
                assert not lifts, (seed, i)
            else:
                assert len(lifts) == 1 and max(onsets[i + 1]) < min(t for t in downs if t > lifts[0]), (seed, i)
    held = perform(_chords([C] * 7), Conductor(), LEGATO, 0)
    assert [v for _, v in _pedal(held)] == [127, 0]


def test_a_rest_lifts_the_pedal():
    score = _events([(i * 0.5, i * 0.5 + 0.5, p, v) for i in (0, 1, 4, 5) for v, p in enumerate(C)])
    out = perform(score, Conductor(), LEGATO, 0)
    played, pedal = _played(out), _pedal(out)
    rest = (max(n[1] for n in played[:8]), min(n[0] for n in played[8:]))
    assert not any(rest[0] < t < rest[1] and v == 127 for t, v in pedal)
    assert any(played[0][0] < t <= rest[1] and v == 0 for t, v in pedal)


def test_a_tempo_map_and_three_four_metre_are_followed():
    """A pickup beat, then 3/4 at 90 quarters a minute for 6 bars and 60 for 6 more: accents every 3 beats from
    the bar after the pickup, and beats half as long again after the change."""
    fast, slow = 60 / 90, 1.0
    conductor = Conductor((TempoChange(0.0, 666667), TempoChange(19 * fast, 1_000_000)),
                          (MetreChange(0.0, 1, 4), MetreChange(fast, 3, 4)))
    beats = [i * fast for i in range(19)] + [19 * fast + i * slow for i in range(18)]
    score = _events([(t, t + 0.3, 62 + i % 4, 0) for i, t in enumerate(beats)])
    ratios, accents = [], []
    for seed in range(3):
        notes = _played(perform(score, conductor, seed=seed))
        onsets, velocity = np.array([n[0] for n in notes]), np.array([n[3] for n in notes])
        ioi = np.diff(onsets)
        ratios.append(ioi[22:31].mean() / ioi[4:13].mean())
        one = (np.arange(len(notes)) % 3 == 1)  # beat 1: the note after the pickup, then every third
        accents.append(velocity[one].mean() - velocity[~one].mean())
    assert 1.3 < np.mean(ratios) < 1.75 and np.mean(accents) > 4


def test_cli_writes_a_performance_and_refuses_bad_input(tmp_path, capsys):
    src, out = tmp_path / "in.mid", tmp_path / "out.mid"
    write_midi(_progression(2), src)
    assert main(["perform", str(src), str(out), "--seed", "3"]) == 0
    back = _played(read_midi(out).events)
    assert len(back) == 32
    (tmp_path / "bad.mid").write_bytes(b"not midi")
    assert main(["perform", str(tmp_path / "bad.mid"), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "bad.mid" in err and len(err.splitlines()) == 1
