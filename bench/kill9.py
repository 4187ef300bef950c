"""kill -9 during a recording: of play's engine, and of play itself; notes hanging and data lost.

    .venv/bin/python bench/kill9.py [--rounds 5] [--before-s 6] [--after-s 8] [--model MODEL.onnx] [--json]

A private `jackd -d dummy` (48 kHz, 128-frame period) and, per round, one `musebridge play --api jack --mode
harmonize --record TAKE.mid` (its own engine) with a JACK peer (tests/jack.py) playing into it and listening to
its output: a note every 0.25 s (held 0.15 s), pitches in a known order. After `--before-s` of playing:
  engine  kill -9 of the engine play started (play restarts it: bridge/launcher.py); the player goes on for
          `--after-s`, then play gets SIGTERM and writes the take. Counted: the engine's notes started before the
          kill and still sounding a second after it, the seconds until the strings answer again, the notes left
          hanging on the output once play has stopped, and the notes missing from the take: the player's (sent
          but not recorded) and the engine's (heard on the output but not recorded), with the seconds they span.
  play    kill -9 of play itself (its engine follows its parent); the take is then recovered from its journal
          (bridge/journal.py `recover_takes`, what the next `play --record` in that folder does at start).
          Counted: the notes hanging on the output (a killed process sends nothing more: see docs/reliability.md),
          the player's notes sent before the kill but missing from the recovered take and the seconds they span
          (the kill's time minus the first missing note's), the engine's notes heard but not recovered, and
          notes hanging in the recovered take.
`--rounds` of each, taking turns.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import mido

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from musebridge.bridge.journal import recover_takes  # noqa: E402

from bench.midi_fuzz import start_play, stderr_of  # noqa: E402
from tests.bridge_fakes import unreleased_note_ons  # noqa: E402
from tests.jack import JACKD, JackPeer, JackServer  # noqa: E402

STRINGS = 5


class Player(threading.Thread):
    """Plays a note every 0.25 s (held 0.15 s) until stopped; `sent` holds (perf_counter, pitch) per note-on."""

    def __init__(self, peer: JackPeer):
        super().__init__(daemon=True)
        self.peer, self.sent, self.stop = peer, [], threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            pitch = 48 + (i * 7) % 36
            self.sent.append((self.peer.send(mido.Message("note_on", note=pitch, velocity=80)), pitch))
            time.sleep(0.15)
            self.peer.send(mido.Message("note_off", note=pitch))
            time.sleep(0.10)
            i += 1


def sounding(heard, on_before: float, off_before: float, channel: int = STRINGS) -> int:
    """Notes on `channel` switched on before `on_before` and not switched off before `off_before`."""
    held: dict[int, int] = {}
    for t, m in heard:
        if t >= off_before:
            break
        if m.channel != channel or m.type not in ("note_on", "note_off"):
            continue
        if m.type == "note_on" and m.velocity and t < on_before:
            held[m.note] = held.get(m.note, 0) + 1
        elif (m.type == "note_off" or not m.velocity) and held.get(m.note):
            held[m.note] -= 1
    return sum(held.values())


def take_notes(path: Path) -> tuple[list[int], list[int], int]:
    """(player's note-on pitches, engine's (strings) note-on pitches, notes hanging) of a .mid, in time order."""
    merged = list(mido.merge_tracks(mido.MidiFile(path).tracks))
    ons = [m for m in merged if m.type == "note_on" and m.velocity]
    return ([m.note for m in ons if m.channel == 0], [m.note for m in ons if m.channel == STRINGS],
            len(unreleased_note_ons(merged)))


def missing(expected: list[tuple[float, int]], got: list[int], kill: float) -> tuple[int, float, bool]:
    """(notes of `expected` (time, pitch) not in `got`, seconds from the first missing one to `kill`, whether
    `got` is exactly the start of `expected`)."""
    pitches = [p for _, p in expected]
    prefix = pitches[:len(got)] == got
    if prefix:
        lost = expected[len(got):]
    else:  # count by multiset
        left = list(got)
        lost = []
        for t, p in expected:
            if p in left:
                left.remove(p)
            else:
                lost.append((t, p))
    return len(lost), (round(kill - lost[0][0], 2) if lost else 0.0), prefix


def one_round(target: str, args, tmp: str, index: int) -> dict:
    take = Path(tmp) / f"take-{target}-{index}.mid"
    proc, engine = start_play(tmp, args.model, "harmonize", record=str(take))
    peer = JackPeer("MuseBridge In", "MuseBridge Out", client=f"kill peer {index}", wait_s=60.0, callback=False)
    player = Player(peer)
    out: dict = {"target": target}
    try:
        time.sleep(0.5)
        player.start()
        time.sleep(args.before_s)
        kill = time.perf_counter()
        os.kill(engine if target == "engine" else proc.pid, signal.SIGKILL)
        if target == "engine":
            time.sleep(args.after_s)
        player.stop.set()
        player.join()
        sent = [(t, p) for t, p in player.sent if t < kill] if target == "play" else list(player.sent)
        if target == "engine":
            time.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
        else:
            proc.wait(timeout=10)
            gone = [pid for pid in (engine,) if pid and os.path.exists(f"/proc/{pid}")
                    and not open(f"/proc/{pid}/stat").read().split()[2] == "Z"]
            deadline = time.monotonic() + 15
            while gone and time.monotonic() < deadline:  # the engine follows its parent
                time.sleep(0.2)
                gone = [pid for pid in gone if os.path.exists(f"/proc/{pid}")]
            out["engine_gone_after_play_killed"] = not gone
        time.sleep(0.3)
        heard = list(peer.heard)
    finally:
        player.stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        peer.close()
    err = stderr_of(proc)
    voices = [(t, m.note) for t, m in heard if m.type == "note_on" and m.velocity and m.channel == STRINGS
              and (target == "engine" or t < kill)]
    out["hanging_on_output"] = len(unreleased_note_ons([m for _, m in heard]))
    out["player_notes_sent"] = len(sent)
    out["engine_notes_heard"] = len(voices)
    if target == "engine":
        out["play_exit_code"] = proc.returncode
        out["engine_notes_sounding_1s_after_kill"] = sounding(heard, kill, kill + 1.0)
        back = [t for t, _ in voices if t > kill]
        out["harmony_back_after_s"] = round(back[0] - kill, 2) if back else None
        out["engine_restarted"] = "starting it again" in err
        path = take
    else:
        recovered = recover_takes(take)
        out["take_written"] = take.exists()
        out["recovered"] = len(recovered)
        path = recovered[0] if recovered else None
    if path is None or not path.exists():
        out.update(player_notes_lost=len(sent), seconds_lost=None, engine_notes_lost=len(voices))
        return out
    player_got, engine_got, hanging = take_notes(path)
    n, seconds, prefix = missing(sent, player_got, kill if target == "play" else time.perf_counter())
    out.update(player_notes_lost=n, seconds_lost=seconds if target == "play" else None,
               player_take_is_prefix=prefix, take_hanging=hanging)
    m, vseconds, _ = missing(voices, engine_got, kill)
    out["engine_notes_lost"] = m
    if target == "engine":
        out["player_notes_lost_seconds_span"] = seconds if n else 0.0
    else:
        out["engine_notes_lost_seconds"] = vseconds
    out["tracebacks"] = err.count("Traceback")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model for play's engine (default: the bundled model)")
    parser.add_argument("--rounds", type=int, default=5, help="kills of each kind (default 5)")
    parser.add_argument("--before-s", type=float, default=6.0, help="seconds played before the kill (default 6)")
    parser.add_argument("--after-s", type=float, default=8.0,
                        help="seconds played after the engine's kill (default 8)")
    parser.add_argument("--json", action="store_true", help="last line: one JSON object with every figure")


def _sum(rounds: list[dict], key: str):
    values = [r.get(key) for r in rounds]
    return None if any(v is None for v in values) else sum(values)


def run(args: argparse.Namespace) -> int:
    if JACKD is None:
        print("kill9: needs jackd (apt install jackd2)", file=sys.stderr)
        return 2
    jack = JackServer().start()
    rounds = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for i in range(args.rounds):
                for target in ("engine", "play"):
                    rounds.append(one_round(target, args, tmp, i))
                    print(json.dumps(rounds[-1]), file=sys.stderr, flush=True)
    finally:
        jack.stop()
    summary = {}
    for target in ("engine", "play"):
        rs = [r for r in rounds if r["target"] == target]
        summary[target] = {k: _sum(rs, k) for k in ("hanging_on_output", "player_notes_sent", "player_notes_lost",
                                                    "engine_notes_heard", "engine_notes_lost", "take_hanging")}
        summary[target]["kills"] = len(rs)
    e, p = summary["engine"], summary["play"]
    eng = [r for r in rounds if r["target"] == "engine"]
    pl = [r for r in rounds if r["target"] == "play"]
    print(f"kill -9 of play's engine, {e['kills']} times: notes hanging on the output after play stopped "
          f"{e['hanging_on_output']}; engine notes still sounding 1 s after the kill "
          f"{sum(r['engine_notes_sounding_1s_after_kill'] for r in eng)}; harmony back after "
          f"{[r['harmony_back_after_s'] for r in eng]} s; player notes lost {e['player_notes_lost']} of "
          f"{e['player_notes_sent']}, engine notes lost {e['engine_notes_lost']} of {e['engine_notes_heard']}; "
          f"notes hanging in the takes {e['take_hanging']}; play's exit codes "
          f"{[r['play_exit_code'] for r in eng]}")
    print(f"kill -9 of play, {p['kills']} times: notes hanging on the output {p['hanging_on_output']}; takes "
          f"recovered {sum(r['recovered'] for r in pl)} of {len(pl)}; player notes lost "
          f"{p['player_notes_lost']} of {p['player_notes_sent']}, seconds lost per kill "
          f"{[r['seconds_lost'] for r in pl]}; engine notes lost {p['engine_notes_lost']} of "
          f"{p['engine_notes_heard']}; notes hanging in the recovered takes "
          f"{p['take_hanging']}; engine gone with play {[r.get('engine_gone_after_play_killed') for r in pl]}")
    if args.json:
        print(json.dumps({"summary": summary, "rounds": rounds}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
