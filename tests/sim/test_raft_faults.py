"""Hypothesis draws fault schedules for 3- and 5-node clusters; the soak run is opt-in.

Default run: a fixed number of derandomized examples (deterministic, a few seconds). Soak:
`WAYPOST_SOAK=1 .venv/bin/pytest tests/sim -m soak` or `.venv/bin/python -m tests.sim.soak`.
"""

from __future__ import annotations

import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.sim.faults import KINDS, random_ops, run_schedule

ops_strategy = st.lists(st.tuples(st.integers(0, 12_000), st.sampled_from(KINDS), st.integers(0, 1 << 16)),
                        max_size=14)


@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), size=st.sampled_from([3, 5]), ops=ops_strategy)
def test_fault_schedules_keep_raft_safe_and_live(seed: int, size: int, ops: list) -> None:
    print(f"seed={seed} size={size} ops={ops}")
    run_schedule(seed, size, ops)


@pytest.mark.soak
@pytest.mark.skipif(not os.environ.get("WAYPOST_SOAK"), reason="soak run: set WAYPOST_SOAK=1")
def test_soak() -> None:
    seeds = int(os.environ.get("WAYPOST_SOAK_SEEDS", "300"))
    for seed in range(seeds):
        rng = random.Random(seed)
        size = rng.choice([3, 5])
        ops = random_ops(rng, rng.randrange(30), 30_000)
        print(f"soak seed={seed} size={size}")
        run_schedule(seed, size, ops, horizon_ms=30_000)
