"""KV, locks, elections, sessions and the never-drop watch on a real 3-server cluster (issue #7).

One cluster serves the whole module (tests run in file order and share it):
- the `cluster` fixture starts three `-server -bootstrap-expect 3` agents that find each other by
  gossip, waits for a leader, and at once starts two `waypost elect` processes (each through a
  follower) and kill -9s the one that wins; the takeover is checked by the last test, so the
  TTL + lock-delay wait (up to 2xTTL + 15 s) overlaps the other tests;
- KV round trips through every server; `waypost lock` serialising two processes on two servers;
- a `/v1/watch` stream on the Raft leader, 1,000 rapid writes through a follower, kill -9 of the
  leader mid-way, the stream resumed on another server from the last index seen: every write
  arrives, in order, and no 410;
- a client agent's session (default check serfHealth) holding a lock: kill -9 the client, the
  leader marks serfHealth critical, the session is invalidated and the key's Session is cleared.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.harness import ROOT, AgentProcess
from tests.integration.test_raft_cluster import NAMES, free_port, server_args, wait_leader

SESSION_TTL = 15.0   # agent.cli_lock.SESSION_TTL: what `waypost elect` asks for
LOCK_DELAY = 15.0    # Consul's default session LockDelay
WRITES = 1000


@dataclass
class Cluster:
    agents: list[AgentProcess]
    ports: list[int]
    tmp: Path
    elect: list[subprocess.Popen] = field(default_factory=list)
    elect_out: list[Path] = field(default_factory=list)
    elect_killed: int = -1
    elect_killed_at: float = 0.0
    others: list[subprocess.Popen] = field(default_factory=list)
    raft_killed_at: float = 0.0

    def index_of(self, address: str) -> int:
        return [f"127.0.0.1:{p}" for p in self.ports].index(address)

    def alive(self, i: int) -> bool:
        proc = self.agents[i].proc
        return proc is not None and proc.poll() is None

    def leader(self) -> int:
        return self.index_of(wait_leader([a for i, a in enumerate(self.agents) if self.alive(i)]))

    def followers(self) -> list[int]:
        lead = self.leader()
        return [i for i in range(3) if i != lead and self.alive(i)]


def spawn_cli(agent: AgentProcess, out: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), WAYPOST_HTTP_ADDR=f"127.0.0.1:{agent.http_port}")
    with open(out, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "agent", *args], stdout=handle, stderr=subprocess.STDOUT,
                                env=env, cwd=ROOT)


def wait_until(predicate, timeout: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("kvcluster")
    ports, serf_ports = [free_port() for _ in NAMES], [free_port() for _ in NAMES]
    agents = [AgentProcess(tmp, *server_args(tmp, i, ports, serf_ports), dev=False) for i in range(3)]
    state = Cluster(agents, ports, tmp)
    try:
        for agent in agents:
            agent.start()
        wait_leader(agents)
        for n, i in enumerate(state.followers()):
            out = tmp / f"elect{n}.out"
            state.elect_out.append(out)
            state.elect.append(spawn_cli(agents[i], out, "elect", "-name", f"e{n}", "jobs/elect"))
        wait_until(lambda: any("Elected leader" in text(out) for out in state.elect_out), 20, "an elect winner")
        state.elect_killed = next(n for n in range(2) if "Elected leader" in text(state.elect_out[n]))
        state.elect[state.elect_killed].send_signal(signal.SIGKILL)
        state.elect_killed_at = time.monotonic()
        yield state
    finally:
        for proc in state.elect + state.others:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for agent in agents:
            agent.stop(kill=True)


def test_kv_round_trips_through_every_server(cluster: Cluster) -> None:
    agents = cluster.agents
    for i, agent in enumerate(agents):
        assert agent.put(f"/v1/kv/rt/k{i}", raw=f"v{i}".encode()).json() is True
    for agent in agents:  # a write through any server reads back through every server
        for i in range(3):
            reply = agent.get(f"/v1/kv/rt/k{i}?raw")
            assert (reply.status, reply.body) == (200, f"v{i}".encode())
        keys = agent.get("/v1/kv/rt/?keys").json()
        assert keys == ["rt/k0", "rt/k1", "rt/k2"]
    entry = agents[0].get("/v1/kv/rt/k0").json()[0]  # type: ignore[index]
    assert agents[1].put(f"/v1/kv/rt/k0?cas={entry['ModifyIndex'] + 1000}", raw=b"x").json() is False
    assert agents[2].put(f"/v1/kv/rt/k0?cas={entry['ModifyIndex']}", raw=b"cas").json() is True
    assert agents[1].get("/v1/kv/rt/k0?raw&consistent").body == b"cas"
    assert agents[1].request("DELETE", "/v1/kv/rt/?recurse").json() is True
    for agent in agents:
        assert agent.get("/v1/kv/rt/k1?consistent").status == 404


def test_lock_serialises_two_processes_on_two_servers(cluster: Cluster) -> None:
    marks = cluster.tmp / "lock-marks"
    child = f"echo start $$ >> {marks}; sleep 0.4; echo end $$ >> {marks}"
    procs = [spawn_cli(cluster.agents[i], cluster.tmp / f"lock{i}.out", "lock", "-child-exit-code", "jobs/serial",
                       child) for i in (0, 1) for _ in range(2)]
    cluster.others.extend(procs)
    codes = [p.wait(timeout=40) for p in procs]
    assert codes == [0] * 4, [text(cluster.tmp / f"lock{i}.out") for i in (0, 1)]
    lines = [line.split() for line in marks.read_text().splitlines()]
    assert len(lines) == 8
    for n in range(0, 8, 2):  # intervals never overlap: start/end pairs of the same child, back to back
        assert lines[n][0] == "start" and lines[n + 1] == ["end", lines[n][1]], lines
    assert "Session" not in cluster.agents[2].get("/v1/kv/jobs/serial/.lock?consistent").json()[0]  # type: ignore[index]


def _watch(agent: AgentProcess, index: int, events: list[dict], stop: threading.Event) -> str:
    """Read the stream into `events` until it ends; returns why it ended."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=20)
    try:
        conn.request("GET", f"/v1/watch?prefix=wf/&index={index}")
        resp = conn.getresponse()
        if resp.status != 200:
            return f"status {resp.status}: {resp.read()[:300]!r}"
        while not stop.is_set():
            line = resp.readline()
            if not line:
                return "eof"
            if line.strip():
                events.append(json.loads(line))
        return "stopped"
    except (OSError, http.client.HTTPException, ValueError) as err:  # a killed server: reset, cut chunk
        return f"error {err!r}"
    finally:
        conn.close()


