"""What following the player costs per generated token: Session steps with FollowConfig on and off, side by side,
in interleaved blocks on the same model, after a prompt that fills most of the window.

    python bench/follow.py [--blocks 10] [--tokens 200] [--model M.onnx]

Prints p50 / p99 milliseconds per token for each, and the difference of the medians.
"""

from __future__ import annotations

import argparse
import time

import mido
import numpy as np
from musebridge.engine.inference.sampler import SamplingConfig
from musebridge.engine.sessions.follow_config import FollowConfig
from musebridge.engine.sessions.session import Engine
from musebridge.engine.sessions.session_config import SessionConfig
from musebridge.engine.tokens.codec import Timed


def prompt(seconds: float = 60.0) -> list[Timed]:
    """A piano line with chords, about 12 tokens a second: most of a 1,024-token window after a minute."""
    out, t, k = [], 0.0, 0
    while t < seconds:
        for pitch in (60 + (k * 5) % 12, 48 + (k * 7) % 12):
            out += [Timed(t, mido.Message("note_on", note=pitch, velocity=60 + k % 40)),
                    Timed(t + 0.3, mido.Message("note_off", note=pitch))]
        t, k = t + 0.35, k + 1
    return sorted(out, key=lambda e: e.time)


def block(engine: Engine, follow: FollowConfig, tokens: int, seed: int) -> list[float]:
    config = SessionConfig(instruments=(0,), sampling=SamplingConfig(seed=seed), follow=follow)
    session = engine.new_session(config)
    session.prime(prompt())
    times = []
    for _ in range(tokens):
        start = time.perf_counter()
        session.step()
        session._next_logits()  # the token's own forward pass, as the next step would run it
        times.append((time.perf_counter() - start) * 1000)
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--model", default=None)
    args = parser.parse_args(argv)
    engine = Engine.load(args.model)
    results = {"following": [], "not following": []}
    for b in range(args.blocks):
        for name, follow in (("following", FollowConfig()), ("not following", FollowConfig(enabled=False))):
            results[name] += block(engine, follow, args.tokens, seed=b)
    for name, ms in results.items():
        print(f"{name:<14} per token p50 {np.percentile(ms, 50):.3f} ms  p99 {np.percentile(ms, 99):.3f} ms  "
              f"({len(ms)} tokens)")
    diff = np.percentile(results["following"], 50) - np.percentile(results["not following"], 50)
    print(f"following adds {diff * 1000:.0f} us per token at the median")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
