"""MIDI fuzz through a real port: random MIDI into a real `musebridge play`; does it crash, does a note hang?

    .venv/bin/python bench/midi_fuzz.py [--messages 1000000] [--rate 1500] [--mode harmonize] [--json]

A private `jackd -d dummy` (48 kHz, 128-frame period, as the tests), one `musebridge play --api jack --thru
--record TAKE` (its own engine: the bundled model, or --model) and a JACK peer (tests/jack.py) that sends
`--messages` random messages into "MuseBridge In" at `--rate` a second and listens to "MuseBridge Out". The mix:
note-ons (velocity 0 included) and note-offs on every channel (mostly the first), control changes (sustain, all
notes off, all sound off, reset, random), program change, pitch bend, aftertouch, MIDI clock, transport (start,
continue, stop, song position), sysex (terminated or not, up to 300 bytes, non-data bytes inside), running status
(data bytes without a status byte), undefined and realtime status bytes, truncated messages and random junk.
Each JACK event holds one such message (rtmidi refuses events over 3 bytes that do not start with 0xF0).

Counts: the messages sent by kind; whether play and its engine stayed up (the engine's pid unchanged: play
restarts an engine that dies, which would hide a crash), tracebacks on play's stderr, play's exit code after a
SIGTERM at the end, the notes left hanging on its output once it has stopped (a note-on without its note-off,
CC123 not counted as a release), and whether the take was written and reads back. RSS of play and its engine at
the start and the end (`--no-record`: without the take, which play keeps in memory until it stops).
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.bridge_fakes import unreleased_note_ons  # noqa: E402
from tests.jack import JACKD, JackPeer, JackServer, wait_gone  # noqa: E402
from tests.net import free_port  # noqa: E402
from tests.test_bridge_jack import _children, wait_for_line  # noqa: E402

KINDS = (("note_on", 28), ("note_off", 18), ("cc", 8), ("program_pitch_touch", 5), ("clock", 15),
         ("transport", 2), ("sysex", 3), ("running_status", 8), ("undefined_realtime", 4), ("truncated", 4),
         ("junk", 5))


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return float("nan")


def random_message(rng: random.Random, kind: str) -> list[int]:
    """One JACK event's bytes of `kind`."""
    ch = 0 if rng.random() < 0.8 else rng.randrange(16)
    note = rng.randrange(128) if rng.random() < 0.2 else rng.randrange(36, 96)
    if kind == "note_on":
        return [0x90 | ch, note, rng.choice((0, rng.randrange(1, 128)))]
    if kind == "note_off":
        return [0x80 | ch, note, rng.randrange(128)]
    if kind == "cc":
        control = rng.choice((64, 64, 123, 120, 121, 1, 7, 10, 11, rng.randrange(128)))
        return [0xB0 | ch, control, rng.randrange(128)]
    if kind == "program_pitch_touch":
        return rng.choice(([0xC0 | ch, rng.randrange(128)], [0xE0 | ch, rng.randrange(128), rng.randrange(128)],
                           [0xD0 | ch, rng.randrange(128)], [0xA0 | ch, note, rng.randrange(128)]))
    if kind == "clock":
        return [0xF8]
    if kind == "transport":
        return rng.choice(([0xFA], [0xFB], [0xFC], [0xF2, rng.randrange(128), rng.randrange(128)]))
    if kind == "sysex":
        body = [rng.randrange(128) if rng.random() < 0.95 else rng.randrange(256)
                for _ in range(rng.randrange(0, 300))]
        return [0xF0] + body + ([0xF7] if rng.random() < 0.8 else [])
    if kind == "running_status":  # data bytes that lean on the last status byte
        return [note, rng.randrange(128)] if rng.random() < 0.7 else [rng.randrange(128)]
    if kind == "undefined_realtime":
        return [rng.choice((0xF4, 0xF5, 0xF9, 0xFD, 0xFE, 0xFF, 0xF6, 0xF7, 0xF1, 0xF3))]
    if kind == "truncated":
        status = rng.choice((0x90, 0x80, 0xB0, 0xE0, 0xA0)) | ch if rng.random() < 0.8 else 0xF2
        return [status] + [rng.randrange(128)] * rng.randrange(0, 2)
    length = rng.randrange(1, 4)  # junk: any bytes, at most 3 (more must start with 0xF0)
    return [rng.randrange(256) for _ in range(length)]


