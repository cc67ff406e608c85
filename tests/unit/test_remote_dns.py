"""agent.remote.dns + agent/http/internal_dns.py: a client agent's DNS lookups answered by a server
give exactly what the server's own DnsLookup gives."""

from __future__ import annotations

import random

import pytest

from agent.catalog.commands import RegisterCommand
from agent.discovery import DnsLookup
from agent.remote.dns import RemoteDnsLookup
from agent.remote.dns_json import (
    endpoint_from_json,
    endpoint_to_json,
    node_from_json,
    node_to_json,
    ptr_from_json,
    ptr_to_json,
)
from agent.remote.servers import ServerPool
from agent.types import HealthCheck, Node, NodeService, Weights
from checks.definition import Status
from dns.lookup import LookupUnavailable, NodeRecord, PtrOwner, ServiceEndpoint, UnknownDatacenter
from tests.unit.remote_fixtures import client_session, dead_port, dns_query, in_process_server, member
from tests.unit.test_dns_server import udp_ask


def test_json_round_trips() -> None:
    endpoint = ServiceEndpoint("n1", "10.0.0.1", "10.1.0.1", 80, ("a", "b"), 3, 2, "warning", {"k": "v"}, "dc1",
                               "web-1", "Web")
    assert endpoint_from_json(endpoint_to_json(endpoint)) == endpoint
    node = NodeRecord("n1", "10.0.0.1", {"k": "v"}, "dc1")
    assert node_from_json(node_to_json(node)) == node
    assert ptr_from_json(ptr_to_json(PtrOwner("service", "web", "dc1"))) == PtrOwner("service", "web", "dc1")


async def populate(srv) -> None:  # type: ignore[no-untyped-def]
    for i, status in enumerate([Status.PASSING, Status.WARNING, Status.CRITICAL], start=1):
        node = Node(node=f"host{i}", address=f"10.0.0.{i}", datacenter="dc1", meta={"rack": f"r{i}"})
        service = NodeService(id=f"web-{i}", service="Web", tags=("v1",) if i < 3 else ("v2",), port=8000 + i,
                              address="10.9.9.9" if i == 2 else "", weights=Weights(i, 1))
        check = HealthCheck(node=node.node, check_id=f"service:web-{i}", name="c", status=status,
                            service_id=service.id, service_name="Web")
        serf = HealthCheck(node=node.node, check_id="serfHealth", name="Serf Health Status", status=Status.PASSING)
        await srv.server.apply(RegisterCommand(node=node, service=service, checks=[check, serf]))


async def test_remote_answers_equal_the_servers_own() -> None:
    async with in_process_server() as srv, client_session() as session:
        await populate(srv)
        pool = ServerPool(lambda: [member("srv1", srv.port)], "dc1", rng=random.Random(2))
        remote = RemoteDnsLookup(pool, session, "dc1")
        local = DnsLookup(srv.discovery, "dc1")

        for args in [("web", None, None), ("web", "v1", None), ("web", "V2", "dc1"), ("nothing", None, None)]:
            assert await remote.service_endpoints(*args) == await local.service_endpoints(*args), args
        found = await remote.service_endpoints("web", None, None)
        assert found is not None and {e.status for e in found} == {"passing", "warning", "critical"}
        for name in ("host1", "HOST2", "srv1", "nobody"):
            assert await remote.node(name.lower(), None) == await local.node(name.lower(), None)
        for address in ("10.0.0.3", "10.9.9.9", "127.0.0.1", "192.0.2.1"):
            assert await remote.ptr(address) == await local.ptr(address)
        assert await remote.ptr("10.9.9.9") == PtrOwner("service", "Web", "dc1")
        assert await remote.name_servers() == await local.name_servers()
        assert [n.node for n in await remote.name_servers()] == ["srv1"]

        with pytest.raises(UnknownDatacenter):
            await remote.service_endpoints("web", None, "dc2")
        with pytest.raises(UnknownDatacenter):
            await remote.node("host1", "dc2")


async def test_change_index_never_lets_the_cache_hit() -> None:
    async with client_session() as session:
        remote = RemoteDnsLookup(ServerPool(list, "dc1"), session, "dc1")
        values = [remote.change_index("web"), remote.change_index(None), remote.change_index("web")]
        assert values == sorted(set(values))


async def test_failures_are_lookup_unavailable() -> None:
    async with client_session() as session:
        nothing = RemoteDnsLookup(ServerPool(list, "dc1"), session, "dc1")
        with pytest.raises(LookupUnavailable):
            await nothing.service_endpoints("web", None, None)
        down = RemoteDnsLookup(ServerPool(lambda: [member("s", dead_port())], "dc1"), session, "dc1")
        with pytest.raises(LookupUnavailable):
            await down.node("host1", None)
        with pytest.raises(LookupUnavailable):
            await down.name_servers()


async def test_failover_to_a_live_server() -> None:
    async with in_process_server() as srv, client_session() as session:
        await populate(srv)
        members = [member("a-down", dead_port()), member("b-up", srv.port)]
        remote = RemoteDnsLookup(ServerPool(lambda: members, "dc1", rng=random.Random(0)), session, "dc1")
        for _ in range(3):
            assert await remote.node("host1", None) == NodeRecord("host1", "10.0.0.1", {"rack": "r1"}, "dc1")


async def test_a_client_dns_server_never_serves_a_stale_remote_answer() -> None:
    from dnslib import DNSRecord

    from dns.config import DnsConfig
    from dns.server import DnsServer

    async with in_process_server() as srv, client_session() as session:
        await populate(srv)
        remote = RemoteDnsLookup(ServerPool(lambda: [member("srv1", srv.port)], "dc1"), session, "dc1")
        dns = DnsServer(DnsConfig(datacenter="dc1", node_name="client1"), remote)
        port, _ = await dns.start("127.0.0.1", 0)
        try:
            def addresses(reply: bytes) -> set[str]:
                return {str(rr.rdata) for rr in DNSRecord.parse(reply).rr}

            query = dns_query("web.service.consul")
            assert addresses(await udp_ask(port, query)) == {"10.0.0.1", "10.9.9.9"}  # critical host3 dropped
            assert addresses(await udp_ask(port, query)) == {"10.0.0.1", "10.9.9.9"}
            node = Node(node="host4", address="10.0.0.4", datacenter="dc1")
            await srv.server.apply(RegisterCommand(node=node, service=NodeService(id="web-4", service="Web")))
            assert addresses(await udp_ask(port, query)) == {"10.0.0.1", "10.9.9.9", "10.0.0.4"}
        finally:
            await dns.stop()
