"""A follower that falls far behind catches up through an InstallSnapshot over the real transport.

Three real `waypost agent -server -bootstrap-expect 3` processes on 127.0.0.1 with a config file
that makes the leader snapshot every 64 applied entries and keep only 16 trailing entries. One
follower is stopped (SIGTERM: a server does not leave on terminate), a few hundred KV keys are
written through the leader (it snapshots and compacts past everything the follower has), and the
restarted follower must end up with every key (stale reads on it) after installing a snapshot —
its log says "installed snapshot at index N" (agent/raft/node.py).
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.integration.harness import AgentProcess
from tests.integration.test_raft_cluster import NAMES, free_port, server_args, wait_leader

KEYS = 300
SNAPSHOT_WRITTEN = re.compile(r"snapshot written at index (\d+)")
SNAPSHOT_INSTALLED = re.compile(r"installed snapshot at index (\d+)")


def put_key(agent: AgentProcess, n: int) -> int:
    return agent.request("PUT", f"/v1/kv/catchup/{n:04d}", raw=f"value-{n}".encode(), timeout=15).status


def stale_keys(agent: AgentProcess) -> list[str]:
    try:
        reply = agent.get("/v1/kv/catchup/?keys&stale", timeout=5)
    except OSError:
        return []
    return reply.json() if reply.status == 200 else []  # type: ignore[return-value]


def test_a_follower_far_behind_catches_up_through_a_snapshot(tmp_path: Path) -> None:
    config = tmp_path / "snapshots.json"
    config.write_text(json.dumps({"raft_snapshot_threshold": 64, "raft_trailing_logs": 16,
                                   "raft_snapshot_interval": "1ms"}))
    ports, serf_ports = [free_port() for _ in NAMES], [free_port() for _ in NAMES]

    def args(i: int) -> tuple[str, ...]:
        return (*server_args(tmp_path, i, ports, serf_ports), "-config-file", str(config))

    agents = [AgentProcess(tmp_path, *args(i), dev=False) for i in range(3)]
    try:
        for agent in agents:
            agent.start()
        leader = wait_leader(agents)
        lead = [f"127.0.0.1:{p}" for p in ports].index(leader)
        behind = (lead + 1) % 3
        assert put_key(agents[lead], 0) == 200
        agents[behind].wait_for(lambda: stale_keys(agents[behind]) == ["catchup/0000"], what="first key")
        assert agents[behind].stop() == 0  # SIGTERM: clean shutdown, still a voter

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(lambda n: put_key(agents[lead], n), range(1, KEYS)))
        assert statuses == [200] * (KEYS - 1)
        written = [int(i) for i in SNAPSHOT_WRITTEN.findall(agents[lead].log())]
        assert written and max(written) > 64 + 16, (
            f"the leader never snapshotted: is raft_snapshot_threshold wired into RaftNode?\n"
            f"{agents[lead].log()[-2000:]}")

        agents[behind] = AgentProcess(tmp_path, *args(behind), dev=False).start()
        expected = [f"catchup/{n:04d}" for n in range(KEYS)]
        agents[behind].wait_for(lambda: stale_keys(agents[behind]) == expected, timeout=20,
                                what="the restarted follower to hold every key")
        installed = [int(i) for i in SNAPSHOT_INSTALLED.findall(agents[behind].log())]
        assert installed, f"the follower caught up without a snapshot\n{agents[behind].log()[-2000:]}"
        assert max(installed) >= min(written)
        value = agents[behind].get("/v1/kv/catchup/0123?raw&stale")
        assert (value.status, value.body) == (200, b"value-123")
        assert wait_leader(agents) == leader  # the returning follower did not disturb the leader
        # and it keeps replicating normally after the snapshot
        assert put_key(agents[lead], KEYS) == 200
        agents[behind].wait_for(lambda: len(stale_keys(agents[behind])) == KEYS + 1, what="a write after catch-up")
    finally:
        for agent in agents:
            agent.stop(kill=True)