def start_play(tmp: str, model: str | None, mode: str, extra: list[str] = (), record: str | None = None):
    """`musebridge play` on JACK with its own engine, ready ("Ctrl-C to stop"): (process, its engine's pid)."""
    wait_gone("MuseBridge")  # an earlier play's ports
    cmd = [sys.executable, "-m", "musebridge", "play", "--api", "jack", "--mode", mode, "--port", str(free_port()),
           "--pub-port", str(free_port()), "--no-status", "--instruments", "strings", "--seed", "2", *extra]
    if model:
        cmd += ["--model", model]
    if record:
        cmd += ["--record", record]
    err = open(f"{tmp}/play-{time.time_ns()}.err", "w+")  # noqa: SIM115 (read back by stderr_of)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    proc.errfile = err
    if not wait_for_line(proc, "Ctrl-C to stop", timeout=120.0):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"play did not start: {stderr_of(proc)[-2000:]}")
    engines = _children(proc.pid, "serve")
    return proc, (engines[0] if engines else None)


def stderr_of(proc) -> str:
    proc.errfile.seek(0)
    return proc.errfile.read()


def fuzz(args, tmp: str) -> dict:
    rng = random.Random(args.seed)
    kinds, weights = zip(*KINDS, strict=True)
    take = f"{tmp}/take.mid"
    proc, engine = start_play(tmp, args.model, args.mode, ["--thru"], record=None if args.no_record else take)
    peer = JackPeer("MuseBridge In", "MuseBridge Out", client="fuzz peer", wait_s=60.0, callback=False)
    rss0 = {"play": rss_mb(proc.pid), "engine": rss_mb(engine) if engine else None}
    sent, refused = Counter(), 0
    t0 = time.perf_counter()
    batch = max(1, round(args.rate / 100))  # every 10 ms
    alive = True
    next_check = 10.0
    try:
        while sum(sent.values()) < args.messages:
            for kind in rng.choices(kinds, weights, k=batch):
                try:
                    peer.out.send_message(random_message(rng, kind))
                    sent[kind] += 1
                except (ValueError, TypeError):
                    refused += 1  # rtmidi's own checks (never expected: the generator keeps to them)
            n = sum(sent.values())
            due = t0 + n / args.rate
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            if time.perf_counter() - t0 > next_check:
                next_check += 10.0
                alive = proc.poll() is None and engine in _children(proc.pid, "serve")
                print(json.dumps({"s": round(time.perf_counter() - t0), "sent": n, "heard": len(peer.heard),
                                  "play_alive": proc.poll() is None, "engine_same": alive,
                                  "play_rss_mb": rss_mb(proc.pid)}),
                      file=sys.stderr, flush=True)
                if not alive:
                    break
        seconds = time.perf_counter() - t0
        for ch in range(16):  # the player lifts every key and the pedal, as a player would
            for note in range(128):
                peer.out.send_message([0x80 | ch, note, 0])
            peer.out.send_message([0xB0 | ch, 64, 0])
            time.sleep(0.05)
        time.sleep(3.0)  # the bridge works off what is queued
        engine_same = engine in _children(proc.pid, "serve")
        rss1 = {"play": rss_mb(proc.pid), "engine": rss_mb(engine) if engine else None}
        hanging_before_stop = len(unreleased_note_ons(peer.messages()))
        play_alive = proc.poll() is None
        if play_alive:
            proc.send_signal(signal.SIGTERM)
        term = time.perf_counter()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        time.sleep(0.3)  # the last note-offs cross JACK
        messages = peer.messages()
        heard = list(peer.heard)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        peer.close()
    err = stderr_of(proc)
    try:
        if args.no_record:
            raise FileNotFoundError("not recorded (--no-record)")
        mid = mido.MidiFile(take)
        take_notes = sum(1 for m in mido.merge_tracks(mid.tracks) if m.type == "note_on" and m.velocity)
        take_hanging = len(unreleased_note_ons(list(mido.merge_tracks(mid.tracks))))
    except (OSError, ValueError, EOFError) as exc:
        take_notes, take_hanging = f"unreadable: {exc}", None
    out_types = Counter(m.type for m in messages)
    return {"messages": sum(sent.values()), "seconds": round(seconds, 1),
            "rate_per_s": round(sum(sent.values()) / seconds), "sent_by_kind": dict(sent),
            "refused_by_rtmidi": refused, "play_alive_at_end": play_alive, "engine_same_pid": engine_same,
            "play_exit_code": proc.returncode, "tracebacks": err.count("Traceback"),
            "engine_restarts": err.count("starting it again"),
            "heard_on_output": len(messages), "output_note_ons": out_types.get("note_on", 0),
            "engine_note_ons": sum(1 for m in messages if m.type == "note_on" and m.velocity and m.channel == 5),
            "hanging_before_stop": hanging_before_stop,
            "hanging_after_stop": len(unreleased_note_ons(messages)),
            "hanging_detail": [{"channel": ch, "note": n, "last_note_on_s_before_sigterm": round(term - max(
                t for t, m in heard if m.type == "note_on" and m.velocity and (m.channel, m.note) == (ch, n)), 3)}
                for ch, n in sorted(unreleased_note_ons(messages))],
            "take_note_ons": take_notes, "take_hanging": take_hanging,
            "rss_mb_start": rss0, "rss_mb_end": rss1, "stderr_tail": err[-600:]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model for play's engine (default: the bundled model)")
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages to send (default 1,000,000)")
    parser.add_argument("--rate", type=float, default=1500.0, help="messages a second (default 1,500)")
    parser.add_argument("--mode", default="harmonize", help="play's mode (default harmonize; --thru always on)")
    parser.add_argument("--no-record", action="store_true", help="without --record (play keeps a take in memory)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="last line: one JSON object with every figure")


def run(args: argparse.Namespace) -> int:
    if JACKD is None:
        print("midi_fuzz: needs jackd (apt install jackd2)", file=sys.stderr)
        return 2
    jack = JackServer().start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            r = fuzz(args, tmp)
    finally:
        jack.stop()
    print(f"midi fuzz: {r['messages']} messages in {r['seconds']} s ({r['rate_per_s']}/s) into `play --mode "
          f"{args.mode} --thru`: play alive at the end {r['play_alive_at_end']}, engine pid unchanged "
          f"{r['engine_same_pid']}, exit code after SIGTERM {r['play_exit_code']}, tracebacks {r['tracebacks']}")
    print(f"output: {r['heard_on_output']} messages, {r['output_note_ons']} note-ons "
          f"({r['engine_note_ons']} the engine's strings); notes hanging: "
          f"{r['hanging_before_stop']} once the player let go, {r['hanging_after_stop']} after play stopped; "
          f"take: {r['take_note_ons']} note-ons, {r['take_hanging']} hanging")
    print(f"RSS MB play {r['rss_mb_start']['play']} -> {r['rss_mb_end']['play']}, engine "
          f"{r['rss_mb_start']['engine']} -> {r['rss_mb_end']['engine']}")
    print("sent by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(r["sent_by_kind"].items())))
    if args.json:
        print(json.dumps(r))
    ok = r["play_exit_code"] == 0 and not r["tracebacks"] and r["engine_same_pid"] and not r["hanging_after_stop"]
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
