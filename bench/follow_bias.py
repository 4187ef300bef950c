"""What each following rule costs: Follower.bias alone, all rules on against each part of FOLLOW_PARTS off in
turn, in interleaved rounds on the same state (the player's phrase heard, the engine sounding six notes on two
instruments, a pedal press).

    python bench/follow_bias.py [--rounds 7] [--calls 2000]

Prints the median over rounds of the mean microseconds per call, for all rules on and for each part off, and the
difference: what that part costs per generated token.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

from musebridge.engine.sessions.follow import Follower
from musebridge.engine.sessions.follow_config import FOLLOW_PARTS, FollowConfig
from musebridge.engine.sessions.timeline import State
from musebridge.engine.tokens import vocab as V
from musebridge.engine.tokens.instruments import INSTRUMENT_NAMES

PIANO, STRINGS = INSTRUMENT_NAMES.index("piano"), INSTRUMENT_NAMES.index("strings")


def state() -> State:
    """A player's 24-note phrase (each held 25 steps, one pedal press), then six engine notes sounding."""
    s = State()
    s.apply(V.velocity_token(20), True)
    for k, pitch in enumerate([60, 64, 67, 72, 67, 64, 60, 55] * 3):
        s.apply(V.note_on_token(PIANO, pitch), True)
        s.apply(V.time_tokens(25)[0], True)
        s.apply(V.note_off_token(PIANO, pitch), True)
        if k == 4:
            s.apply(V.pedal_token(PIANO, True), True)
    for pitch in (48, 55, 64, 67, 72, 76):
        s.apply(V.note_on_token(STRINGS, pitch), False)
    return s


def per_call_us(follower: Follower, s: State, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        follower.bias(s)
    return (time.perf_counter() - start) / calls * 1e6


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args(argv)
    s = state()
    configs = {"all rules on": FollowConfig()}
    configs |= {f"{part} off": (replace(FollowConfig(), key="off") if part == "key"
                                else replace(FollowConfig(), **{part: False})) for part in FOLLOW_PARTS}
    followers = {name: Follower(config, (STRINGS, PIANO)) for name, config in configs.items()}
    times: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.rounds):  # interleaved: a slow moment of the host touches every configuration
        for name, follower in followers.items():
            times[name].append(per_call_us(follower, s, args.calls))
    median = {name: sorted(t)[len(t) // 2] for name, t in times.items()}
    base = median["all rules on"]
    print(f"{'configuration':<20}{'us per call':>12}{'part costs':>12}")
    for name, value in median.items():
        cost = "" if name == "all rules on" else f"{base - value:12.1f}"
        print(f"{name:<20}{value:12.1f}{cost}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
