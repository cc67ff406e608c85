"""DNS benchmark: a real `waypost agent -dev` vs knotd serving the same records (not run by CI).

Usage: .venv/bin/python tests/bench/bench_dns.py [--rounds 3] [--duration 5] [--scale] [--churn]

Method (../shared/baselines/README.md): each server is pinned to CPU 0, dnsperf (and the helpers
that register services or churn) to CPU 1; both servers stay up for the whole run and rounds are
interleaved (waypost, knot, waypost, knot, ...); medians are reported: closed-loop queries per
second, server CPU µs per query (utime+stime from /proc/PID/stat ÷ queries), and the average latency
at an open-loop 5,000 qps. The query file is the shared one (A web.service.consul, SRV
_web._tcp.service.consul). The agent is the real process (uvloop, the catalog store, DnsLookup);
`web` has 3 instances on node1..3 (10.0.0.1-3:8080) registered through /v1/catalog/register.
`--scale` first registers 10,000 more services with 10 instances each (100,000 instances on 10,000
nodes); `--churn` changes the `web` service 100 times a second during every waypost measurement
(a catalog write each time, so the answer cache must be invalidated and refilled).
Only 127.0.0.1 is used, on free ephemeral ports, and every run is bounded by --duration.
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
BANNER = re.compile(r"\(HTTP: (?P<http>\d+), DNS: (?P<dns>\d+)\)")

# Registers catalog entries (argv: http port, mode) with a few keep-alive connections; modes:
# "web" (the 3 web instances), "scale" (10k services × 10 instances), "churn" (web, 100 writes/s
# until killed).
HELPER = r'''
import asyncio, json, sys, time
import aiohttp

PORT, MODE = int(sys.argv[1]), sys.argv[2]

def web(i, rev=0):
    return {"Node": f"node{i}", "Address": f"10.0.0.{i}",
            "Service": {"ID": "web", "Service": "web", "Port": 8080, "Meta": {"rev": str(rev)}}}

def scale():
    for s in range(10_000):
        for i in range(10):
            n = (s * 10 + i) % 10_000
            yield {"Node": f"n{n}", "Address": f"10.{100 + n // 65536}.{n // 256 % 256}.{n % 256}",
                   "Service": {"ID": f"svc{s}-{i}", "Service": f"svc{s}", "Port": 8000 + i}}

async def put(session, body):
    async with session.put(f"http://127.0.0.1:{PORT}/v1/catalog/register", data=json.dumps(body)) as r:
        assert r.status == 200, await r.text()

async def main():
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16)) as session:
        if MODE == "web":
            for i in (1, 2, 3):
                await put(session, web(i))
        elif MODE == "scale":
            bodies = scale()
            async def worker():
                for body in bodies:
                    await put(session, body)
            await asyncio.gather(*(worker() for _ in range(16)))
        else:
            rev, start = 0, time.monotonic()
            while True:
                rev += 1
                await put(session, web(1 + rev % 3, rev))
                await asyncio.sleep(max(0.0, start + rev / 100 - time.monotonic()))

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


def ask(port: int, name: bytes, qtype: int = 1) -> bytes:
    labels = b"".join(bytes([len(p)]) + p for p in name.split(b"."))
    probe = bytes.fromhex("abcd01000001000000000000") + labels + b"\x00" + qtype.to_bytes(2) + b"\x00\x01"
    deadline = time.monotonic() + 60
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            s.sendto(probe, ("127.0.0.1", port))
            try:
                reply = s.recv(4096)
            except OSError:
                continue
            if reply[:2] == probe[:2]:
                return reply
    raise RuntimeError("server did not answer")


def helper(http_port: int, mode: str) -> subprocess.Popen:
    return subprocess.Popen(["taskset", "-c", "1", str(PYTHON), "-c", HELPER, str(http_port), mode])


def start_waypost(port: int, workdir: Path, scale: bool) -> subprocess.Popen:
    log_path = workdir / "agent.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["taskset", "-c", "0", str(PYTHON), "-m", "agent", "agent", "-dev", "-node", "bench",
                                 "-http-port", "0", "-dns-port", str(port), "-log-level", "warn"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                                env=dict(os.environ, PYTHONPATH=str(ROOT)))
    deadline = time.monotonic() + 30
    while not (match := BANNER.search(log_path.read_text(errors="replace"))):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"agent did not start:\n{log_path.read_text(errors='replace')}")
        time.sleep(0.05)
    http_port = int(match["http"])
    if helper(http_port, "web").wait(timeout=60):
        raise RuntimeError("registering web failed")
    if scale:
        started = time.monotonic()
        if helper(http_port, "scale").wait(timeout=1800):
            raise RuntimeError("registering the scale catalog failed")
        print(f"registered 100,000 instances in {time.monotonic() - started:.0f} s", file=sys.stderr)
    reply = ask(port, b"web.service.consul")
    if int.from_bytes(reply[6:8]) != 3:
        raise RuntimeError(f"web.service.consul does not give 3 answers: {reply!r}")
    proc.http_port = http_port  # type: ignore[attr-defined]
    return proc


def start_knot(port: int, rundir: Path) -> subprocess.Popen:
    conf = (BASE / "knot.conf.in").read_text().replace("@RUNDIR@", str(rundir)).replace(
        "@WORKERS@", "1").replace("@ZONE@", str(BASE / "service.consul.zone")).replace(
        "127.0.0.1@8600", f"127.0.0.1@{port}")
    path = rundir / "knot.conf"
    path.write_text(conf)
    proc = subprocess.Popen(["taskset", "-c", "0", "knotd", "-c", str(path)], stderr=subprocess.DEVNULL)
    ask(port, b"web.service.consul")
    return proc


def dnsperf(port: int, duration: float, qps: int | None = None) -> dict[str, float]:
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d",
           str(BASE / "queries.txt"), "-l", str(duration), "-c", "4", "-q", "200"]
    if qps:
        cmd += ["-Q", str(qps)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 30).stdout
    found = {
        "completed": re.search(r"Queries completed:\s+(\d+)", out),
        "lost": re.search(r"Queries lost:\s+(\d+)", out),
        "qps": re.search(r"Queries per second:\s+([\d.]+)", out),
        "latency": re.search(r"Average Latency \(s\):\s+([\d.]+)", out),
    }
    if not all(found.values()):
        raise RuntimeError(f"cannot read dnsperf output:\n{out}")
    return {k: float(m.group(1)) for k, m in found.items() if m}


def measure(proc: subprocess.Popen, port: int, duration: float, churn_port: int | None) -> dict[str, float]:
    writer = helper(churn_port, "churn") if churn_port else None
    try:
        before = cpu_seconds(proc.pid)
        result = dnsperf(port, duration)
        result["cpu_us"] = (cpu_seconds(proc.pid) - before) / max(result["completed"], 1) * 1e6
        result["latency_5k_ms"] = dnsperf(port, duration, qps=5000)["latency"] * 1e3
    finally:
        if writer is not None:
            writer.terminate()
            writer.wait(timeout=10)
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
        ports = {"waypost": free_port(), "knot": free_port()}
        procs = {"waypost": start_waypost(ports["waypost"], Path(tmp), args.scale),
                 "knot": start_knot(ports["knot"], Path(tmp))}
        try:
            for _ in range(args.rounds):
                for name in ("waypost", "knot"):
                    churn = procs[name].http_port if args.churn and name == "waypost" else None  # type: ignore[attr-defined]
                    results[name].append(measure(procs[name], ports[name], args.duration, churn))
        finally:
            for proc in procs.values():
                proc.terminate()
                proc.wait(timeout=15)
    med = {name: {k: statistics.median(r[k] for r in rows) for k in rows[0]}
           for name, rows in results.items()}
    label = "waypost" + (" (10k services/100k instances)" if args.scale else "")
    label += " (churn 100 writes/s)" if args.churn else ""
    for name, m in med.items():
        print(f"{label if name == 'waypost' else 'knot':<52} {m['qps']:>8.0f} qps"
              f"  {m['cpu_us']:>6.2f} µs CPU/query  {m['latency_5k_ms']:>6.3f} ms avg @5k qps"
              f"  lost {m['lost']:.0f}")
    w, k = med["waypost"], med["knot"]
    print(f"ratio (per-core throughput by CPU/query): {k['cpu_us'] / w['cpu_us']:.2f}x knot"
          f" · closed-loop qps {w['qps'] / k['qps']:.2f}x"
          f" · latency @5k {w['latency_5k_ms'] / k['latency_5k_ms']:.2f}x")


if __name__ == "__main__":
    main()
