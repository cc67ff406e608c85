"""DNS benchmark: waypost's DNS server vs knotd serving the same records (not run by CI).

Usage: .venv/bin/python tests/bench/bench_dns.py [--rounds 3] [--duration 5] [--scale] [--churn]

Method (../shared/baselines/README.md): each server is pinned to CPU 0 and dnsperf to CPU 1; rounds
are interleaved (waypost, knot, waypost, knot, ...) and medians reported: closed-loop queries per
second, server CPU µs per query (utime+stime from /proc/PID/stat ÷ queries), and the average latency
at an open-loop 5,000 qps. The query file is the shared one (A web.service.consul, SRV
_web._tcp.service.consul; 3 instances). `--scale` adds 10,000 services / 100,000 instances to our
catalog; `--churn` changes the `web` service 100 times a second during the run (cache invalidation).
Only 127.0.0.1 is used, on a free ephemeral port, and every run is bounded by --duration.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT.parent / "shared" / "baselines"
PYTHON = ROOT / ".venv" / "bin" / "python"

SERVER = r'''
import asyncio, sys, random
sys.path.insert(0, sys.argv[1])
from dns.config import DnsConfig
from dns.server import DnsServer
from dns.lookup import ServiceEndpoint, NodeRecord

class BenchLookup:
    def __init__(self, scale):
        self.services, self.index, self.counter = {}, {}, 1
        self.put("web", [self.ep(f"node{i}", f"10.0.0.{i}", "web") for i in (1, 2, 3)])
        if scale:
            for s in range(10_000):
                self.put(f"svc{s}", [self.ep(f"n{s}-{i}", f"10.{s // 250}.{s % 250}.{i + 1}", f"svc{s}")
                                     for i in range(10)])
    def ep(self, node, addr, svc):
        return ServiceEndpoint(node, addr, "", 8080, (), 1, 1, "passing", {}, "dc1", svc, svc)
    def put(self, name, eps):
        self.counter += 1
        self.services[name] = eps
        self.index[name] = self.counter
    async def service_endpoints(self, service, tag, dc):
        return self.services.get(service)
    async def node(self, name, dc):
        return None
    async def ptr(self, address):
        return None
    async def name_servers(self):
        return []
    def change_index(self, service):
        return self.counter if service is None else self.index.get(service, 0)

async def main():
    lookup = BenchLookup(sys.argv[3] == "1")
    server = DnsServer(DnsConfig(), lookup)
    udp, _ = await server.start("127.0.0.1", int(sys.argv[2]))
    print("ready", flush=True)
    if sys.argv[4] == "1":
        while True:  # a writer changing `web` 100 times a second
            await asyncio.sleep(0.01)
            lookup.put("web", list(lookup.services["web"]))
    await asyncio.Event().wait()

try:
    import uvloop
    uvloop.run(main())
except ImportError:
    asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with socket.socket() as t:
        try:
            t.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_ready(port: int, timeout: float = 60.0) -> None:
    probe = bytes.fromhex("abcd01000001000000000000") + b"\x03web\x07service\x06consul\x00\x00\x01\x00\x01"
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(probe, ("127.0.0.1", port))
            try:
                if s.recv(4096)[:2] == probe[:2]:
                    return
            except OSError:
                pass
    raise RuntimeError("server did not answer")


def start_waypost(port: int, scale: bool, churn: bool) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", "0", str(PYTHON), "-c", SERVER, str(ROOT), str(port),
                             "1" if scale else "0", "1" if churn else "0"], stdout=subprocess.DEVNULL)


def start_knot(port: int, rundir: Path) -> subprocess.Popen:
    conf = (BASE / "knot.conf.in").read_text().replace("@RUNDIR@", str(rundir)).replace(
        "@WORKERS@", "1").replace("@ZONE@", str(BASE / "service.consul.zone")).replace(
        "127.0.0.1@8600", f"127.0.0.1@{port}")
    path = rundir / "knot.conf"
    path.write_text(conf)
    return subprocess.Popen(["taskset", "-c", "0", "knotd", "-c", str(path)], stderr=subprocess.DEVNULL)


def dnsperf(port: int, duration: float, qps: int | None = None) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
           str(BASE / "queries.txt"), "-l", str(duration), "-c", "4", "-q", "200"]
    if qps:
        cmd += ["-Q", str(qps)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    found = {
        "completed": re.search(r"Queries completed:\s+(\d+)", out),
        "qps": re.search(r"Queries per second:\s+([\d.]+)", out),
        "latency": re.search(r"Average Latency \(s\):\s+([\d.]+)", out),
    }
    if not all(found.values()):
        raise RuntimeError(f"cannot read dnsperf output:\n{out}")
    return {k: float(m.group(1)) for k, m in found.items() if m}


def measure(proc: subprocess.Popen, port: int, duration: float) -> dict[str, float]:
    wait_ready(port)
    before = cpu_seconds(proc.pid)
    result = dnsperf(port, duration)
    result["cpu_us"] = (cpu_seconds(proc.pid) - before) / max(result["completed"], 1) * 1e6
    result["latency_5k_ms"] = dnsperf(port, duration, qps=5000)["latency"] * 1e3
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--scale", action="store_true")
    parser.add_argument("--churn", action="store_true")
    args = parser.parse_args()
    for tool in ("dnsperf", "knotd", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} not found: apt-get install -y knot dnsperf util-linux")
    results: dict[str, list[dict[str, float]]] = {"waypost": [], "knot": []}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for name in ("waypost", "knot"):
                port = free_port()
                proc = (start_waypost(port, args.scale, args.churn) if name == "waypost"
                        else start_knot(port, Path(tmp)))
                try:
                    results[name].append(measure(proc, port, args.duration))
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)
    med = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
           for name, rows in results.items()}
    label = "waypost" + (" (10k services/100k instances)" if args.scale else "")
    label += " (churn)" if args.churn else ""
    for name, m in med.items():
        print(f"{label if name == 'waypost' else 'knot':<45} {m['qps']:>10.0f} qps"
              f"  {m['cpu_us']:>7.1f} µs CPU/query  {m['latency_5k_ms']:>6.3f} ms avg @5k qps")
    w, k = med["waypost"], med["knot"]
    print(f"ratio (per-core throughput by CPU/query): {k['cpu_us'] / w['cpu_us']:.2f}x knot"
          f" · closed-loop qps {w['qps'] / k['qps']:.2f}x"
          f" · latency @5k {w['latency_5k_ms'] / k['latency_5k_ms']:.2f}x")


if __name__ == "__main__":
    main()
