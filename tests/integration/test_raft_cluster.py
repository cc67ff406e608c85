"""Three real `waypost agent -server -bootstrap-expect 3` processes on 127.0.0.1: they elect a leader,
take writes through any server, survive kill -9 of the leader without losing an acknowledged
write, and the restarted old leader catches up from its own data plus the new leader."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from tests.integration.harness import AgentProcess, run_cli

NAMES = ("s1", "s2", "s3")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_args(tmp_path: Path, i: int, ports: list[int], serf_ports: list[int]) -> tuple[str, ...]:
    """Server i on fixed server and gossip ports (a restart keeps its addresses), retry-joining the
    others' gossip ports."""
    joins: list[str] = []
    for j, port in enumerate(serf_ports):
        if j != i:
            joins += ["-retry-join", f"127.0.0.1:{port}", "-retry-interval", "1s"]
    return ("-server", "-bootstrap-expect", "3", "-data-dir", str(tmp_path / NAMES[i]), "-node", NAMES[i],
            "-bind", "127.0.0.1", "-server-port", str(ports[i]), "-serf-lan-port", str(serf_ports[i]), *joins)


def leader_of(agent: AgentProcess) -> str:
    try:
        reply = agent.get("/v1/status/leader", timeout=5)
    except OSError:
        return ""
    return reply.json() if reply.status == 200 else ""  # type: ignore[return-value]


def wait_leader(agents: list[AgentProcess], timeout: float = 20.0, not_this: str = "") -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = {leader_of(a) for a in agents}
        if len(seen) == 1 and "" not in seen and not_this not in seen:
            return seen.pop()
        time.sleep(0.05)
    raise AssertionError(f"no agreed leader: {[leader_of(a) for a in agents]}\n{agents[0].log()[-3000:]}")


def register(agent: AgentProcess, name: str) -> int:
    body = {"Node": name, "Address": "192.0.2.1", "Service": {"Service": "db", "ID": name, "Port": 5000}}
    return agent.put("/v1/catalog/register", body, timeout=15).status


def db_ids(agent: AgentProcess) -> set[str]:
    reply = agent.get("/v1/catalog/service/db?stale")
    return {row["ServiceID"] for row in reply.json()} if reply.status == 200 else set()  # type: ignore[union-attr]


def test_three_servers_elect_replicate_fail_over_and_catch_up(tmp_path: Path) -> None:
    ports, serf_ports = [free_port() for _ in NAMES], [free_port() for _ in NAMES]
    agents = [AgentProcess(tmp_path, *server_args(tmp_path, i, ports, serf_ports), dev=False) for i in range(3)]
    try:
        for agent in agents:
            agent.start()
        leader = wait_leader(agents)
        by_address = {f"127.0.0.1:{ports[i]}": i for i in range(3)}
        assert leader in by_address
        peers = agents[0].get("/v1/status/peers").json()
        assert sorted(peers) == sorted(by_address)  # type: ignore[arg-type]

        acked: set[str] = set()
        for i, agent in enumerate(agents):  # writes through the leader and both followers
            for k in range(5):
                name = f"n-{i}-{k}"
                assert register(agent, name) == 200
                acked.add(name)
                assert name in db_ids(agent)  # a forwarding follower reads its own write
        for agent in agents:
            agent.wait_for(lambda a=agent: acked <= db_ids(a), what="replication")
        reply = agents[(by_address[leader] + 1) % 3].get("/v1/catalog/nodes")
        assert reply.headers["X-Consul-KnownLeader"] == "true"

        old = by_address[leader]
        killed_at = time.monotonic()
        agents[old].stop(kill=True)
        rest = [a for i, a in enumerate(agents) if i != old]
        new_leader = wait_leader(rest, not_this=leader)
        failover = time.monotonic() - killed_at
        print(f"failover: new leader {new_leader} after {failover:.2f}s")
        for agent in rest:
            for k in range(3):
                name = f"after-{agent.http_port}-{k}"
                assert register(agent, name) == 200
                acked.add(name)
        for agent in rest:
            agent.wait_for(lambda a=agent: acked <= db_ids(a), what="all acknowledged writes")

        agents[old] = AgentProcess(tmp_path, *server_args(tmp_path, old, ports, serf_ports), dev=False).start()
        agents[old].wait_for(lambda: acked <= db_ids(agents[old]), timeout=20, what="catch-up")
        assert wait_leader(agents) == new_leader
        assert register(agents[old], "after-restart") == 200
        operator_surface(agents, ports)
    finally:
        for agent in agents:
            agent.stop(kill=True)


def operator_surface(agents: list[AgentProcess], ports: list[int]) -> None:
    """list-peers, transfer-leader to a named follower, remove-peer of a follower (via a follower)."""
    listed = run_cli("operator", "raft", "list-peers", http_port=agents[0].http_port)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert lines[0].split() == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"] and len(lines) == 4
    assert sum(" leader " in line for line in lines) == 1
    leader = wait_leader(agents)
    index = {f"127.0.0.1:{p}": i for i, p in enumerate(ports)}[leader]
    target = NAMES[(index + 1) % 3]
    moved = run_cli("operator", "raft", "transfer-leader", "-id", target, http_port=agents[index].http_port)
    assert moved.returncode == 0, moved.stderr
    assert wait_leader(agents, not_this=leader) == f"127.0.0.1:{ports[(index + 1) % 3]}"
    victim = (index + 2) % 3  # neither the old nor the new leader; asked through the old leader
    removed = run_cli("operator", "raft", "remove-peer", "-id", NAMES[victim], http_port=agents[index].http_port)
    assert removed.returncode == 0, removed.stderr
    agents[index].wait_for(lambda: len(agents[index].get("/v1/status/peers").json()) == 2,  # type: ignore[arg-type]
                           what="peer removal")
    agents[victim].stop(kill=True)
    assert register(agents[index], "after-removal") == 200
    config = agents[index].get("/v1/operator/raft/configuration").json()
    assert sorted(s["ID"] for s in config["Servers"]) == sorted(n for i, n in enumerate(NAMES) if i != victim)  # type: ignore[index]


