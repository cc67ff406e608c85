"""agent.remote.client + catalog_json: anti-entropy of a client agent through a server's HTTP API."""

from __future__ import annotations

import json
import random

import pytest

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.decode import check_to_health, decode_catalog_deregister, decode_catalog_register
from agent.errors import BadRequest
from agent.local.antientropy import AntiEntropy
from agent.local.state import LocalState
from agent.remote.catalog_json import (
    check_from_api,
    deregister_body,
    node_from_api,
    register_body,
    service_from_api,
)
from agent.remote.client import RemoteCatalog
from agent.remote.servers import NoServers, ServerPool
from agent.types import HealthCheck, Node, NodeService, ServiceDefinition, Weights
from agent.version import VERSION
from checks.definition import CheckDefinition, CheckKind, Status
from tests.unit.remote_fixtures import client_session, dead_port, in_process_server, member

CLIENT = Node(node="client1", address="127.0.0.2", id="0b6f3c1e-0000-4000-8000-000000000001", datacenter="dc1",
              tagged_addresses={"lan": "127.0.0.2", "wan": "127.0.0.2"},
              meta={"consul-network-segment": "", "consul-version": VERSION, "rack": "r1"})
WEB = NodeService(id="web-1", service="web", tags=("v1", "primary"), address="10.0.0.9", port=8080,
                  meta={"team": "a"}, tagged_addresses={"lan": ("10.0.0.9", 8080)}, weights=Weights(3, 1),
                  enable_tag_override=True)
HTTP_CHECK = CheckDefinition("service:web-1", "web http", CheckKind.HTTP, service_id="web-1", interval=10.0,
                             timeout=2.0, http="http://127.0.0.1:1/health", header={"X-A": ["1", "2"]},
                             status=Status.PASSING)
TTL_CHECK = CheckDefinition("mem", "memory", CheckKind.TTL, ttl=30.0, status=Status.WARNING)


def commands() -> list[Command]:
    web_check = check_to_health(HTTP_CHECK, CLIENT.node, WEB)
    node_check = HealthCheck(node=CLIENT.node, check_id="mem", name="memory", status=Status.WARNING,
                             output="87% used", notes="n", type=CheckKind.TTL,
                             definition=TTL_CHECK.to_api())
    orphan = HealthCheck(node=CLIENT.node, check_id="c2", name="c2", service_id="web-1", service_name="web",
                         service_tags=("v1", "primary"), type=CheckKind.TCP, interval="5s", timeout="1s")
    return [
        RegisterCommand(node=CLIENT),
        RegisterCommand(node=CLIENT, service=WEB, checks=[web_check], skip_node_update=True),
        RegisterCommand(node=CLIENT, checks=[node_check, orphan], skip_node_update=True),
        DeregisterCommand(node="client1", service_id="web-1"),
        DeregisterCommand(node="client1", check_id="mem"),
        DeregisterCommand(node="client1"),
    ]


@pytest.mark.parametrize("command", commands(), ids=lambda c: type(c).__name__)
def test_json_decodes_back_to_the_same_command(command: Command) -> None:
    if isinstance(command, RegisterCommand):
        wire = json.loads(json.dumps(register_body(command)))
        assert decode_catalog_register(wire, "dc9") == command
    else:
        assert isinstance(command, DeregisterCommand)
        wire = json.loads(json.dumps(deregister_body(command)))
        assert decode_catalog_deregister(wire) == command


def test_api_rows_read_back_equal() -> None:
    node = Node(**{**CLIENT.to_record(), "create_index": 4, "modify_index": 9})  # type: ignore[arg-type]
    assert node_from_api(json.loads(json.dumps(node.to_api()))) == node
    assert service_from_api(json.loads(json.dumps(WEB.to_api()))) == WEB
    check = check_to_health(HTTP_CHECK, CLIENT.node, WEB)
    assert check_from_api(json.loads(json.dumps(check.to_api()))) == check


class Counting:
    """A CatalogAccess wrapper counting the commands anti-entropy sends."""

    def __init__(self, inner: RemoteCatalog) -> None:
        self.inner = inner
        self.sent: list[Command] = []

    async def read_node(self, node, scope=None):  # type: ignore[no-untyped-def]
        return await self.inner.read_node(node, scope)

    async def apply(self, command: Command) -> object:
        self.sent.append(command)
        return await self.inner.apply(command)


