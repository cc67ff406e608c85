"""Long randomized soak of the Raft simulation: `python -m tests.sim.soak [--seeds N] [--start S]`.

Contract: runs `faults.run_schedule` for each seed (random size 3 or 5, up to 30 faults over
30 s of simulated time); prints each failing seed with its error and exits non-zero if any failed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

from tests.sim.faults import random_ops, run_schedule


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--start", type=int, default=0)
    args = parser.parse_args()
    failed = 0
    started = time.monotonic()
    for seed in range(args.start, args.start + args.seeds):
        rng = random.Random(seed)
        size = rng.choice([3, 5])
        try:
            run_schedule(seed, size, random_ops(rng, rng.randrange(30), 30_000), horizon_ms=30_000)
        except AssertionError as exc:
            failed += 1
            print(f"FAILED seed={seed} size={size}: {exc}", flush=True)
    print(f"{args.seeds} seeds, {failed} failed, {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
