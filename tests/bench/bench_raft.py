"""Replicated write benchmark: three waypost servers, fsync on, writes through the HTTP API (not CI).

Usage: .venv/bin/python tests/bench/bench_raft.py [--duration 10] [--connections 1,50] [--failover 10]

Starts three `waypost agent -server -bootstrap-expect 3` processes on 127.0.0.1 (ephemeral ports,
data dirs in a temp dir), then runs wrk against the leader's `PUT /v1/kv/bench/<n>` (256-byte
values, 1,000 rotating keys) for each connection count and prints writes/s with p50/p99 latency.
`--failover N` then kills the leader N times (restarting it each time) while a client writes
and reports the time from kill -9 to the next acknowledged write (median, p99). etcd's figures
come from ../shared/baselines (etcd-cluster.sh + put.lua) when etcd is installed.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.integration.harness import AgentProcess  # noqa: E402

LUA = """
counter = 0
value = string.rep("v", 256)
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/bench/" .. (counter % 1000), nil, value)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(workdir: Path, ports: list[int], only: int | None = None) -> list[AgentProcess]:
    agents = []
    for i, port in enumerate(ports):
        if only is not None and i != only:
            continue
        joins = [x for j, p in enumerate(ports) if j != i for x in ("-retry-join", f"127.0.0.1:{p}")]
        agents.append(AgentProcess(workdir, "-server", "-bootstrap-expect", str(len(ports)), "-node", f"s{i}",
                                   "-data-dir", str(workdir / f"s{i}"), "-bind", "127.0.0.1",
                                   "-server-port", str(port), *joins, dev=False).start())
    return agents


def leader_index(agents: list[AgentProcess], ports: list[int], timeout: float = 30.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for agent in agents:
            try:
                leader = agent.get("/v1/status/leader", timeout=2).json()
            except OSError:
                continue
            if leader:
                return ports.index(int(str(leader).rsplit(":", 1)[1]))
        time.sleep(0.05)
    raise RuntimeError("no leader")


def wrk(port: int, connections: int, duration: int, script: Path) -> tuple[float, str, str]:
    out = subprocess.run(["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency",
                          "-s", str(script), f"http://127.0.0.1:{port}"], capture_output=True, text=True,
                         timeout=duration + 30).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        print(f"  ({errors.group(1)} non-2xx responses)")
    return rate, p50.group(1) if p50 else "?", p99.group(1) if p99 else "?"


def put(port: int, key: str) -> bool:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/kv/{key}", data=b"x", method="PUT")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status == 200
    except OSError:
        return False


def failover(workdir: Path, agents: list[AgentProcess], ports: list[int], trials: int) -> list[float]:
    times = []
    for trial in range(trials):
        lead = leader_index(agents, ports)
        http_ports = {i: a.http_port for i, a in enumerate(agents)}
        others = [i for i in range(len(agents)) if i != lead]
        killed = time.monotonic()
        agents[lead].stop(kill=True)
        n = 0
        while True:
            n += 1
            if put(http_ports[others[n % len(others)]], f"failover/{trial}/{n}"):
                break
        times.append(time.monotonic() - killed)
        agents[lead] = start_cluster(workdir, ports, only=lead)[0]
        leader_index(agents, ports)
        time.sleep(1.0)  # let the restarted server catch up before the next kill
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", default="1,50")
    ap.add_argument("--failover", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-raft-") as tmp:
        workdir = Path(tmp)
        script = workdir / "put.lua"
        script.write_text(LUA)
        ports = [free_port() for _ in range(3)]
        agents = start_cluster(workdir, ports)
        try:
            lead = leader_index(agents, ports)
            for c in (int(x) for x in args.connections.split(",")):
                rate, p50, p99 = wrk(agents[lead].http_port, c, args.duration, script)
                print(f"waypost 3 servers, {c:>2} connections: {rate:8.0f} writes/s  p50 {p50}  p99 {p99}")
            if args.failover:
                times = failover(workdir, agents, ports, args.failover)
                q = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times
                print(f"failover (kill -9 leader → next acknowledged write), {len(times)} trials: "
                      f"median {statistics.median(times):.2f}s  p99 {q[-1]:.2f}s  max {max(times):.2f}s")
                print("  trials: " + " ".join(f"{t:.2f}" for t in times))
        finally:
            for agent in agents:
                agent.stop(kill=True)


if __name__ == "__main__":
    main()
