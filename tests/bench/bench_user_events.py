"""In-process user-event benchmark (not CI): how long one fired event takes to reach every member.

Usage: .venv/bin/python tests/bench/bench_user_events.py [--nodes 200] [--events 20] [--key] [--seed N]

N GossipNodes (LAN defaults) run in this one process on 127.0.0.1 ephemeral ports, each wired
to its own EventRing through agent.gossip.userevents.UserEvents, optionally encrypted (`--key`).
All join the first node; once it sees every member alive, it fires `--events` events one after
the other, each waiting until every other ring holds it. Reported: per-event time to reach all
members (p50 / max), events kept vs expected, send failures, and the loop's CPU per event.
One process runs every node, so the figures include N receivers sharing one CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent.events import EventRing, UserEvent  # noqa: E402
from agent.gossip.config import SwimConfig  # noqa: E402
from agent.gossip.keyring import Keyring  # noqa: E402
from agent.gossip.messages import MemberState  # noqa: E402
from agent.gossip.node import GossipNode  # noqa: E402
from agent.gossip.userevents import UserEvents  # noqa: E402


async def run(args: argparse.Namespace) -> None:
    print(f"seed {args.seed}")
    rng = random.Random(args.seed)
    key = os.urandom(32) if args.key else None
    nodes: list[GossipNode] = []
    rings: list[EventRing] = []
    wirings: list[UserEvents] = []
    for i in range(args.nodes):
        name = f"n{i}"
        node = GossipNode(name, "127.0.0.1", "127.0.0.1", 0, {"role": "node", "dc": "dc1"}, SwimConfig.lan(),
                          keyring=Keyring([key]) if key else None, rng=random.Random(rng.random()))
        await node.start()
        ring = EventRing()
        wirings.append(UserEvents(ring, node, lambda name=name: (name, [])))
        nodes.append(node)
        rings.append(ring)
        if i:
            await node.join([f"127.0.0.1:{nodes[0].port}"])
    try:
        deadline = time.monotonic() + 60
        while sum(m.state == MemberState.ALIVE for m in nodes[0].members()) < args.nodes:
            if time.monotonic() > deadline:
                raise SystemExit("the first node never saw every member alive")
            await asyncio.sleep(0.05)
        times: list[float] = []
        cpu_start = time.process_time()
        for _ in range(args.events):
            event = UserEvent(id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), name="bench", payload=b"x" * 64)
            start = time.monotonic()
            rings[0].fire(event, "n0", [])
            while not all(len(r) and r.list()[-1].id == event.id for r in rings[1:]):
                if time.monotonic() - start > 30:
                    raise SystemExit("an event did not reach every member within 30 s")
                await asyncio.sleep(0.001)
            times.append(time.monotonic() - start)
        cpu = time.process_time() - cpu_start
        kept = sum(len(r) for r in rings[1:])
        stats = wirings[0].stats
        print(f"nodes {args.nodes}, events {args.events}, encrypted {bool(key)}")
        print(f"reach-all time: p50 {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
        print(f"kept {kept} of {args.events * (args.nodes - 1)} expected; sent {stats['sent']}, "
              f"send failures {stats['send_failures']}; duplicates {sum(w.stats['duplicate'] for w in wirings)}")
        print(f"process CPU per event (firer + every receiver): {cpu / args.events * 1000:.1f} ms")
    finally:
        for wiring in wirings:
            await wiring.close()
        await asyncio.gather(*(n.close() for n in nodes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=200)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--key", action="store_true")
    parser.add_argument("--seed", type=int, default=random.randrange(1 << 30))
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
