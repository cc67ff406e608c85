"""False-failure soak of the SWIM core: `python -m tests.sim.swim_soak [--seeds N] [--start S] [--loss P]
[--members M] [--seconds T] [--no-tcp-pings]`.

Contract: for each seed, builds an M-member cluster with Consul's LAN timing on the seeded fake network
(tests/sim/swim_net.py: loss P on every UDP link; streams reliable but late by TCP retransmission
timeouts under loss), lets it converge, runs T simulated seconds with nobody
crashed, and counts every "failed" event (a live member declared DEAD by some observer). Prints each
failing seed with its first false verdicts (observer → victim at time t) plus totals of suspicions and
refutations, and exits non-zero if any seed failed. Not part of the test suite (≈1 s of wall time
per seed at the defaults).
"""

from __future__ import annotations

import argparse
import sys
import time

from agent.gossip.swim import SwimConfig
from tests.sim.swim_net import SwimNet


def run_seed(seed: int, members: int, loss: float, seconds: float, *, tcp_pings: bool = True,
             ) -> tuple[list[tuple[str, str, float]], int, int]:
    """(false verdicts (observer, victim, time), suspicions, refutes) of one seeded run."""
    net = SwimNet(seed, SwimConfig(tcp_pings=tcp_pings), loss=loss)
    names = [f"n{i}" for i in range(members)]
    for name in names:
        net.add(name)
    for name in names[1:]:
        net.join(name, ["n0"])
    net.run_until(30.0, net.converged)
    net.run_for(seconds)
    verdicts = [(m.name, e.member.name, e.member.state_changed) for m in net.members.values()
                for e in m.events if e.kind == "failed"]
    suspicions = sum(m.swim.stats["suspicions"] for m in net.members.values())
    refutes = sum(m.swim.stats["refutes"] for m in net.members.values())
    return verdicts, suspicions, refutes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--start", type=int, default=1000)
    parser.add_argument("--loss", type=float, default=0.10)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--no-tcp-pings", action="store_true", help="disable the TCP fallback ping (memberlist's "
                        "DisableTcpPings) to measure the UDP-only detector")
    args = parser.parse_args()
    failed = verdict_total = sus_total = ref_total = 0
    started = time.monotonic()
    for seed in range(args.start, args.start + args.seeds):
        verdicts, suspicions, refutes = run_seed(seed, args.members, args.loss, args.seconds,
                                                 tcp_pings=not args.no_tcp_pings)
        sus_total += suspicions
        ref_total += refutes
        if verdicts:
            failed += 1
            verdict_total += len(verdicts)
            shown = ", ".join(f"{o}→{v}@{t:.1f}" for o, v, t in verdicts[:4])
            print(f"FAILED seed={seed}: {len(verdicts)} false DEAD ({shown})", flush=True)
    print(f"{args.seeds} seeds (start {args.start}), {args.members} members, loss {args.loss:.2f}, "
          f"tcp pings {'off' if args.no_tcp_pings else 'on'}, "
          f"{args.seconds:.0f} s each: {failed} seeds with a false DEAD ({verdict_total} verdicts); "
          f"{sus_total} suspicions, {ref_total} refutations; {time.monotonic() - started:.1f} s wall")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
