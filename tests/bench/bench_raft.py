"""Replicated KV benchmark: three waypost servers against three etcd members, same run (not CI).

Usage: .venv/bin/python tests/bench/bench_raft.py [--duration 10] [--connections 1,50] [--rounds 1]
                                                  [--failover 10] [--no-etcd]
(`--connections ''` skips the throughput cases, e.g. to run only the failover trials.) `--profile`
then repeats the waypost write and ?consistent cases with py-spy on the leader and a follower and
prints, per process, user/system CPU per request and the samples split by layer (HTTP, Raft core,
driver, codec, storage+fsync, transport, FSM, event loop): where the time goes.

Starts three `waypost agent -server -bootstrap-expect 3` processes on 127.0.0.1 (ephemeral ports,
servers find each other by gossip, fsync on, data dirs in a temp dir) and, when etcd is installed,
a 3-member etcd cluster with ../shared/baselines/etcd-cluster.sh (its fixed loopback ports
2379/22379/32379). Then, with wrk against each leader, for every connection count:
- writes: waypost `PUT /v1/kv/bench/<n>` (256-byte values, 1,000 rotating keys) vs etcd's
  `POST /v3/kv/put` through its HTTP/JSON gateway (baselines/put.lua: the same sizes);
- reads of one 256-byte key: waypost `GET /v1/kv/bench/key` (default: leader lease) and
  `?consistent` (read-index quorum round) vs etcd's linearizable `POST /v3/kv/range`
  (baselines/range_l.lua).
Each line prints requests/s, p50/p99 latency, the servers' CPU time per request (utime+stime of all
three processes from /proc/PID/stat ÷ requests) and the ratio to etcd (throughput, and p50).
`--rounds R` runs every case R times, waypost and etcd alternating, and prints medians. Both
clusters stay up for the whole run (the idle one costs a little CPU: heartbeats).
`--failover N` then kills the leader with SIGKILL N times in each system (restarting it each time)
while a client writes to the survivors (each attempt times out after 0.2 s and is retried on the
other survivor), and reports the time from the kill to the next acknowledged write (median, p99,
max), waypost next to etcd (etcd-cluster.sh's timing: heartbeat 100 ms, election 1 s; waypost's
default raft_multiplier 5: heartbeat 100 ms, election 1-2 s).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.bench import profile_split  # noqa: E402
from tests.integration.harness import AgentProcess  # noqa: E402

BASELINES = ROOT.parent / "shared" / "baselines"
ETCD_CLIENT_PORTS = (2379, 22379, 32379)  # fixed by etcd-cluster.sh
VALUE = "v" * 256
ATTEMPT_TIMEOUT = 0.2  # failover client: per-write timeout before retrying another survivor (both systems)
PUT_LUA = """
counter = 0
value = string.rep("v", 256)
request = function()
  counter = counter + 1
  return wrk.format("PUT", "/v1/kv/bench/" .. (counter % 1000), nil, value)
