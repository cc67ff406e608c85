"""HTTP read benchmark: waypost vs nginx serving the same bytes (not run by CI).

Usage: .venv/bin/python tests/bench/bench_http.py [--rounds 3] [--duration 10] [--scale]

Method (../shared/baselines/README.md): the server is pinned to CPU 0 and wrk to CPU 1, rounds are
interleaved (waypost, nginx, waypost, nginx, ...), medians of the rounds are reported with p99
latency and the server's CPU time per request (utime+stime from /proc/PID/stat). Only 127.0.0.1
is used and every run is bounded by --duration.
`--scale` then registers 10,000 services / 100,000 instances and reports RSS, the read of one
service against the small-catalog figure, and registration → blocked-watcher wake-up latency.
"""

from __future__ import annotations

import argparse
import asyncio
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

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.integration.harness import AgentProcess  # noqa: E402

BASELINES = ROOT.parent / "shared" / "baselines"
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime+stime of a process and its live children (nginx serves from a worker process)."""
    total = 0.0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for one in pids:
        fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / TICKS
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(url: str, duration: int, pid: int) -> dict:
    before = cpu_seconds(pid)
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", "-c50", f"-d{duration}s", "--latency", url],
                         capture_output=True, text=True, timeout=duration + 30).stdout
    used = cpu_seconds(pid) - before
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p99_ms": float(p99.group(1)) * scale, "cpu_us": used / max(total, 1) * 1e6,
            "errors": int(non2xx.group(1)) if non2xx else 0}


def start_nginx(workdir: Path, body: bytes, port: int) -> subprocess.Popen:
    (workdir / "web.json").write_bytes(body)
    conf = (BASELINES / "nginx.conf.in").read_text().replace("@RUN@", str(workdir)).replace(
        "@DIR@", str(workdir)).replace("127.0.0.1:8501", f"127.0.0.1:{port}")
    (workdir / "nginx.conf").write_text(conf)
    proc = subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", str(workdir / "nginx.conf"),
                             "-p", str(workdir)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise RuntimeError("nginx did not start")


async def register_instances(base: str, services: int, per_service: int, concurrency: int = 64) -> float:
    started = time.monotonic()
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for s in range(services):
        for i in range(per_service):
            node = f"node-{i}"
            queue.put_nowait({"Node": node, "Address": f"10.{i // 250}.{i % 250}.1",
                              "Service": {"Service": f"svc-{s}", "ID": f"svc-{s}-{i}", "Port": 1000 + i,
                                          "Tags": ["v1"]}})
    async with aiohttp.ClientSession() as session:
        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                async with session.put(f"{base}/v1/catalog/register", json=body) as resp:
                    assert resp.status == 200, await resp.text()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.monotonic() - started


async def watch_latency(base: str, samples: int = 20) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as session:
        for n in range(samples):
            async with session.get(f"{base}/v1/health/service/svc-0") as resp:
                index = resp.headers["X-Consul-Index"]
            waiter = asyncio.ensure_future(session.get(f"{base}/v1/health/service/svc-0?index={index}&wait=30s"))
            await asyncio.sleep(0.05)  # the watcher is parked in the agent before the write is sent
            body = {"Node": "watch-node", "Address": "10.9.9.9",
                    "Service": {"Service": "svc-0", "ID": f"watch-{n}", "Port": 1}}
            sent = time.monotonic()
            async with session.put(f"{base}/v1/catalog/register", json=body) as resp:
                assert resp.status == 200
            resp = await waiter
            await resp.read()
            latencies.append((time.monotonic() - sent) * 1000)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--scale", action="store_true")
    args = parser.parse_args()
    if not shutil.which("wrk") or not shutil.which("nginx"):
        sys.exit("needs wrk and nginx: apt-get install -y wrk nginx-light")
    workdir = Path(tempfile.mkdtemp(prefix="waypost-bench-"))
    agent = AgentProcess(workdir, "-node", "bench", "-log-level", "warn")
    agent.start()
    subprocess.run(["taskset", "-pc", "0", str(agent.proc.pid)], capture_output=True, check=True)
    for i in range(3):
        agent.put("/v1/catalog/register", {"Node": f"node{i + 1}", "Address": f"10.0.0.{i + 1}",
                                           "Service": {"Service": "web", "ID": f"web-{i + 1}", "Port": 8080,
                                                       "Tags": ["v1", "primary"]}})
    paths = {"catalog": "/v1/catalog/service/web", "health": "/v1/health/service/web?passing"}
    for path in paths.values():
        agent.get(path)  # warm the read cache, as any earlier reader would have (see agent/http/fastpath.py)
    nginx_port = free_port()
    nginx = start_nginx(workdir, agent.get(paths["catalog"]).body, nginx_port)
    try:
        results: dict[str, list[dict]] = {"catalog": [], "health": [], "nginx": []}
        for _ in range(args.rounds):
            for name, path in paths.items():
                results[name].append(wrk(agent.base + path, args.duration, agent.proc.pid))
            results["nginx"].append(wrk(f"http://127.0.0.1:{nginx_port}/v1/catalog/service/web",
                                        args.duration, nginx.pid + 0))
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in results.items()}
        for name in ("catalog", "health"):
            print(f"{paths[name]:40s} {med[name]['rps']:9.0f} req/s  p99 {med[name]['p99_ms']:6.2f} ms  "
                  f"{med[name]['cpu_us']:6.1f} us CPU/req  ratio to nginx {med[name]['rps'] / med['nginx']['rps']:.3f}"
                  f"  (CPU ratio {med['nginx']['cpu_us'] / med[name]['cpu_us']:.3f})")
        print(f"{'nginx static file':40s} {med['nginx']['rps']:9.0f} req/s  p99 {med['nginx']['p99_ms']:6.2f} ms")
        if args.scale:
            took = asyncio.run(register_instances(agent.base, 10_000, 10))
            print(f"registered 100,000 instances of 10,000 services in {took:.0f}s; "
                  f"agent RSS {rss_mib(agent.proc.pid):.0f} MiB")
            # the same answer (web, 3 instances) read again with the big catalog around it
            agent.get(paths["catalog"])
            big = wrk(agent.base + paths["catalog"], args.duration, agent.proc.pid)
            print(f"{paths['catalog']} with 100,000 instances registered: {big['rps']:.0f} req/s, "
                  f"{big['cpu_us']:.1f} us CPU/req (small catalog: {med['catalog']['cpu_us']:.1f} us CPU/req; "
                  f"CPU ratio {big['cpu_us'] / med['catalog']['cpu_us']:.3f})")
            agent.get("/v1/catalog/service/svc-42")
            other = wrk(agent.base + "/v1/catalog/service/svc-42", args.duration, agent.proc.pid)
            print(f"/v1/catalog/service/svc-42 (10 instances) at scale: {other['rps']:.0f} req/s, "
                  f"{other['cpu_us']:.1f} us CPU/req")
            lat = asyncio.run(watch_latency(agent.base))
            print(f"registration → blocked watcher: median {statistics.median(lat):.2f} ms, "
                  f"max {max(lat):.2f} ms over {len(lat)} samples")
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
