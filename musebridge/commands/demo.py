"""`musebridge demo` (what `make demo` runs): a call-and-response exchange on the bundled model, in real time.

No MIDI hardware, no ALSA, no sound server needed: the ports are in-process (bridge/ports.py MemoryMidi), and
everything else is the real thing: a `musebridge serve` engine process, the control protocol, the bridge's
respond mode and output scheduler. A bundled folk phrase is played into "MuseBridge In" in two halves; after each
the bridge waits for the pause and the model answers on "MuseBridge Out". The exchange is recorded to demo.mid,
drawn to demo.png (player and model in different colours) and, where fluidsynth and a General MIDI soundfont are
installed, rendered to demo.wav (engine/render/audio.py; --play plays it); the measured latencies are printed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np

from musebridge.bridge.config import BridgeConfig, ModeConfig
from musebridge.bridge.errors import BridgeError
from musebridge.bridge.launcher import EngineTarget, ensure_engine
from musebridge.bridge.live import LiveSession
from musebridge.bridge.ports import IN_NAME, OUT_NAME, MemoryBackend, MemoryMidi
from musebridge.bridge.recorder import PLAYER_FALLBACK_CHANNEL
from musebridge.engine.errors import EngineError
from musebridge.engine.render import audio, pianoroll
from musebridge.engine.server.client import DEFAULT_PORT, DEFAULT_PUB_PORT
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES
from musebridge.engine.tokens.midifile import notes_from_events, read_midi


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="demo.mid", metavar="FILE.mid", help="recording (default demo.mid)")
    parser.add_argument("--png", default=None, metavar="FILE.png", help="piano roll (default: beside --out)")
    parser.add_argument("--style", default="folk", help="the engine's style, any case (default %(default)s)")
    parser.add_argument("--instruments", nargs="+", default=["strings"], metavar="NAME",
                        help=f"the model's instruments ({', '.join(INSTRUMENT_NAMES)})")
    parser.add_argument("--seed", type=int, default=7, help="sampling seed: same seed, same answers "
                        "(default %(default)s)")
    parser.add_argument("--answer", type=float, default=3.0, metavar="S", help="seconds per answer")
    parser.add_argument("--pause", type=float, default=0.5, metavar="S", help="silence that triggers an answer")
    sound = parser.add_mutually_exclusive_group()
    sound.add_argument("--wav", metavar="FILE.wav", help="audio of the exchange (default: beside --out when "
                       "fluidsynth and a General MIDI soundfont are installed; given, it must be made)")
    sound.add_argument("--no-wav", action="store_true", help="no audio")
    parser.add_argument("--soundfont", metavar="FILE.sf2", help=f"General MIDI soundfont for the WAV (default: "
                        f"${audio.SOUNDFONT_ENV}, else the system's FluidR3_GM.sf2 or default.sf2)")
    parser.add_argument("--play", action="store_true", help="play the WAV at the end (afplay, paplay, pw-play, "
                        "aplay or ffplay; else fluidsynth's own audio output)")
    parser.add_argument("--model", metavar="MODEL.onnx", help="model for the engine (default: bundled)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT + 10, help="engine request port")
    parser.add_argument("--pub-port", type=int, default=DEFAULT_PUB_PORT + 10, help="engine event port")


def bundled_phrase() -> list:
    """The player's part: timed messages of engine/data/phrase.mid (6 s of an essenFolksong tune)."""
    path = resources.files("musebridge.engine").joinpath("data/phrase.mid")
    return [e for e in read_midi(Path(str(path))).events if e.msg.type in ("note_on", "note_off")]


def play_phrase(keyboard, events, start: float) -> None:
    """Send timed messages (seconds from `start`, a monotonic time) at their times, like a player."""
    for t, msg in events:
        delay = start + t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        keyboard.send(msg)


class Ear:
    """Listens on the bridge's out port: note-ons with their arrival times (monotonic seconds)."""

    def __init__(self):
        self.note_ons: list[tuple[float, int]] = []
        self._lock = threading.Lock()

    def __call__(self, data: list[int]) -> None:
        if len(data) == 3 and data[0] & 0xF0 == 0x90 and data[2] > 0:
            with self._lock:
                self.note_ons.append((time.monotonic(), data[1]))

    def count_between(self, a: float, b: float) -> int:
        with self._lock:
            return sum(1 for t, _ in self.note_ons if a <= t < b)


def run_exchange(args, target: EngineTarget, record: Path) -> tuple[list[float], list[int]]:
    """Two calls and two answers; returns the bridge's trigger->first-note latencies (s) and notes per answer."""
    midi, ear = MemoryMidi(), Ear()
    config = BridgeConfig(mode="respond", record=str(record),
                          engine={"style": args.style, "instruments": args.instruments,
                                  "player_instrument": "piano", "seed": args.seed, "temperature": 0.9},
                          modes=ModeConfig(pause_s=args.pause, answer_s=args.answer))
    phrase = bundled_phrase()
    half = len(phrase) // 2
    calls = [phrase[:half], [(t - phrase[half].time, m) for t, m in phrase[half:]]]
    answers = []
    with LiveSession(config, MemoryBackend(midi), target) as live:
        midi.listen(OUT_NAME, ear)
        keyboard = midi.sender(IN_NAME)
        for call in calls:
            play_phrase(keyboard, call, time.monotonic())
            begin = time.monotonic()
            time.sleep(args.pause + args.answer + 0.4)
            answers.append(ear.count_between(begin, time.monotonic()))
        latencies = list(live.bridge.latencies)
    return latencies, answers