end
"""


@dataclass
class Run:
    rate: float
    p50_ms: float
    p99_ms: float
    cpu_us: float   # server CPU per request, all three processes
    errors: int

    def show(self) -> str:
        text = (f"{self.rate:8.0f}/s  p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms  "
                f"CPU {self.cpu_us:6.0f} µs/req")
        return text + (f"  ({self.errors} non-2xx)" if self.errors else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += sum(cpu_split(pid))
        except OSError:
            continue
    return total


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of one process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def to_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not match:
        return float("nan")
    return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[match[2]]


def wrk(url: str, connections: int, duration: int, pids: list[int], script: Path | None = None) -> Run:
    cmd = ["wrk", "-t", "1", "-c", str(connections), "-d", f"{duration}s", "--latency"]
    cmd += ["-s", str(script)] if script else []
    cpu0 = cpu_seconds(pids)
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=duration + 30).stdout
    cpu = cpu_seconds(pids) - cpu0
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50, p99 = re.search(r"^\s+50%\s+(\S+)", out, re.M), re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not (rate and total and p50 and p99):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    count = max(int(total[1]), 1)
    return Run(float(rate[1]), to_ms(p50[1]), to_ms(p99[1]), cpu / count * 1e6, int(errors[1]) if errors else 0)


# --- waypost ---
class Waypost:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.ports = [free_port() for _ in range(3)]
        self.serf_ports = [free_port() for _ in range(3)]
        self.agents = [self._start(i) for i in range(3)]

    def _start(self, i: int) -> AgentProcess:
        joins = [x for j, p in enumerate(self.serf_ports) if j != i
                 for x in ("-retry-join", f"127.0.0.1:{p}", "-retry-interval", "1s")]
        return AgentProcess(self.workdir, "-server", "-bootstrap-expect", "3", "-node", f"s{i}",
                            "-data-dir", str(self.workdir / f"s{i}"), "-bind", "127.0.0.1",
                            "-server-port", str(self.ports[i]), "-serf-lan-port", str(self.serf_ports[i]),
                            *joins, dev=False).start()

    def pids(self) -> list[int]:
        return [a.proc.pid for a in self.agents if a.proc is not None]

    def leader(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for agent in self.agents:
                try:
                    leader = agent.get("/v1/status/leader", timeout=2).json()
                except (OSError, ValueError):
                    continue
                if leader:
                    return self.ports.index(int(str(leader).rsplit(":", 1)[1]))
            time.sleep(0.05)
        raise RuntimeError("waypost: no leader")

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.agents[i].http_port}"

    def put(self, i: int, key: str, value: str = "x", timeout: float = 10.0) -> bool:
        return http_ok(f"{self.url(i)}/v1/kv/{key}", value.encode(), "PUT", timeout)

    def kill_and_restart(self, i: int, trial: int) -> float:
        others = [j for j in range(3) if j != i]
        killed = time.monotonic()
        self.agents[i].stop(kill=True)
        n = 0
        while not self.put(others[n % 2], f"failover/{trial}/{n}", timeout=ATTEMPT_TIMEOUT):
            n += 1
        took = time.monotonic() - killed
        self.agents[i] = self._start(i)
        self.leader()
        return took

    def close(self) -> None:
        for agent in self.agents:
            agent.stop(kill=True)


# --- etcd ---
class Etcd:
    def __init__(self, workdir: Path) -> None:
        self.dir = workdir / "etcd"
        self._children: list[subprocess.Popen] = []  # members restarted by the failover trials
        try:
            out = subprocess.run(["bash", str(BASELINES / "etcd-cluster.sh"), "start", "3", str(self.dir)],
                                 capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            out = None
        if out is None or out.returncode != 0 or not out.stdout.strip():
            self.close()
            logs = "".join(f.read_text(errors="replace")[-500:] for f in sorted(self.dir.glob("m*.log")))
            raise RuntimeError(f"etcd did not start (ports 2379/22379/32379 busy?):\n{logs}")

    def pid(self, i: int) -> int:
        return int((self.dir / f"m{i}.pid").read_text())

    def pids(self) -> list[int]:
        return [self.pid(i) for i in range(3)]

    def leader(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for port in ETCD_CLIENT_PORTS:
                try:
                    with urllib.request.urlopen(urllib.request.Request(
                            f"http://127.0.0.1:{port}/v3/maintenance/status", data=b"{}", method="POST"),
                            timeout=2) as resp:
                        status = json.loads(resp.read())
                except OSError:
                    continue
                leader = status.get("leader")
                if leader and leader == status["header"].get("member_id"):
                    return ETCD_CLIENT_PORTS.index(port)
            time.sleep(0.05)
        raise RuntimeError("etcd: no leader")

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{ETCD_CLIENT_PORTS[i]}"

    def put(self, i: int, key: str, value: str = "x", timeout: float = 10.0) -> bool:
        body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                           "value": base64.b64encode(value.encode()).decode()}).encode()
        return http_ok(f"{self.url(i)}/v3/kv/put", body, "POST", timeout)

    def kill_and_restart(self, i: int, trial: int) -> float:
        pid = self.pid(i)
        cmdline = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        others = [j for j in range(3) if j != i]
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        n = 0
        while not self.put(others[n % 2], f"failover/{trial}/{n}", timeout=ATTEMPT_TIMEOUT):
            n += 1
        took = time.monotonic() - killed
        with open(self.dir / f"m{i}.restart.log", "ab") as log:
            proc = subprocess.Popen(cmdline, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        (self.dir / f"m{i}.pid").write_text(str(proc.pid))
        self._children.append(proc)
        self.leader()
        return took

    def close(self) -> None:
        pids = [int(f.read_text()) for f in self.dir.glob("m*.pid")]
        subprocess.run(["bash", str(BASELINES / "etcd-cluster.sh"), "stop", str(self.dir)], timeout=30)
        deadline = time.monotonic() + 15  # the members must be gone (ports free) before we return
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            for proc in self._children:
                proc.poll()  # reap restarted members (our children) so they do not linger as zombies
            time.sleep(0.05)
        for proc in self._children:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def http_ok(url: str, body: bytes, method: str, timeout: float) -> bool:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200
    except OSError:
        return False


def failover(system: Waypost | Etcd, trials: int) -> list[float]:
    times = []
    for trial in range(trials):
        times.append(system.kill_and_restart(system.leader(), trial))
        time.sleep(1.0)  # let the restarted member catch up before the next kill
    return times


def summary(times: list[float]) -> str:
    q = statistics.quantiles(times, n=100, method="inclusive") if len(times) > 1 else times
    return (f"median {statistics.median(times):.2f}s  p99 {q[-1]:.2f}s  max {max(times):.2f}s  "
            f"[{' '.join(f'{t:.2f}' for t in times)}]")


def ratio(ours: Run, theirs: Run | None) -> str:
    if theirs is None or not theirs.rate:
        return ""
    return f"  = {ours.rate / theirs.rate:.2f}× etcd, p50 {ours.p50_ms / theirs.p50_ms:.2f}× etcd's"


def median_run(runs: list[Run]) -> Run:
    return Run(*(statistics.median(getattr(r, f) for r in runs) for f in ("rate", "p50_ms", "p99_ms", "cpu_us")),
               errors=sum(r.errors for r in runs))


def measure(wp: Waypost, etcd: Etcd | None, connections: list[int], duration: int, rounds: int,
            put_script: Path) -> None:
    """Every case once per round, waypost and etcd alternating (A B A B), then medians per case."""
    lead = wp.leader()
    assert wp.put(lead, "bench/key", VALUE)
    if etcd:
        assert etcd.put(etcd.leader(), "bench/key/000000", VALUE)
    cases: list[tuple[str, Callable[[int], Run]]] = []
    for c in connections:
        cases.append((f"writes {c:>2} conn  waypost PUT /v1/kv       ",
                      lambda c: wrk(wp.url(lead), c, duration, wp.pids(), put_script)))
        if etcd:
            cases.append((f"writes {c:>2} conn  etcd    POST /v3/kv/put  ",
                          lambda c: wrk(etcd.url(etcd.leader()), c, duration, etcd.pids(), BASELINES / "put.lua")))
    for c in connections:
        cases.append((f"reads  {c:>2} conn  waypost GET default      ",
                      lambda c: wrk(f"{wp.url(lead)}/v1/kv/bench/key", c, duration, wp.pids())))
        cases.append((f"reads  {c:>2} conn  waypost GET ?consistent  ",
                      lambda c: wrk(f"{wp.url(lead)}/v1/kv/bench/key?consistent", c, duration, wp.pids())))
        if etcd:
            cases.append((f"reads  {c:>2} conn  etcd    range (linear.)  ",
                          lambda c: wrk(etcd.url(etcd.leader()), c, duration, etcd.pids(), BASELINES / "range_l.lua")))
    results: dict[str, list[Run]] = {label: [] for label, _ in cases}
    for r in range(rounds):
        for label, run in cases:
            results[label].append(run(int(label.split()[1])))
            if rounds > 1:
                print(f"  round {r + 1}: {label} {results[label][-1].show()}", flush=True)
    medians = {label: median_run(runs) for label, runs in results.items()}
    print(f"medians of {rounds} round(s), {duration} s each:")
    for c in connections:
        etcd_put = medians.get(f"writes {c:>2} conn  etcd    POST /v3/kv/put  ")
        etcd_range = medians.get(f"reads  {c:>2} conn  etcd    range (linear.)  ")
        for label, run in medians.items():
            if int(label.split()[1]) != c:
                continue
            base = etcd_put if label.startswith("writes") else etcd_range
            print(f"{label} {run.show()}" + ("" if "etcd" in label else ratio(run, base)))


def profile(wp: Waypost, connections: list[int], duration: int, put_script: Path, workdir: Path) -> None:
    """Where the time goes (issue 5): per server, user/system CPU per request and py-spy samples
    by layer (tests/bench/profile_split.py) for writes and ?consistent reads. Separate runs: the
    profiler costs a little CPU itself."""
    lead = wp.leader()
    follower = next(i for i in range(3) if i != lead)
    cases = [("writes", wp.url(lead), put_script),
             ("reads ?consistent", f"{wp.url(lead)}/v1/kv/bench/key?consistent", None)]
    if profile_split.py_spy() is None:
        print("profile: py-spy not found (pip install py-spy); CPU split only")
    for c in connections:
        for name, url, script in cases:
            pids = {"leader": wp.agents[lead].proc.pid, "follower": wp.agents[follower].proc.pid}
            before = {role: cpu_split(pid) for role, pid in pids.items()}
            spies = {role: profile_split.record(pid, max(duration - 1, 1), workdir / f"{role}.txt")
                     for role, pid in pids.items()}
            run = wrk(url, c, duration, wp.pids(), script)
            requests = max(run.rate * duration, 1)
            print(f"profile {name}, {c} conn: {run.show()}")
            for role, spy in spies.items():
                user, system = (b - a for a, b in zip(before[role], cpu_split(pids[role]), strict=True))
                print(f"  {role}: user {user / requests * 1e6:.0f} µs/req, system {system / requests * 1e6:.0f} µs/req")
                if spy is not None and spy.wait() == 0:
                    print(profile_split.show("samples", profile_split.split(workdir / f"{role}.txt")))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", default="1,50")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--failover", type=int, default=0)
    ap.add_argument("--no-etcd", action="store_true")
    ap.add_argument("--profile", action="store_true", help="then profile the leader and a follower (py-spy)")
    args = ap.parse_args()
    with_etcd = not args.no_etcd and subprocess.run(["which", "etcd"], capture_output=True).returncode == 0
    with tempfile.TemporaryDirectory(prefix="bench-raft-") as tmp:
        workdir = Path(tmp)
        script = workdir / "put.lua"
        script.write_text(PUT_LUA)
        wp: Waypost | None = None
        etcd: Etcd | None = None
        try:
            wp = Waypost(workdir)
            etcd = Etcd(workdir) if with_etcd else None
            print(f"waypost leader s{wp.leader()}" + (f", etcd leader m{etcd.leader()}" if etcd else ", etcd not run"))
            if args.connections:
                measure(wp, etcd, [int(x) for x in args.connections.split(",")], args.duration, args.rounds, script)
            if args.profile:
                profile(wp, [int(x) for x in (args.connections or "1,50").split(",")], args.duration, script,
                        workdir)
            if args.failover:
                print(f"failover (SIGKILL the leader → next acknowledged write), {args.failover} trials each:")
                print(f"  waypost {summary(failover(wp, args.failover))}")
                if etcd:
                    print(f"  etcd    {summary(failover(etcd, args.failover))}")
        finally:
            if wp is not None:
                wp.close()
            if etcd is not None:
                etcd.close()


if __name__ == "__main__":
    main()
