"""SWIM scale figures on the fake network: `python -m tests.sim.swim_scale [--seed N] [--sizes 50,200,1000]`.

Contract: prints (1) the simulated seconds until N members that all join through one seed member at
the same instant see each other ALIVE, and the same for joins spread evenly over 10 simulated
seconds (time counted from the last join); (2) steady-state bytes sent per member per second (UDP and
stream separately) after convergence, for each size. Everything is seeded; the seed is printed.
Not part of the test suite (1,000 members take a few minutes of wall time).
"""

from __future__ import annotations

import argparse
import time

from agent.gossip.messages import MemberState
from tests.sim.swim_net import SwimNet

TAGS = {"role": "node", "dc": "dc1", "id": "00000000-0000-0000-0000-000000000000", "build": "0.1.0:waypost",
        "vsn": "2", "vsn_min": "2", "vsn_max": "3", "segment": ""}   # what a client agent gossips


def converged(net: SwimNet, n: int) -> bool:
    for m in net.up():
        members = m.swim.members()
        if len(members) != n or any(x.state != MemberState.ALIVE for x in members):
            return False
    return True


def build(seed: int, n: int, stagger: float) -> tuple[SwimNet, float]:
    net = SwimNet(seed)
    names = [f"node-{i:04d}" for i in range(n)]
    for name in names:
        net.add(name, tags=TAGS)
    for i, name in enumerate(names[1:]):
        if stagger:
            net.run_until(i * stagger)
        net.join(name, [names[0]])
    return net, net.now


def join_storm(seed: int, n: int, stagger: float, limit: float) -> tuple[SwimNet, float | None]:
    net, last_join = build(seed, n, stagger)
    ok = net.run_until(last_join + limit, lambda: converged(net, n), check_every=0.25)
    return net, (net.now - last_join) if ok else None


def steady_state(net: SwimNet, max_warmup: float, window: float) -> tuple[float, float, float]:
    """(UDP, stream) bytes per member per second over `window`, once no broadcast is pending; and the
    simulated seconds that draining the join storm's broadcasts took."""
    start = net.now
    net.run_until(start + max_warmup, lambda: all(m.swim.pending_broadcasts() == 0 for m in net.up()),
                  check_every=5.0)
    drained = net.now - start
    udp0 = sum(m.udp_bytes for m in net.members.values())
    tcp0 = sum(m.stream_bytes for m in net.members.values())
    net.run_for(window)
    n = len(net.members)
    udp = (sum(m.udp_bytes for m in net.members.values()) - udp0) / n / window
    tcp = (sum(m.stream_bytes for m in net.members.values()) - tcp0) / n / window
    return udp, tcp, drained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--sizes", default="50,200,1000")
    parser.add_argument("--window", type=float, default=120.0, help="steady-state window, simulated seconds")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"seed={args.seed}")
    for n in sizes:
        wall = time.perf_counter()
        _, t_stagger = join_storm(args.seed, n, 10.0 / n, 120.0)
        net, t_storm = join_storm(args.seed, n, 0.0, 120.0)
        storm = f"{t_storm:.2f}" if t_storm is not None else "no convergence in 120"
        stag = f"{t_stagger:.2f}" if t_stagger is not None else "no convergence in 120"
        print(f"n={n}: converged {storm} s after {n - 1} joined one seed at once; "
              f"{stag} s after the last of joins spread over 10 s", flush=True)
        udp, tcp, drained = steady_state(net, 600.0, args.window)
        print(f"n={n}: join-storm broadcasts drained after {drained:.0f} s; then steady state {udp:.0f} B/s UDP + "
              f"{tcp:.0f} B/s stream (push-pull) per member [{time.perf_counter() - wall:.0f} s wall]", flush=True)


if __name__ == "__main__":
    main()
