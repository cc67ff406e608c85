"""Failure-detection benchmark (issue 6; not CI): how fast a dead client's instances leave DNS.

Usage: .venv/bin/python tests/bench/bench_failure_detection.py [--agents 5,20] [--trials 20]
       [--false-positive-minutes 10 --loss 0.05] [--gossip '{"probe_interval": "500ms", ...}']

Starts 3 servers and N-3 client agents, each on its own loopback address (127.0.0.x) with
Consul's LAN gossip defaults (probe 1 s, timeout 500 ms, suspicion ×4). Every client registers
one instance of `svc`. A trial kills -9 one client and times, from the kill, until its address is
gone from `svc.service.consul` on another agent's DNS (polled every 20 ms over UDP); the client is
then restarted and must be back before the next trial. Goal: p99 ≤ 5 s.

`--false-positive-minutes M --loss P` runs the cluster for M minutes with a fraction P of gossip
packets dropped in every agent (WAYPOST_TEST_GOSSIP_DROP) and counts members ever reported failed
and instances that ever left DNS. Goal: 0. Consul itself is the peer here and is not installed;
the figures are compared with the goal the issue sets (Consul's documented bound with these timings).

`--gossip JSON` gives every agent a `gossip_lan` block (e.g. a faster probe interval). Each result
line also prints the floor those timings impose: a dead member is suspected at the end of the
first probe round that reaches it (≥ probe_interval after the death) and declared dead no sooner
than memberlist's minimum suspicion timeout, suspicion_mult × max(1, log10 n) × probe_interval —
with the LAN defaults 1 + 4 = 5.0 s for 5 agents and 1 + 5.2 = 6.2 s for 20, before the leader
even writes the catalog change.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from dnslib import QTYPE, DNSRecord

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from agent.config_model import GossipConfig  # noqa: E402
from checks.definition import parse_duration  # noqa: E402
from tests.integration.harness import AgentProcess  # noqa: E402


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dns_addresses(host: str, port: int, name: str) -> set[str] | None:
    """Every A record for `name`, over TCP (UDP answers hold at most `udp_answer_limit`, 3)."""
    try:
        reply = DNSRecord.parse(DNSRecord.question(name, "A").send(host, port, tcp=True, timeout=1.0))
    except (OSError, ValueError):
        return None
    return {str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A}


class BenchCluster:
    def __init__(self, tmp: Path, size: int, loss: float = 0.0, gossip: dict | None = None) -> None:
        self.tmp, self.size, self.loss, self.gossip = tmp, size, loss, gossip or {}
        self.names = [f"s{i}" for i in range(1, 4)] + [f"c{i}" for i in range(1, size - 2)]
        self.address = {name: f"127.0.1.{i + 1}" for i, name in enumerate(self.names)}
        self.serf_port = {name: free_port(self.address[name]) for name in self.names}
        self.agents: dict[str, AgentProcess] = {}

    def start(self, name: str) -> AgentProcess:
        addr = self.address[name]
        config = self.tmp / f"{name}.d"
        config.mkdir(exist_ok=True)
        if self.gossip:
            (config / "gossip.json").write_text(json.dumps({"gossip_lan": self.gossip}))
        if name.startswith("c"):
            (config / "svc.json").write_text(json.dumps({"service": {"name": "svc", "id": f"svc-{name}",
                                                                     "port": 80}}))
        args = ["-node", name, "-bind", addr, "-client", addr, "-data-dir", str(self.tmp / name),
                "-serf-lan-port", str(self.serf_port[name]), "-config-dir", str(config), "-retry-interval", "1s"]
        for seed in ("s1", "s2", "s3"):
            if seed != name:
                args += ["-retry-join", f"{self.address[seed]}:{self.serf_port[seed]}"]
        if name.startswith("s"):
            args += ["-server", "-bootstrap-expect", "3"]
        old = os.environ.get("WAYPOST_TEST_GOSSIP_DROP")
        os.environ["WAYPOST_TEST_GOSSIP_DROP"] = str(self.loss)
        try:
            agent = AgentProcess(self.tmp, *args, dev=False).start(timeout=60)
        finally:
            if old is None:
                os.environ.pop("WAYPOST_TEST_GOSSIP_DROP", None)
            else:
                os.environ["WAYPOST_TEST_GOSSIP_DROP"] = old
        self.agents[name] = agent
        return agent

    def clients(self) -> list[str]:
        return [n for n in self.names if n.startswith("c")]

    def instances(self, observer: str) -> set[str] | None:
        agent = self.agents[observer]
        return dns_addresses(agent.host, agent.dns_port, "svc.service.consul")

    def wait_all_instances(self, observer: str, timeout: float = 60.0) -> None:
        want = {self.address[c] for c in self.clients()}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.instances(observer) == want:
                return
            time.sleep(0.1)
        raise SystemExit(f"cluster of {self.size} did not converge: {self.instances(observer)} != {want}")

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop(kill=True)


def detection_trials(size: int, trials: int, gossip: dict) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = BenchCluster(Path(tmp), size, gossip=gossip)
        try:
            for name in cluster.names:
                cluster.start(name)
            observer = "s2"
            cluster.wait_all_instances(observer)
            times = []
            for trial in range(trials):
                victim = cluster.clients()[trial % len(cluster.clients())]
                gone = cluster.address[victim]
                cluster.agents[victim].stop(kill=True)
                killed = time.monotonic()
                while True:
                    seen = cluster.instances(observer)
                    if seen is not None and gone not in seen:
                        break
                    if time.monotonic() - killed > 60:
                        raise SystemExit(f"{victim} still in DNS after 60 s")
                    time.sleep(0.02)
                times.append(time.monotonic() - killed)
                print(f"  {size} agents, trial {trial + 1}: {victim} gone from DNS after {times[-1]:.2f}s", flush=True)
                cluster.start(victim)
                cluster.wait_all_instances(observer)
            return times
        finally:
            cluster.stop()


def false_positives(size: int, minutes: float, loss: float, gossip: dict) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        cluster = BenchCluster(Path(tmp), size, loss, gossip)
        try:
            for name in cluster.names:
                cluster.start(name)
            cluster.wait_all_instances("s2")
            want = {cluster.address[c] for c in cluster.clients()}
            dns_misses = 0
            failed_seen: set[str] = set()
            deadline = time.monotonic() + minutes * 60
            while time.monotonic() < deadline:
                seen = cluster.instances("s2")
                if seen is not None and seen != want:
                    dns_misses += 1
                members = cluster.agents["s1"].get("/v1/agent/members", timeout=5).json()
                failed_seen |= {m["Name"] for m in members if m["Status"] != 1}  # type: ignore[union-attr]
                time.sleep(0.5)
            return len(failed_seen), dns_misses
        finally:
            cluster.stop()


def detection_floor(size: int, gossip: dict) -> float:
    """The earliest a member can be declared dead after it dies (see the module docstring)."""
    section = GossipConfig()
    for name, value in gossip.items():
        setattr(section, name, parse_duration(value) if isinstance(value, str) else value)
    probe = section.probe_interval
    return probe + section.suspicion_mult * max(1.0, math.log10(max(1, size))) * probe


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", default="5,20")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--false-positive-minutes", type=float, default=0.0)
    parser.add_argument("--loss", type=float, default=0.05)
    parser.add_argument("--gossip", type=json.loads, default={}, help="gossip_lan overrides (JSON)")
    args = parser.parse_args()
    print(f"gossip_lan: {json.dumps(args.gossip) if args.gossip else 'LAN defaults'}")
    for size in (int(n) for n in args.agents.split(",") if args.trials > 0):
        times = sorted(detection_trials(size, args.trials, args.gossip))
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        print(f"{size} agents, {len(times)} trials: median {statistics.median(times):.2f}s, "
              f"p99 {p99:.2f}s, max {times[-1]:.2f}s, floor {detection_floor(size, args.gossip):.2f}s "
              f"(goal: p99 <= 5 s → ratio {p99 / 5.0:.2f} of the bound)")
    if args.false_positive_minutes:
        size = int(args.agents.split(",")[0])
        failed, misses = false_positives(size, args.false_positive_minutes, args.loss, args.gossip)
        print(f"{size} agents, {args.false_positive_minutes:g} min at {args.loss:.0%} gossip loss: "
              f"{failed} members ever not alive, {misses} DNS polls missing an instance (goal: 0)")


if __name__ == "__main__":
    main()
