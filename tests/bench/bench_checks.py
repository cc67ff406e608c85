"""Health-check load benchmark: one agent running 1,000 HTTP + 1,000 TCP checks (not run by CI).

Usage: .venv/bin/python tests/bench/bench_checks.py [--http 1000] [--tcp 1000] [--duration 20]
       [--profile out.txt]

Method: a target process (pinned to CPU 1) serves `GET /` → 200 "ok" on one port and accepts and
closes TCP connections on another, counting both. A real `waypost agent -dev` (pinned to CPU 0,
log level WARN; GC thresholds as agent/agent.py GC_THRESHOLDS) gets `web` (3 catalog instances,
for the latency probes), then N services
`bench-http-i` with an HTTP check and N `bench-tcp-i` with a TCP check (interval 1 s, timeout 1 s)
through `/v1/agent/service/register`. Two measurement phases of `--duration` seconds each, idle (no
checks) and loaded (after every check has passed once); in each, a sampler in this process (CPU 1)
wakes every 50 ms and, one after the other, times:
  - lag: `GET /v1/status/leader` on a kept-alive connection — the event-loop lag *measured from
    outside* (the agent does nothing for it but get scheduled, so its latency above the idle
    figure is time the request waited for the loop);
  - HTTP: `GET /v1/health/service/web?passing` (keep-alive);
  - DNS: `A web.service.consul` over UDP.
Reported: p50/p99/max of each, the agent's CPU use (utime+stime from /proc over wall time, in
cores), the probe rates the target saw (should be ~N/s each), and the verdict against the goals
(lag p99 <= 20 ms, CPU < 1 core, HTTP/DNS p99 within 2x idle). `--profile FILE` runs
`py-spy record --format raw` on the agent during the loaded phase (py-spy must be installed).
Only 127.0.0.1 and ephemeral ports are used; the agent and target are stopped by their PIDs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
PYTHON = ROOT / ".venv" / "bin" / "python"
BANNER = re.compile(r"\(HTTP: (?P<http>\d+), DNS: (?P<dns>\d+)\)")
SAMPLE_EVERY = 0.05
GOALS = {"lag_p99_ms": 20.0, "cpu_cores": 1.0, "latency_ratio": 2.0}

TARGET = r'''
import asyncio, json, sys
from aiohttp import web
try:
    import uvloop
    uvloop.install()
except ImportError:
    pass

counts = {"http": 0, "tcp": 0}

async def ok(request):
    counts["http"] += 1
    return web.Response(text="ok")

async def stats(request):
    return web.json_response(counts)

async def on_tcp(reader, writer):
    counts["tcp"] += 1
    writer.close()

async def main():
    app = web.Application()
    app.router.add_get("/stats", stats)
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    tcp = await asyncio.start_server(on_tcp, "127.0.0.1", 0, backlog=4096)
    print(json.dumps({"http": runner.addresses[0][1], "tcp": tcp.sockets[0].getsockname()[1]}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def dns_query(name: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return header + labels + struct.pack("!HH", 1, 1)


def pin(cpu: int) -> list[str]:
    return ["taskset", "-c", str(cpu)] if shutil.which("taskset") and (os.cpu_count() or 1) > 1 else []


def start_target() -> tuple[subprocess.Popen, dict[str, int]]:
    proc = subprocess.Popen([*pin(1), str(PYTHON), "-c", TARGET], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def start_agent(workdir: Path) -> tuple[subprocess.Popen, int, int]:
    log = open(workdir / "agent.log", "wb")  # noqa: SIM115 - closed with the process
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([*pin(0), str(PYTHON), "-m", "agent", "agent", "-dev", "-node", "bench",
                             "-http-port", "0", "-dns-port", "0", "-log-level", "WARN"],
                            stdout=log, stderr=subprocess.STDOUT, cwd=workdir, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        match = BANNER.search((workdir / "agent.log").read_text(errors="replace"))
        if match:
            return proc, int(match["http"]), int(match["dns"])
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"agent did not start:\n{(workdir / 'agent.log').read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def register(session: aiohttp.ClientSession, base: str, target: dict[str, int], n_http: int,
                   n_tcp: int) -> float:
    for i in (1, 2, 3):
        body = {"Node": f"node{i}", "Address": f"10.0.0.{i}",
                "Service": {"ID": "web", "Service": "web", "Port": 8080}}
        async with session.put(f"{base}/v1/catalog/register", json=body) as reply:
            assert reply.status == 200, await reply.text()
    bodies = [{"Name": f"bench-http-{i}", "Port": 10000 + i,
               "Check": {"HTTP": f"http://127.0.0.1:{target['http']}/", "Interval": "1s", "Timeout": "1s"}}
              for i in range(n_http)]
    bodies += [{"Name": f"bench-tcp-{i}", "Port": 20000 + i,
                "Check": {"TCP": f"127.0.0.1:{target['tcp']}", "Interval": "1s", "Timeout": "1s"}}
               for i in range(n_tcp)]
    pending = iter(bodies)
    started = time.monotonic()

    async def worker() -> None:
        for body in pending:
            async with session.put(f"{base}/v1/agent/service/register", json=body) as reply:
                assert reply.status == 200, await reply.text()

    await asyncio.gather(*(worker() for _ in range(8)))
    return time.monotonic() - started


async def wait_all_passing(session: aiohttp.ClientSession, base: str, total: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    passing = 0
    while time.monotonic() < deadline:
        async with session.get(f"{base}/v1/agent/checks") as reply:
            checks = await reply.json()
        passing = sum(1 for c in checks.values() if c["Status"] == "passing")
        if passing >= total:
            return passing
        await asyncio.sleep(0.5)
    return passing


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def sample(session: aiohttp.ClientSession, base: str, dns_port: int, duration: float) -> dict:
    loop = asyncio.get_running_loop()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    udp.connect(("127.0.0.1", dns_port))
    lag: list[float] = []
    http: list[float] = []
    dns: list[float] = []
    errors = 0
    end = loop.time() + duration
    tick = loop.time()
    qid = 0
    try:
        while loop.time() < end:
            tick += SAMPLE_EVERY
            t0 = time.perf_counter()
            async with session.get(f"{base}/v1/status/leader") as reply:
                await reply.read()
            t1 = time.perf_counter()
            async with session.get(f"{base}/v1/health/service/web?passing") as reply:
                body = await reply.read()
                errors += reply.status != 200 or len(json.loads(body)) != 3
            t2 = time.perf_counter()
            qid = (qid + 1) & 0xFFFF
            await loop.sock_sendall(udp, dns_query("web.service.consul", qid))
            try:
                answer = await asyncio.wait_for(loop.sock_recv(udp, 4096), 2.0)
                errors += struct.unpack("!H", answer[6:8])[0] != 3
            except TimeoutError:
                errors += 1
            t3 = time.perf_counter()
            lag.append((t1 - t0) * 1000)
            http.append((t2 - t1) * 1000)
            dns.append((t3 - t2) * 1000)
            await asyncio.sleep(max(0.0, tick - loop.time()))
    finally:
        udp.close()
    return {"lag": lag, "http": http, "dns": dns, "errors": errors}


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p99": round(pct(values, 0.99), 2),
            "max": round(max(values), 2), "n": len(values)}


async def phase(session: aiohttp.ClientSession, base: str, dns_port: int, agent_pid: int,
                target_base: str, duration: float) -> dict:
    async with session.get(f"{target_base}/stats") as reply:
        hits0 = await reply.json()
    cpu0, wall0 = cpu_seconds(agent_pid), time.monotonic()
    got = await sample(session, base, dns_port, duration)
    cpu1, wall1 = cpu_seconds(agent_pid), time.monotonic()
    async with session.get(f"{target_base}/stats") as reply:
        hits1 = await reply.json()
    wall = wall1 - wall0
    return {
        "cpu_cores": round((cpu1 - cpu0) / wall, 3),
        "lag_ms": summary(got["lag"]), "http_ms": summary(got["http"]), "dns_ms": summary(got["dns"]),
        "errors": got["errors"],
        "http_probes_per_s": round((hits1["http"] - hits0["http"]) / wall, 1),
        "tcp_probes_per_s": round((hits1["tcp"] - hits0["tcp"]) / wall, 1),
    }


def profile(pid: int, seconds: float, out: str) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
    if not Path(spy).exists():
        print("py-spy not found: no profile", file=sys.stderr)
        return None
    return subprocess.Popen([*pin(1), spy, "record", "--pid", str(pid), "--duration", str(int(seconds)),
                             "--format", "raw", "--output", out, "--nonblocking"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def run(args: argparse.Namespace, workdir: Path) -> dict:
    target_proc, target = start_target()
    agent_proc, http_port, dns_port = start_agent(workdir)
    base, target_base = f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{target['http']}"
    results: dict = {"http_checks": args.http, "tcp_checks": args.tcp, "duration_s": args.duration,
                     "loadavg_before": os.getloadavg()[0]}
    try:
        connector = aiohttp.TCPConnector(limit=8)
        async with aiohttp.ClientSession(connector=connector) as session:
            await register(session, base, target, 0, 0)
            results["idle"] = await phase(session, base, dns_port, agent_proc.pid, target_base, args.duration)
            results["register_s"] = round(await register(session, base, target, args.http, args.tcp), 1)
            total = args.http + args.tcp
            passing = await wait_all_passing(session, base, total, timeout=60)
            results["passing_before_measure"] = passing
            spy = profile(agent_proc.pid, args.duration, args.profile) if args.profile else None
            results["loaded"] = await phase(session, base, dns_port, agent_proc.pid, target_base,
                                            args.duration)
            if spy is not None:
                spy.wait()
                results["profile"] = args.profile
    finally:
        stop(agent_proc)
        stop(target_proc)
        if args.keep_log:
            shutil.copy(workdir / "agent.log", args.keep_log)
    results["loadavg_after"] = os.getloadavg()[0]
    idle, loaded = results["idle"], results["loaded"]
    results["verdict"] = {
        "lag_p99_ok": loaded["lag_ms"]["p99"] <= GOALS["lag_p99_ms"],
        "cpu_ok": loaded["cpu_cores"] < GOALS["cpu_cores"],
        "http_within_2x": loaded["http_ms"]["p99"] <= GOALS["latency_ratio"] * idle["http_ms"]["p99"],
        "dns_within_2x": loaded["dns_ms"]["p99"] <= GOALS["latency_ratio"] * idle["dns_ms"]["p99"],
        "http_p50_ratio": round(loaded["http_ms"]["p50"] / idle["http_ms"]["p50"], 2),
        "dns_p50_ratio": round(loaded["dns_ms"]["p50"] / idle["dns_ms"]["p50"], 2),
        "http_p99_ratio": round(loaded["http_ms"]["p99"] / idle["http_ms"]["p99"], 2),
        "dns_p99_ratio": round(loaded["dns_ms"]["p99"] / idle["dns_ms"]["p99"], 2),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--http", type=int, default=1000, help="HTTP checks (default 1000)")
    parser.add_argument("--tcp", type=int, default=1000, help="TCP checks (default 1000)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument("--profile", default="", help="write a py-spy raw profile of the loaded phase here")
    parser.add_argument("--keep-log", default="", help="copy the agent's log here afterwards")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-checks-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    idle, loaded = results["idle"], results["loaded"]
    print(f"checks: {args.http} HTTP + {args.tcp} TCP at 1s; registered in {results['register_s']}s; "
          f"{results['passing_before_measure']} passing before the loaded phase; 1-min load average "
          f"{results['loadavg_before']:.2f} → {results['loadavg_after']:.2f} on {os.cpu_count()} CPUs")
    print(f"lag = latency of GET /v1/status/leader sampled every {SAMPLE_EVERY * 1000:.0f} ms (measured "
          "from outside); times in ms; cpu in cores")
    print(f"{'':8}{'cpu':>7}{'lag p50':>9}{'lag p99':>9}{'http p50':>10}{'http p99':>10}"
          f"{'dns p50':>9}{'dns p99':>9}{'http/s':>8}{'tcp/s':>8}{'err':>5}")
    for name, r in (("idle", idle), ("loaded", loaded)):
        print(f"{name:8}{r['cpu_cores']:>7.3f}{r['lag_ms']['p50']:>9.2f}{r['lag_ms']['p99']:>9.2f}"
              f"{r['http_ms']['p50']:>10.2f}{r['http_ms']['p99']:>10.2f}{r['dns_ms']['p50']:>9.2f}"
              f"{r['dns_ms']['p99']:>9.2f}{r['http_probes_per_s']:>8.0f}{r['tcp_probes_per_s']:>8.0f}"
              f"{r['errors']:>5}")
    print("verdict:", json.dumps(results["verdict"]))
    print("json:", json.dumps(results))


if __name__ == "__main__":
    main()
