"""LocalState: dirty tracking and plan_sync, partial and full, against a real store."""

from __future__ import annotations

import asyncio

from agent.catalog.commands import DeregisterCommand, RegisterCommand
from agent.catalog.store import StateStore
from agent.local.antientropy import AntiEntropy
from agent.local.state import LocalState, RemoteNode, SyncScope
from agent.types import HealthCheck, Node, NodeService, ServiceDefinition
from checks.definition import Status

NODE = Node(node="n1", address="10.0.0.1")


def web(service_id: str = "web-1", tags: tuple[str, ...] = ()) -> ServiceDefinition:
    return ServiceDefinition(NodeService(id=service_id, service="web", port=80, tags=tags))


def check(check_id: str, service_id: str = "", status: Status = Status.CRITICAL) -> HealthCheck:
    return HealthCheck(node="n1", check_id=check_id, name=check_id, service_id=service_id, status=status)


class StoreCatalog:
    """CatalogAccess over a real store: what a single server gives anti-entropy."""

    def __init__(self) -> None:
        self.store = StateStore()
        self.applied: list[object] = []
        self._index = 0

    async def read_node(self, node: str, scope: SyncScope | None = None) -> RemoteNode:
        _, found, services = self.store.node(node)
        _, checks = self.store.node_checks(node)
        remote = RemoteNode(found, {s.id: s for s in services}, {c.check_id: c for c in checks})
        if scope is not None:  # only the scoped rows, as CatalogServer.read_node returns them
            remote.services = {k: v for k, v in remote.services.items() if k in scope.services}
            remote.checks = {k: v for k, v in remote.checks.items() if k in scope.checks}
        return remote

    async def apply(self, command: object) -> None:
        self._index += 1
        self.applied.append(command)
        if isinstance(command, RegisterCommand):
            self.store.ensure_registration(self._index, command)
        else:
            self.store.deregister(self._index, command)


def test_a_service_travels_with_its_checks_in_one_command() -> None:
    local = LocalState(NODE)
    local.add_service(web())
    local.add_check(check("service:web-1", "web-1"), None)
    commands = local.plan_sync(RemoteNode(None), local.take_dirty())
    assert isinstance(commands[0], RegisterCommand) and commands[0].service is None  # the node row
    assert [c.check_id for c in commands[1].checks] == ["service:web-1"] and len(commands) == 2


def test_partial_sync_plans_only_what_changed() -> None:
    async def scenario() -> None:
        catalog = StoreCatalog()
        local = LocalState(NODE)
        sync = AntiEntropy(local, catalog)
        for i in range(50):
            local.add_service(web(f"web-{i}"))
        await sync.sync_now()
        assert len(catalog.store.service_nodes("web")[1]) == 50
        catalog.applied.clear()
        local.add_service(web("web-50"))
        await sync.sync_now()
        assert len(catalog.applied) == 1  # one command for one change, not a diff of 51 services
        local.remove_service("web-0")
        await sync.sync_now()
        assert isinstance(catalog.applied[-1], DeregisterCommand) and catalog.applied[-1].service_id == "web-0"
        catalog.applied.clear()
        await sync.sync_now()
        assert catalog.applied == []  # nothing dirty, nothing sent

    asyncio.run(scenario())


def test_full_sync_repairs_drift_behind_the_agents_back() -> None:
    async def scenario() -> None:
        catalog = StoreCatalog()
        local = LocalState(NODE)
        sync = AntiEntropy(local, catalog)
        local.add_service(web())
        await sync.sync_now()
        await catalog.apply(DeregisterCommand(node="n1", service_id="web-1"))  # someone removes it
        await catalog.apply(RegisterCommand(node=NODE, service=NodeService(id="rogue", service="rogue"),
                                            skip_node_update=True))  # someone adds one
        await sync.sync_now()
        assert catalog.store.node_service("n1", "web-1") is None  # a partial sync does not look
        await sync.sync_now(full=True)
        assert catalog.store.node_service("n1", "web-1") is not None
        assert catalog.store.node_service("n1", "rogue") is None

    asyncio.run(scenario())


def test_failed_sync_keeps_items_dirty() -> None:
    class Failing(StoreCatalog):
        fail = True

        async def apply(self, command: object) -> None:
            if self.fail:
                raise ConnectionError("catalog unreachable")
            await super().apply(command)

    async def scenario() -> None:
        catalog = Failing()
        local = LocalState(NODE)
        sync = AntiEntropy(local, catalog)
        local.add_service(web())
        try:
            await sync.sync_now()
        except ConnectionError:
            pass
        catalog.fail = False
        await sync.sync_now()
        assert catalog.store.node_service("n1", "web-1") is not None

    asyncio.run(scenario())


def test_tag_override_adopts_catalog_tags() -> None:
    local = LocalState(NODE)
    definition = ServiceDefinition(NodeService(id="web-1", service="web", tags=("a",), enable_tag_override=True))
    local.add_service(definition)
    local.take_dirty()
    remote = RemoteNode(NODE, {"web-1": NodeService(id="web-1", service="web", tags=("b",),
                                                    enable_tag_override=True)})
    local.adopt_tag_overrides(remote)
    assert local.services["web-1"].service.tags == ("b",)
    assert local.plan_sync(remote, None) == []
