"""CI fuzz of the DNS listeners: 100,000 random and mutated packets through the UDP and TCP handler
code (no sockets, for speed) plus 5,000 over real sockets; see tests/fuzz_dns.py for what is
checked. The seed is printed (and `WAYPOST_FUZZ_SEED=<n>` replays it); the long run is
`.venv/bin/python -m tests.fuzz_dns --count 1000000`."""

from __future__ import annotations

import os
import random

from tests.fuzz_dns import run


async def test_fuzz_100k_packets_through_udp_and_tcp_handlers() -> None:
    seed = int(os.environ.get("WAYPOST_FUZZ_SEED", random.randrange(1 << 30)))
    print(f"fuzz seed={seed} (replay: WAYPOST_FUZZ_SEED={seed})")
    stats = await run(100_000, seed, socket_count=5_000)
    assert stats.packets == 105_000
    assert stats.replies > 80_000 and len(stats.rcodes) >= 5, stats  # the generators reach every rcode path
