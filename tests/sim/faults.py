"""Random fault schedules for the Raft simulation, shared by the hypothesis test and the soak run.

Contract: `run_schedule(seed, size, ops, ...)` runs a cluster of `size` nodes through `ops`
(each `(at_ms, kind, arg)`: crash, restart, partition, heal, loss, dup) with a steady stream of
proposals, then heals everything, restarts every node, and checks liveness (a leader appears,
every node applies everything committed) and that every acknowledged proposal is applied
everywhere. Safety invariants are checked throughout by the cluster. Failures name the seed.
"""

from __future__ import annotations

import random

from tests.sim.cluster import Cluster, NetConfig

KINDS = ("crash", "restart", "partition", "heal", "loss", "dup")
Op = tuple[int, str, int]


def random_ops(rng: random.Random, count: int, horizon_ms: int) -> list[Op]:
    return sorted((rng.randrange(horizon_ms), rng.choice(KINDS), rng.randrange(1 << 16)) for _ in range(count))


def run_schedule(seed: int, size: int, ops: list[Op], horizon_ms: int = 12_000, snapshot_every: int = 40) -> Cluster:
    ids = [f"n{i}" for i in range(size)]
    c = Cluster(seed, ids, NetConfig(max_latency=20), snapshot_every=snapshot_every, trailing=10)
    pick = random.Random(seed ^ 0x5EED)
    written = 0
    for at, kind, arg in [*sorted(ops), (horizon_ms, "end", 0)]:
        while c.now < at:  # a proposal every ~25 ms to whoever leads, a read now and then
            step = min(25, at - c.now)
            c.run_for(step)
            written += 1
            c.propose(f"p{written}".encode())
            if written % 7 == 0:
                c.read(ids[arg % size])
        node = ids[arg % size]
        if kind == "crash":
            up = [n for n in ids if c.nodes[n].up]
            if len(up) > 1:
                c.crash(node)
        elif kind == "restart":
            c.restart(node)
        elif kind == "partition":
            shuffled = ids[:]
            pick.shuffle(shuffled)
            cut = 1 + arg % (size - 1)
            c.partition(shuffled[:cut], shuffled[cut:])
        elif kind == "heal":
            c.heal()
        elif kind == "loss":
            c.net.loss = (arg % 4) * 0.1   # 0 … 30 %
        elif kind == "dup":
            c.net.duplicate = (arg % 3) * 0.1
    c.heal()
    c.net.loss = c.net.duplicate = 0.0
    for sid in ids:
        c.restart(sid)
    assert c.run_until(c.converged, 60_000), f"seed={seed}: no convergence 60 s after healing (ops={ops})"
    c.check_acked_everywhere()
    return c
