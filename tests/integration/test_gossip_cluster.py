"""Issue 6 end to end: 3 servers and 2 client agents, each on its own loopback address
(127.0.0.x) as on separate hosts, joined with -retry-join. A service file on a client shows up in
DNS on a server and on the other client; kill -9 of a client takes its instances out of `?passing`
and DNS, a restart brings them back; with a server stopped the clients keep working."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import AgentProcess

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed (apt-get install dnsutils)")

SERVERS = ("s1", "s2", "s3")
CLIENTS = ("c1", "c2")
ADDRESS = {name: f"127.0.0.{i + 11}" for i, name in enumerate(SERVERS + CLIENTS)}
FAST_GOSSIP = ('{"gossip_lan": {"probe_interval": "200ms", "probe_timeout": "100ms", '
               '"gossip_interval": "50ms", "suspicion_mult": 3}}')
WEB = 'service { name = "web"\n id = "web-c1"\n port = 8080\n tags = ["v1"] }\n'


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def dig_short(agent: AgentProcess, name: str, qtype: str = "A") -> list[str]:
    out = subprocess.run(["dig", f"@{agent.host}", "-p", str(agent.dns_port), "+short", "+time=2", "+tries=1",
                          name, qtype], capture_output=True, text=True, timeout=10).stdout
    return sorted(line for line in out.splitlines() if line and not line.startswith(";"))


def passing_nodes(agent: AgentProcess, service: str) -> set[str]:
    try:
        reply = agent.get(f"/v1/health/service/{service}?passing&stale", timeout=5)
    except OSError:
        return set()
    return {row["Node"]["Node"] for row in reply.json()} if reply.status == 200 else set()  # type: ignore[union-attr]


def alive_members(agent: AgentProcess) -> dict[str, str]:
    reply = agent.get("/v1/agent/members", timeout=5)
    return {m["Name"]: m["Tags"]["role"] for m in reply.json() if m["Status"] == 1}  # type: ignore[union-attr]


class Cluster:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.agents: dict[str, AgentProcess] = {}
        # fixed gossip ports, as on real hosts (8301): a restarted agent comes back at the same
        # address and refutes its death; a new address could reclaim the name only after 30 s
        self.serf_ports = {name: free_port(ADDRESS[name]) for name in ADDRESS}
        (tmp / "gossip.json").write_text(FAST_GOSSIP)
        (tmp / "c1.d").mkdir()
        (tmp / "c1.d" / "web.hcl").write_text(WEB)

    def args(self, name: str) -> list[str]:
        addr = ADDRESS[name]
        args = ["-node", name, "-bind", addr, "-client", addr, "-data-dir", str(self.tmp / name),
                "-serf-lan-port", str(self.serf_ports[name]),
                "-config-file", str(self.tmp / "gossip.json"), "-retry-interval", "1s"]
        seeds = [self.agents[s].serf_addr for s in SERVERS if s in self.agents and s != name]
        for seed in seeds[:2]:
            args += ["-retry-join", seed]
        if name in SERVERS:
            args += ["-server", "-bootstrap-expect", "3"]
        if name == "c1":
            args += ["-config-dir", str(self.tmp / "c1.d")]
        return args

    def start(self, name: str) -> AgentProcess:
        agent = AgentProcess(self.tmp, *self.args(name), dev=False).start()
        self.agents[name] = agent
        return agent

    def stop_all(self) -> None:
        for agent in self.agents.values():
            agent.stop(kill=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("gossip"))
    try:
        c.start("s1")
        for name in SERVERS[1:] + CLIENTS:
            c.start(name)
        s1 = c.agents["s1"]
        s1.wait_for(lambda: len(alive_members(s1)) == 5, timeout=30, what="5 members alive")
        s1.wait_for(lambda: s1.get("/v1/status/leader").json(), timeout=30, what="a leader")
        yield c
    finally:
        c.stop_all()


def test_every_agent_sees_every_member_with_its_role(cluster: Cluster) -> None:
    expected = {"s1": "consul", "s2": "consul", "s3": "consul", "c1": "node", "c2": "node"}
    for name, agent in cluster.agents.items():
        seen: dict[str, str] = {}

        def has_everyone(a: AgentProcess = agent, seen: dict[str, str] = seen) -> bool:
            seen.clear()
            seen.update(alive_members(a))
            return seen == expected
        try:
            agent.wait_for(has_everyone, timeout=20, what=f"the full member list on {name}")
        except AssertionError as err:
            members = agent.get("/v1/agent/members").json()
            raise AssertionError(f"{name} sees alive {seen}; all: {members}") from err


def test_client_service_reaches_dns_on_a_server_and_the_other_client(cluster: Cluster) -> None:
    s2, c2 = cluster.agents["s2"], cluster.agents["c2"]
    for agent in (s2, c2):
        agent.wait_for(lambda a=agent: dig_short(a, "web.service.consul") == [ADDRESS["c1"]], timeout=20,
                       what="web.service.consul → c1's address")
    assert passing_nodes(c2, "web") == {"c1"}  # the HTTP API of a client, answered by a server
    assert dig_short(c2, "c1.node.consul") == [ADDRESS["c1"]]


def test_kv_written_through_one_client_is_read_through_the_other(cluster: Cluster) -> None:
    c1, c2 = cluster.agents["c1"], cluster.agents["c2"]
    assert c1.put("/v1/kv/shared/greeting", raw=b"hello").status == 200
    reply = c2.get("/v1/kv/shared/greeting?raw")
    assert (reply.status, reply.body) == (200, b"hello")


def test_py_consul_works_unchanged_against_a_client_agent(cluster: Cluster) -> None:
    import consul

    c1 = cluster.agents["c1"]
    api = consul.Consul(host=c1.host, port=c1.http_port)
    assert api.kv.put("pyconsul/through-client", "v1") is True
    index, row = api.kv.get("pyconsul/through-client")
    assert row["Value"] == b"v1" and int(index) > 0
    _, rows = api.health.service("web", passing=True)
    assert [r["Service"]["ID"] for r in rows] == ["web-c1"]
    assert "web-c1" in api.agent.services()
    assert api.status.leader() and len(api.status.peers()) == 3
    session = api.session.create(ttl=30)  # on this agent's node, c1
    assert api.session.info(session)[1]["Node"] == "c1"
    api.session.destroy(session)


def test_killed_client_leaves_passing_and_dns_then_returns(cluster: Cluster) -> None:
    s3, c2 = cluster.agents["s3"], cluster.agents["c2"]
    s3.wait_for(lambda: passing_nodes(s3, "web") == {"c1"}, timeout=20, what="web passing on c1")
    cluster.agents["c1"].stop(kill=True)
    started = time.monotonic()
    s3.wait_for(lambda: not passing_nodes(s3, "web"), timeout=20, what="web to leave ?passing")
    c2.wait_for(lambda: dig_short(c2, "web.service.consul") == [], timeout=10, what="web to leave DNS")
    detected = time.monotonic() - started
    checks = s3.get("/v1/health/node/c1").json()
    serf = [c for c in checks if c["CheckID"] == "serfHealth"]  # type: ignore[union-attr]
    assert serf and serf[0]["Status"] == "critical", checks
    assert detected < 15, f"failure detection took {detected:.1f}s"
    cluster.start("c1")
    c2.wait_for(lambda: dig_short(c2, "web.service.consul") == [ADDRESS["c1"]], timeout=30,
                what="web back in DNS after the restart")


def test_clients_keep_working_with_a_server_stopped(cluster: Cluster) -> None:
    s1 = cluster.agents["s1"]
    leader = s1.get("/v1/status/leader").json()
    follower = next(n for n in SERVERS if not str(leader).startswith(ADDRESS[n] + ":"))
    cluster.agents[follower].stop(kill=True)
    try:
        for name in CLIENTS:
            client = cluster.agents[name]
            path = f"/v1/kv/during-outage/{name}"
            client.wait_for(lambda c=client, p=path: c.put(p, raw=b"1", timeout=15).status == 200,
                            timeout=30, what=f"a KV write through {name}")
            assert client.get(f"/v1/kv/during-outage/{name}?raw").status == 200
            client.wait_for(lambda c=client: dig_short(c, "web.service.consul") == [ADDRESS["c1"]], timeout=20,
                            what=f"DNS through {name}")
    finally:
        cluster.start(follower)


def test_a_server_that_leaves_leaves_raft_and_can_come_back(cluster: Cluster) -> None:
    s1 = cluster.agents["s1"]
    leader = str(s1.get("/v1/status/leader").json())
    name = next(n for n in SERVERS if not leader.startswith(ADDRESS[n] + ":"))
    leaver = cluster.agents[name]
    assert leaver.put("/v1/agent/leave").status == 200
    assert leaver.proc is not None and leaver.proc.wait(timeout=30) == 0
    others = [cluster.agents[n] for n in SERVERS if n != name]
    for agent in others:
        agent.wait_for(lambda a=agent: len(a.get("/v1/status/peers").json()) == 2, timeout=20,  # type: ignore[arg-type]
                       what=f"{name} removed from Raft")
        agent.wait_for(lambda a=agent: name not in {n["Node"] for n in a.get("/v1/catalog/nodes").json()},
                       timeout=20, what=f"{name} deregistered")  # type: ignore[union-attr]
    back = cluster.start(name)
    back.wait_for(lambda: len(back.get("/v1/status/peers?stale").json()) == 3, timeout=30,  # type: ignore[arg-type]
                  what=f"{name} back in Raft")