def test_a_fourth_server_joins_and_a_follower_is_removed_while_writes_run(tmp_path: Path) -> None:
    ports, serf_ports = [free_port() for _ in range(4)], [free_port() for _ in range(4)]
    agents = [AgentProcess(tmp_path, *server_args(tmp_path, i, ports[:3], serf_ports[:3]), dev=False)
              for i in range(3)]
    acked: list[str] = []
    stop = threading.Event()

    def writer(agent: AgentProcess) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if register(agent, f"w-{n}") == 200:
                acked.append(f"w-{n}")

    try:
        for agent in agents:
            agent.start()
        leader = wait_leader(agents)
        lead = [f"127.0.0.1:{p}" for p in ports].index(leader)
        thread = threading.Thread(target=writer, args=(agents[lead],), daemon=True)
        thread.start()
        fourth = AgentProcess(tmp_path, "-server", "-data-dir", str(tmp_path / "s4"), "-node", "s4", "-bind",
                              "127.0.0.1", "-server-port", str(ports[3]), "-retry-join", agents[lead].serf_addr,
                              dev=False).start()
        agents.append(fourth)
        agents[lead].wait_for(lambda: len(agents[lead].get("/v1/status/peers").json()) == 4,  # type: ignore[arg-type]
                              what="the fourth server to become a voter")
        victim = next(i for i in range(3) if i != lead)
        reply = agents[lead].request("DELETE", f"/v1/operator/raft/peer?address=127.0.0.1:{ports[victim]}")
        assert reply.status == 200, reply.text
        agents[victim].stop(kill=True)
        agents[lead].wait_for(lambda: len(agents[lead].get("/v1/status/peers").json()) == 3,  # type: ignore[arg-type]
                              what="the removal")
        agents[lead].wait_for(lambda: len(acked) >= 20, what="writes during the changes")
        stop.set()
        thread.join(timeout=30)
        fourth.wait_for(lambda: set(acked) <= db_ids(fourth), what="all acknowledged writes on the new server")
        assert register(fourth, "via-new-server") == 200
        missing = agents[lead].request("DELETE", "/v1/operator/raft/peer?id=nope")
        assert missing.status == 404
    finally:
        stop.set()
        for agent in agents:
            agent.stop(kill=True)


def test_outage_recovery_with_peers_json(tmp_path: Path) -> None:
    """Two of three servers are lost for good: the survivor restarts with raft/peers.json naming only
    itself, becomes the leader and keeps every acknowledged write."""
    ports, serf_ports = [free_port() for _ in NAMES], [free_port() for _ in NAMES]
    agents = [AgentProcess(tmp_path, *server_args(tmp_path, i, ports, serf_ports), dev=False) for i in range(3)]
    try:
        for agent in agents:
            agent.start()
        wait_leader(agents)
        assert register(agents[0], "before-outage") == 200
        agents[0].wait_for(lambda: "before-outage" in db_ids(agents[0]), what="apply")
        for agent in agents:
            agent.stop(kill=True)
        (tmp_path / "s1" / "raft" / "peers.json").write_text(
            f'[{{"id": "s1", "address": "127.0.0.1:{ports[0]}"}}]')
        agents[0] = AgentProcess(tmp_path, *server_args(tmp_path, 0, ports, serf_ports), dev=False).start()
        assert wait_leader(agents[:1]) == f"127.0.0.1:{ports[0]}"
        assert register(agents[0], "after-outage") == 200
        assert {"before-outage", "after-outage"} <= db_ids(agents[0])
        assert agents[0].get("/v1/status/peers").json() == [f"127.0.0.1:{ports[0]}"]
    finally:
        for agent in agents:
            agent.stop(kill=True)


def test_servers_join_a_bootstrap_server(tmp_path: Path) -> None:
    """Consul's manual bootstrap: one `-bootstrap` server first, the others join it later."""
    first = AgentProcess(tmp_path, "-server", "-bootstrap", "-data-dir", str(tmp_path / "b1"), "-node", "b1",
                         "-bind", "127.0.0.1", dev=False)
    agents = [first]
    try:
        first.start()
        assert register(first, "before-join") == 200
        for name in ("b2", "b3"):
            agents.append(AgentProcess(tmp_path, "-server", "-data-dir", str(tmp_path / name), "-node", name,
                                       "-bind", "127.0.0.1", "-retry-join", first.serf_addr, "-retry-interval", "1s",
                                       dev=False).start())
        first.wait_for(lambda: len(first.get("/v1/status/peers").json()) == 3, timeout=30,  # type: ignore[arg-type]
                       what="both servers voting")
        assert register(agents[2], "through-a-joiner") == 200  # forwarded to the bootstrap leader
        for agent in agents:
            agent.wait_for(lambda a=agent: {"before-join", "through-a-joiner"} <= db_ids(a), what="replication")
        first.stop(kill=True)  # the bootstrap server is just one of three now: the others carry on
        wait_leader(agents[1:], timeout=30)
        assert register(agents[1], "after-failover") == 200
        # restarted with -bootstrap again: it keeps its log and rejoins; it never starts a new cluster
        agents[0] = first = AgentProcess(tmp_path, *first.args, dev=False).start()
        first.wait_for(lambda: "after-failover" in db_ids(first), timeout=30, what="the old leader catching up")
        assert wait_leader(agents, timeout=30)
    finally:
        for agent in agents:
            agent.stop(kill=True)
