"""`musebridge perform IN.mid OUT.mid [--seed N]`: play a notated MIDI file as a pianist would (see
docs/performer.md). The output is written at a constant 120 quarter notes a minute with the performed times in
seconds: the performance has its own timing, so the score's bar lines would no longer fall on its beats."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from musebridge.engine.errors import EngineError
from musebridge.engine.tokens.midifile import notes_from_events, read_midi, write_midi
from musebridge.export.perform import PerformerConfig, perform


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("midi", metavar="IN.mid", help="a notated MIDI file (e.g. data/corpus/midi/bach/*.mid)")
    parser.add_argument("out", metavar="OUT.mid", help="where to write the performance (piano, with pedal)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="draws the level, tempo, articulation and every deviation (default: %(default)s)")


def summarize(events) -> str:
    """One line: notes, seconds, velocity range and median, share of the time with the pedal down."""
    notes = notes_from_events(events)
    end = max((t for t, _ in events), default=0.0)
    velocity = np.array([n.velocity for n in notes])
    pedal = [(t, m.value) for t, m in events if m.type == "control_change" and m.control == 64]
    down = sum(up[0] - press[0] for press, up in zip(pedal[::2], pedal[1::2], strict=True))
    return (f"{len(notes)} notes, {end:.1f} s, velocity {velocity.min()}-{velocity.max()} "
            f"(median {np.median(velocity):.0f}), pedal down {100 * down / max(end, 1e-9):.0f}% of the time")


def run(args: argparse.Namespace) -> int:
    try:
        midi = read_midi(args.midi)
        events = perform(midi.events, midi.conductor, PerformerConfig(), args.seed)
        if len(events) == 1:
            raise EngineError(f"{args.midi}: no pitched notes to play (empty, or drums only); choose a file "
                              "with notes")
        write_midi(events, args.out)
    except EngineError as exc:
        print(f"musebridge perform: {exc}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summarize(events)}")
    return 0