def draw(record: Path, png: Path, style: str) -> dict[str, int]:
    midi = read_midi(record)
    notes = notes_from_events(midi.events, midi.end_time)
    parts = {"player": [n for n in notes if n.channel in (0, PLAYER_FALLBACK_CHANNEL)],
             "model": [n for n in notes if n.channel not in (0, PLAYER_FALLBACK_CHANNEL)]}
    pianoroll.draw(parts, png, title=f"musebridge demo: call and response (style {style})")
    return {k: len(v) for k, v in parts.items()}


def audio_plan(args: argparse.Namespace, out: Path) -> tuple[Path | None, str | None]:
    """(the WAV to render or None, a one-line note for the report), decided before the engine starts. An explicit
    --wav that cannot be made, or a --soundfont (or $MUSEBRIDGE_SOUNDFONT) that is not one, raises AudioError;
    without fluidsynth or a soundfont the default WAV is skipped with the note saying how to get them."""
    if args.no_wav:
        if args.play:
            raise audio.AudioError("--play plays the WAV: drop --no-wav")
        return None, None
    wav = Path(args.wav) if args.wav else out.with_suffix(".wav")
    if args.wav:
        audio.check_writable(wav)
    try:
        audio.check_tools(args.soundfont)
    except audio.AudioUnavailable as exc:
        if args.wav:
            raise
        return None, str(exc)
    return wav, None


def make_audio(args: argparse.Namespace, out: Path, wav: Path) -> tuple[Path | None, str | None]:
    """Render the recording to `wav`: (the WAV, None), or (None, a one-line note) when the default WAV failed.
    An explicit --wav that fails raises AudioError."""
    try:
        return audio.render_wav(out, wav, args.soundfont), None
    except audio.AudioError as exc:
        if args.wav:
            raise
        return None, f"no audio: {exc}"


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    png = Path(args.png) if args.png else out.with_suffix(".png")
    for name in args.instruments:
        if name not in INSTRUMENT_NAMES:
            print(f"musebridge demo: unknown instrument {name!r}; choose from: {', '.join(INSTRUMENT_NAMES)}",
                  file=sys.stderr)
            return 2
    target = EngineTarget(port=args.port, pub_port=args.pub_port, model=args.model, wait_s=120.0)
    started = time.monotonic()
    engine = None
    try:
        wav, note = audio_plan(args, out)
        pianoroll.matplotlib_or_error()
        print(f"starting the engine (musebridge serve on port {args.port}) ...", flush=True)
        engine = ensure_engine(target)
        if engine is not None:
            target = replace(target, direct=engine.direct)
        print(f"engine ready in {time.monotonic() - started:.1f} s; playing a folk phrase into '{IN_NAME}' "
              f"(respond mode, the model answers on {', '.join(args.instruments)})", flush=True)
        with tempfile.TemporaryDirectory(dir=out.parent if str(out.parent) else ".") as tmp:
            record = Path(tmp) / "demo.mid"
            latencies, answers = run_exchange(args, target, record)
            counts = draw(record, png, args.style)
            record.replace(out)
        if engine is not None:
            engine.stop()
            engine = None
        if wav is not None:
            wav, note = make_audio(args, out, wav)
    except (BridgeError, EngineError, OSError) as exc:
        print(f"musebridge demo: {exc}", file=sys.stderr)
        return 2
    finally:
        if engine is not None:
            engine.stop()
    report(args, out, png, wav, counts, answers, latencies, time.monotonic() - started)
    if note:
        print(note)
    if args.play and wav is not None:
        listen(wav, out, args.soundfont)
    print("next: `musebridge play --mode respond` to play with it from your own keyboard (docs/live.md)")
    return 0 if counts["model"] else 1


def listen(wav: Path, out: Path, soundfont: str | None) -> None:
    """Play the WAV (or the .mid through fluidsynth) to the end; a failure is one line and not an error: the
    files are written."""
    print(f"playing {wav} ...", flush=True)
    try:
        audio.play_wav(wav, out, soundfont)
    except audio.AudioError as exc:
        print(f"cannot play: {exc}")


def report(args, out, png, wav, counts, answers, latencies, elapsed) -> None:
    print(f"the player played {counts['player']} notes in two phrases; the model answered with "
          f"{' and '.join(str(a) for a in answers)} notes")
    if latencies:
        ms = np.array(latencies) * 1000
        print(f"pause elapsed -> first answer note at the output port: {', '.join(f'{m:.1f}' for m in ms)} ms "
              f"(target: within 20 ms)")
    sound = f" and {wav} (audio: the player on piano, the model on {', '.join(args.instruments)})" if wav else ""
    print(f"wrote {out} (both parts), {png} (piano roll){sound} in {elapsed:.1f} s")
