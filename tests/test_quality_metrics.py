"""The quality figures on hand-made notes whose answers are known."""

from __future__ import annotations

import math

import mido
import pytest
from musebridge.engine.tokens.codec import Timed
from musebridge.engine.tokens.midifile import Note
from musebridge.export.quality import metrics as M


def note(start, end, pitch, velocity=80, channel=0):
    return Note(start, end, pitch, velocity, channel, 0)


C_MAJOR = [note(i * 0.5, i * 0.5 + 0.5, p) for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]


def test_a_c_major_scale_is_in_the_key_of_a_c_major_scale_and_chromatic_notes_are_not():
    assert M.in_key_share(C_MAJOR, C_MAJOR) == 1.0
    chromatic = [note(i, i + 1, 60 + i) for i in range(12)]
    assert M.in_key_share(chromatic, C_MAJOR) == pytest.approx(7 / 12)
    assert M.in_key_share([note(0, 1, 61), note(1, 2, 66)], C_MAJOR) == 0.0


def test_drums_have_no_pitch_class():
    drums = [note(0, 0.1, 61, channel=9)]
    assert math.isnan(M.in_key_share(drums, C_MAJOR))


def test_two_notes_a_fifth_apart_are_consonant_a_second_apart_dissonant():
    melody = [note(0, 1, 67)]
    assert M.consonance(melody, [note(0, 1, 60)]) == 1.0
    assert M.consonance(melody, [note(0, 1, 66)]) == 0.0
    # weighted by the time they overlap: a fifth for 3 s, a tritone for 1 s
    assert M.consonance([note(0, 4, 67)], [note(0, 3, 60), note(3, 4, 61)]) == pytest.approx(0.75)
    assert math.isnan(M.consonance(melody, [note(2, 3, 60)]))  # never together


def test_a_cluster_is_dissonant_a_triad_is_not_and_a_line_has_no_intervals():
    triad = [note(0, 2, p) for p in (60, 64, 67)]
    assert M.dissonance(triad) == 0.0
    cluster = [note(0, 2, p) for p in (60, 62, 64)]  # two seconds and a third
    assert M.dissonance(cluster) == pytest.approx(2 / 3)
    # a legato line: each note held 0.1 s into the next, a second above: all the overlap is dissonant
    legato = [note(i * 0.5, i * 0.5 + 0.6, 60 + 2 * i) for i in range(4)]
    assert M.dissonance(legato) == pytest.approx(1.0)
    assert math.isnan(M.dissonance(C_MAJOR))  # a line played exactly, never two notes at once
    # weighted by the time they overlap; drums are not pitched
    assert M.dissonance([note(0, 4, 60), note(0, 3, 67), note(3, 4, 61), note(0, 4, 61, channel=9)]) == \
        pytest.approx(0.25)


def test_a_note_without_note_off_is_never_released():
    on = mido.Message("note_on", note=60, velocity=80)
    events = [Timed(0.0, on), Timed(1.0, on.copy(note=62)), Timed(1.5, mido.Message("note_off", note=62))]
    assert M.never_released(events) == 0.5
    events.append(Timed(2.0, mido.Message("note_on", note=60, velocity=0)))
    assert M.never_released(events) == 0.0
    # a note-off for another channel does not release it
    assert M.never_released([Timed(0, on), Timed(1, mido.Message("note_off", channel=1, note=60))]) == 1.0
    # only note-ons inside the window count
    assert math.isnan(M.never_released([Timed(0, on)], start=1.0))


def test_polyphony_silence_and_long_notes():
    triad = [note(0, 2, 60), note(0, 2, 64), note(1, 2, 67)]
    assert M.polyphony(triad, 0, 4) == pytest.approx(2.5)
    assert M.silence_share(triad, 0, 4) == pytest.approx(0.5)
    assert M.long_share([note(0, 5, 60), note(0, 1, 62)]) == 0.5


def test_inter_onset_histograms_of_the_same_rhythm_overlap_fully_and_of_different_rhythms_not():
    eighths = [note(i * 0.25, i * 0.25 + 0.2, 60) for i in range(16)]
    chords = [note(i * 0.25, i * 0.25 + 0.2, 64) for i in range(16)] + eighths  # chords count once
    wholes = [note(i * 2.0, i * 2.0 + 2, 60) for i in range(4)]
    assert M.overlap(M.ioi_histogram(eighths), M.ioi_histogram(chords)) == pytest.approx(1.0)
    assert M.overlap(M.ioi_histogram(eighths), M.ioi_histogram(wholes)) == 0.0


def test_onset_alignment_counts_onsets_within_50_ms():
    melody = [note(t, t + 0.5, 72) for t in (0.0, 1.0, 2.0)]
    acc = [note(0.02, 1, 60), note(0.5, 1, 62), note(1.04, 2, 64), note(1.2, 2, 65)]
    assert M.onset_alignment(melody, acc) == pytest.approx(0.5)


def test_density_register_dynamics_and_correlation():
    assert M.density(C_MAJOR, 4.0) == 2.0
    assert M.register([note(0, 1, 60), note(0, 1, 70)]) == 65
    assert M.dynamics([note(0, 1, 60, 40), note(0, 1, 60, 80)]) == 60
    assert M.correlation([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert M.correlation([1, 2, 3, 4], [8, 6, 4, 2]) == pytest.approx(-1.0)
    assert math.isnan(M.correlation([1, 2, 3], [5, 5, 5]))


def test_pedal_presses_are_counted_once_per_press():
    cc = mido.Message("control_change", control=64, value=127)
    events = [Timed(0, cc), Timed(0.5, cc), Timed(1, cc.copy(value=0)), Timed(2, cc), Timed(3, cc.copy(value=0))]
    assert M.pedal_presses_per_minute(events, 60.0) == 2.0