def _writer(agent: AgentProcess, done: list[int], stop: threading.Event) -> None:
    conn: http.client.HTTPConnection | None = None
    for n in range(WRITES):
        while not stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
                conn.request("PUT", f"/v1/kv/wf/{n:04d}", body=str(n).encode())
                resp = conn.getresponse()
                body = resp.read()
                if resp.status == 200 and body.strip() == b"true":
                    break
            except (OSError, http.client.HTTPException):
                pass
            if conn is not None:
                conn.close()
                conn = None
            time.sleep(0.05)  # no leader yet: retry the same write
        done.append(n)
    if conn is not None:
        conn.close()


def test_watch_gets_every_write_in_order_across_a_leader_kill(cluster: Cluster) -> None:
    lead = cluster.leader()
    writer_at, other = cluster.followers()
    agents = cluster.agents
    start = int(agents[lead].get("/v1/kv/?keys&consistent").headers["X-Consul-Index"])
    events: list[dict] = []
    stop = threading.Event()
    ends: list[str] = []
    watcher = threading.Thread(target=lambda: ends.append(_watch(agents[lead], start, events, stop)), daemon=True)
    watcher.start()
    done: list[int] = []
    writer = threading.Thread(target=_writer, args=(agents[writer_at], done, stop), daemon=True)
    began = time.monotonic()
    writer.start()
    try:
        wait_until(lambda: len(done) >= WRITES // 3, 30, "a third of the writes")
        agents[lead].stop(kill=True)
        cluster.raft_killed_at = time.monotonic()  # the new Raft leader re-arms session timers from here
        watcher.join(timeout=30)
        assert ends and not ends[0].startswith("status"), ends
        resume = events[-1]["Index"] if events else start
        resumed = threading.Thread(target=lambda: ends.append(_watch(agents[other], resume, events, stop)),
                                   daemon=True)
        resumed.start()
        writer.join(timeout=60)
        assert len(done) == WRITES
        wait_until(lambda: any(e["Key"] == f"wf/{WRITES - 1:04d}" for e in events[-5:]) or ends[1:], 20,
                   "the last write on the resumed stream")
        elapsed = time.monotonic() - began
    finally:
        stop.set()
    assert len(ends) == 1, ends  # the resumed stream did not end (no 410, no error)
    indexes = [e["Index"] for e in events]
    assert indexes == sorted(set(indexes)), "indexes must strictly increase across the resume"
    keys = [e["Key"] for e in events if e["Op"] == "set"]
    collapsed = [k for n, k in enumerate(keys) if n == 0 or keys[n - 1] != k]  # a retried write may repeat
    assert collapsed == [f"wf/{n:04d}" for n in range(WRITES)]
    print(f"{WRITES} writes, leader killed after {WRITES // 3}, stream resumed at index {resume}: "
          f"{len(events)} events in {elapsed:.1f}s; first stream ended: {ends[0]}")


def test_a_dead_client_agents_session_releases_its_lock(cluster: Cluster) -> None:
    server = cluster.agents[cluster.followers()[0]]
    client = AgentProcess(cluster.tmp, "-node", "c1", "-data-dir", str(cluster.tmp / "c1"), "-bind", "127.0.0.1",
                          "-join", server.serf_addr, dev=False).start()
    try:
        def serf_passing() -> bool:
            reply = server.get("/v1/health/node/c1")
            return reply.status == 200 and any(c["CheckID"] == "serfHealth" and c["Status"] == "passing"
                                               for c in reply.json())  # type: ignore[union-attr]

        wait_until(serf_passing, 20, "c1 registered with a passing serfHealth")
        reply = client.put("/v1/session/create", {"Name": "c1-lock"})
        assert reply.status == 200, reply.text
        sid = reply.json()["ID"]  # type: ignore[index]
        info = server.get(f"/v1/session/info/{sid}").json()[0]  # type: ignore[index]
        assert info["Node"] == "c1" and info["NodeChecks"] == ["serfHealth"]
        assert client.put(f"/v1/kv/locks/c1?acquire={sid}", raw=b"held").json() is True
        assert server.get("/v1/kv/locks/c1?consistent").json()[0]["Session"] == sid  # type: ignore[index]
        client.stop(kill=True)
        killed = time.monotonic()
        wait_until(lambda: "Session" not in server.get("/v1/kv/locks/c1").json()[0], 40,  # type: ignore[index]
                   "the dead client's lock to be released")
        released = time.monotonic() - killed
        health = {c["CheckID"]: c["Status"] for c in server.get("/v1/health/node/c1").json()}  # type: ignore[union-attr]
        assert health.get("serfHealth") == "critical"
        assert server.get(f"/v1/session/info/{sid}").json() == []
        print(f"dead client's lock released {released:.1f}s after kill -9")
    finally:
        client.stop(kill=True)


def test_elect_survivor_takes_over_after_the_leader_is_killed(cluster: Cluster) -> None:
    survivor = 1 - cluster.elect_killed
    out = cluster.elect_out[survivor]
    proc = cluster.elect[survivor]
    # the dead holder's session is invalidated <= 2xTTL after the later of its last renew and the Raft
    # leader change (a new leader re-arms timers from scratch); then the lock-delay holds the key
    deadline = max(cluster.elect_killed_at, cluster.raft_killed_at) + 2 * SESSION_TTL + LOCK_DELAY + 5
    while "Elected leader" not in text(out):
        assert proc.poll() is None, f"the surviving elect process exited ({proc.returncode}):\n{text(out)}"
        assert time.monotonic() < deadline, f"no takeover within the TTL/lock-delay rules:\n{text(out)}"
        time.sleep(0.1)
    took = time.monotonic() - cluster.elect_killed_at
    print(f"elect takeover {took:.1f}s after kill -9 of the leading elect process")
    assert took >= LOCK_DELAY - 1  # the dead holder's session lapses first, then the lock-delay holds
    assert proc.poll() is None and "Lost leadership" not in text(out)
    live = next(a for a in cluster.agents if a.proc and a.proc.poll() is None)
    assert live.get("/v1/kv/jobs/elect/leader?raw&consistent").body == f"e{survivor}".encode()
