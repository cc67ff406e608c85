"""In-process gossip benchmark (not CI): crash-detection time of real GossipNodes on loopback.

Usage: .venv/bin/python tests/bench/bench_gossip_nodes.py [--nodes 5] [--trials 10] [--loss 0.0]
       [--key] [--seed N]

N GossipNodes (LAN defaults: probe 1 s, timeout 500 ms, suspicion ×4) run in this one process on
127.0.0.1 ephemeral ports, real UDP and TCP, optionally encrypted (`--key`) and with a fraction of
sent packets dropped (`--loss`, through the drop hook, "out" direction only). A trial closes one
random node without a leave (a crash) and times, from the close, until the first and until the
last surviving node declares it DEAD; the node is then restarted under a new name and joined
before the next trial. Also reported: the process CPU time per node per second, and any member
ever declared failed that was not crashed (false positives). This measures the driver + core
alone; tests/bench/bench_failure_detection.py measures whole agents and DNS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent.gossip.config import MemberEvent, SwimConfig  # noqa: E402
from agent.gossip.keyring import Keyring  # noqa: E402
from agent.gossip.messages import MemberState  # noqa: E402
from agent.gossip.node import GossipNode  # noqa: E402


async def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    print(f"seed {args.seed}")
    key = os.urandom(32) if args.key else None
    config = SwimConfig.lan()
    crashed: set[str] = set()
    false_positives: list[str] = []
    nodes: dict[str, GossipNode] = {}
    counter = 0

    def drop(direction: str, packet: bytes) -> bool:
        return direction == "out" and rng.random() < args.loss

    def watch(event: MemberEvent) -> None:
        if event.kind == "failed" and event.member.name not in crashed:
            false_positives.append(event.member.name)

    async def start_node() -> GossipNode:
        nonlocal counter
        counter += 1
        name = f"n{counter}"
        node = GossipNode(name, "127.0.0.1", "127.0.0.1", 0, {"role": "node", "dc": "dc1"}, config,
                          keyring=Keyring([key]) if key else None, rng=random.Random(rng.random()),
                          drop=drop)
        await node.start()
        node.subscribe(watch)
        if nodes:
            await node.join([f"127.0.0.1:{n.port}" for n in list(nodes.values())[:3]])
        nodes[name] = node
        return node

    def converged() -> bool:
        names = set(nodes)
        return all({m.name for m in n.members() if m.state == MemberState.ALIVE} >= names for n in nodes.values())

    async def wait(cond, limit: float) -> bool:  # type: ignore[no-untyped-def]
        end = time.monotonic() + limit
        while not cond():
            if time.monotonic() > end:
                return False
            await asyncio.sleep(0.01)
        return True

    for _ in range(args.nodes):
        await start_node()
    assert await wait(converged, 30), "cluster did not converge"
    cpu0, wall0 = time.process_time(), time.monotonic()
    first: list[float] = []
    last: list[float] = []
    for trial in range(args.trials):
        victim_name = rng.choice(sorted(nodes))
        victim = nodes.pop(victim_name)
        crashed.add(victim_name)
        t0 = time.monotonic()
        await victim.close()

        def dead_on(victim_name: str = victim_name) -> int:
            return sum(1 for n in nodes.values()
                       if any(m.name == victim_name and m.state == MemberState.DEAD for m in n.members()))
        if not await wait(lambda: dead_on() >= 1, 60):
            print(f"trial {trial}: never detected")
            continue
        first.append(time.monotonic() - t0)
        await wait(lambda: dead_on() == len(nodes), 60)
        last.append(time.monotonic() - t0)
        print(f"trial {trial}: {victim_name} dead on first {first[-1]:.2f}s, on all {last[-1]:.2f}s")
        await start_node()
        await wait(converged, 30)
    cpu = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    for label, xs in (("first", first), ("all", last)):
        if xs:
            xs = sorted(xs)
            p99 = xs[min(len(xs) - 1, int(0.99 * len(xs)))]
            print(f"detection ({label}): n={len(xs)} p50 {statistics.median(xs):.2f}s p99 {p99:.2f}s max {xs[-1]:.2f}s")
    print(f"CPU {cpu * 100:.1f}% of one core for {args.nodes} nodes ({cpu * 100 / args.nodes:.2f}% per node)")
    print(f"false positives: {len(false_positives)} {sorted(set(false_positives))}")
    print(f"unauthenticated: {sum(n.stats['unauthenticated'] for n in nodes.values())}, "
          f"dropped_out: {sum(n.stats['dropped_out'] for n in nodes.values())}")
    await asyncio.gather(*(n.close() for n in nodes.values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--key", action="store_true")
    parser.add_argument("--seed", type=int, default=int.from_bytes(os.urandom(4), "big"))
    args = parser.parse_args()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