def local_state() -> LocalState:
    state = LocalState(CLIENT)
    state.add_service(ServiceDefinition(WEB, [HTTP_CHECK]))
    state.add_check(check_to_health(HTTP_CHECK, CLIENT.node, WEB), HTTP_CHECK)
    state.add_check(check_to_health(TTL_CHECK, CLIENT.node, None), TTL_CHECK)
    return state


async def test_anti_entropy_through_a_server() -> None:
    async with in_process_server() as srv, client_session() as session:
        pool = ServerPool(lambda: [member("srv1", srv.port)], "dc1", rng=random.Random(1))
        catalog = Counting(RemoteCatalog(pool, session))
        state = local_state()
        sync = AntiEntropy(state, catalog, rng=random.Random(1))

        await sync.sync_now(full=True)
        store = srv.server.store
        assert store.node_row("client1") is not None
        row = store.node_service("client1", "web-1")
        assert row is not None and row.tags == ("v1", "primary") and row.weights == Weights(3, 1)
        check = store.check("client1", "service:web-1")
        assert check is not None and check.type == CheckKind.HTTP and check.interval == "10s"
        assert check.definition["Header"] == {"X-A": ["1", "2"]}
        # what the client reads back equals what the server holds
        assert await catalog.read_node("client1") == await srv.server.read_node("client1")

        catalog.sent.clear()
        await sync.sync_now(full=True)
        assert catalog.sent == []  # in sync: the JSON round trip loses nothing, so no churn

        # drift behind the agent's back is repaired by the next full sync
        await srv.server.apply(DeregisterCommand(node="client1", service_id="web-1"))
        assert srv.server.store.node_service("client1", "web-1") is None
        await sync.sync_now(full=True)
        assert srv.server.store.node_service("client1", "web-1") is not None
        assert srv.server.store.check("client1", "service:web-1") is not None

        # a check result change is a partial sync of one check
        catalog.sent.clear()
        state.update_check("mem", Status.CRITICAL, "out of memory")
        await sync.sync_now()
        assert len(catalog.sent) == 1
        assert srv.server.store.check("client1", "mem").status == Status.CRITICAL  # type: ignore[union-attr]

        # removed locally → gone from the catalog (with its checks)
        state.remove_service("web-1")
        await sync.sync_now()
        assert srv.server.store.node_service("client1", "web-1") is None
        assert srv.server.store.check("client1", "service:web-1") is None
        assert srv.server.store.check("client1", "mem") is not None
        # the server's own rows are left alone
        assert srv.server.store.node_service("srv1", "consul") is not None


async def test_unreachable_server_fails_over_and_4xx_is_bad_request() -> None:
    async with in_process_server() as srv, client_session() as session:
        members = [member("a-down", dead_port()), member("b-up", srv.port)]
        pool = ServerPool(lambda: members, "dc1", rng=random.Random(0))
        catalog = RemoteCatalog(pool, session)
        for _ in range(2):  # whichever the rotation starts with, the write lands
            assert await catalog.apply(RegisterCommand(node=CLIENT)) is True
        assert pool.preferred().name == "b-up"  # type: ignore[union-attr]
        with pytest.raises(BadRequest, match="Must provide address"):
            await catalog.apply(RegisterCommand(node=Node(node="x", address="")))
        members.pop()
        with pytest.raises(NoServers):
            await catalog.read_node("client1")


async def test_unknown_node_reads_as_empty() -> None:
    async with in_process_server() as srv, client_session() as session:
        pool = ServerPool(lambda: [member("srv1", srv.port)], "dc1")
        remote = await RemoteCatalog(pool, session).read_node("nobody")
        assert remote.node is None and remote.services == {} and remote.checks == {}


async def test_alias_statuses_match_the_servers_own() -> None:
    async with in_process_server() as srv, client_session() as session:
        pool = ServerPool(lambda: [member("srv1", srv.port)], "dc1")
        catalog = RemoteCatalog(pool, session)
        await AntiEntropy(local_state(), catalog).sync_now(full=True)
        for node, service_id in [("client1", ""), ("client1", "web-1"), ("client1", "nope"), ("ghost", ""),
                                 ("srv1", "consul")]:
            assert await catalog.alias_statuses(node, service_id) == await srv.discovery.alias_statuses(
                node, service_id), (node, service_id)
