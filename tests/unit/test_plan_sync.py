"""LocalState.plan_sync, pure: every anti-entropy case against a real catalog store.

The catalog side is a `StateStore` written directly; `remote()` reads it the way
`CatalogServer.read_node` does, so plans are checked against real rows (indexes included)."""

from __future__ import annotations

import dataclasses

import pytest

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.catalog.reconcile import consul_service, serf_check
from agent.local.state import LocalState
from agent.types import SERF_CHECK_ID, HealthCheck, Node, NodeService, ServiceDefinition
from checks.definition import Status
from tests.unit.store_fixtures import StoreCatalog

NODE = Node(node="n1", address="10.0.0.1", meta={"rack": "a"})


class Catalog(StoreCatalog):
    def apply(self, *commands: Command) -> None:
        self.apply_commands(*commands)


def service(sid: str = "web-1", **fields: object) -> ServiceDefinition:
    values: dict[str, object] = {"port": 80, **fields}
    return ServiceDefinition(NodeService(id=sid, service="web", **values))  # type: ignore[arg-type]


def check(cid: str, sid: str = "", status: Status = Status.PASSING, output: str = "") -> HealthCheck:
    return HealthCheck(node="n1", check_id=cid, name=cid, service_id=sid, status=status, output=output)


def synced(*services: ServiceDefinition, checks: tuple[HealthCheck, ...] = ()) -> tuple[LocalState, Catalog]:
    """A local state and a catalog that already match (one full sync applied)."""
    local, catalog = LocalState(NODE), Catalog()
    for definition in services:
        local.add_service(definition)
    for row in checks:
        local.add_check(row, None)
    catalog.apply(*local.plan_sync(catalog.remote(), None))
    local.take_dirty()
    assert local.plan_sync(catalog.remote(), None) == []
    return local, catalog


def partial(local: LocalState, catalog: Catalog) -> list[Command]:
    scope = local.take_dirty()
    return local.plan_sync(catalog.remote(scope), scope)


def converge(local: LocalState, catalog: Catalog, commands: list[Command]) -> None:
    catalog.apply(*commands)
    assert local.plan_sync(catalog.remote(), None) == []


def test_service_missing_in_the_catalog_is_registered_with_its_checks() -> None:
    local, catalog = synced()
    local.add_service(service())
    local.add_check(check("service:web-1", "web-1"), None)
    commands = partial(local, catalog)
    assert len(commands) == 1 and isinstance(commands[0], RegisterCommand)
    assert commands[0].service is not None and commands[0].service.id == "web-1"
    assert [c.check_id for c in commands[0].checks] == ["service:web-1"] and commands[0].skip_node_update
    converge(local, catalog, commands)


@pytest.mark.parametrize("change", [{"tags": ("v2",)}, {"port": 81}, {"address": "10.9.9.9"},
                                    {"meta": {"version": "2"}}])
def test_service_that_differs_is_registered_again(change: dict[str, object]) -> None:
    local, catalog = synced(service())
    local.add_service(service(**change))
    commands = partial(local, catalog)
    assert len(commands) == 1 and isinstance(commands[0], RegisterCommand)
    assert commands[0].service == local.services["web-1"].service
    converge(local, catalog, commands)
    row = catalog.store.node_service("n1", "web-1")
    assert row is not None and all(getattr(row, k) == v for k, v in change.items())


def test_service_changed_in_the_catalog_is_put_back_by_a_full_sync() -> None:
    local, catalog = synced(service(tags=("v1",)))
    catalog.apply(RegisterCommand(NODE, NodeService(id="web-1", service="web", port=9999), skip_node_update=True))
    commands = local.plan_sync(catalog.remote(), None)
    assert [type(c) for c in commands] == [RegisterCommand]
    converge(local, catalog, commands)
    assert catalog.store.node_service("n1", "web-1").port == 80  # type: ignore[union-attr]


def test_service_in_the_catalog_but_not_local_is_deregistered_once() -> None:
    local, catalog = synced(service())
    rogue = NodeService(id="rogue", service="rogue")
    catalog.apply(RegisterCommand(NODE, rogue, [check("rogue-check", "rogue")], skip_node_update=True))
    commands = local.plan_sync(catalog.remote(), None)
    # the service's deregistration takes its check along: no second write for the check
    assert commands == [DeregisterCommand(node="n1", service_id="rogue")]
    converge(local, catalog, commands)


def test_service_deregistered_behind_the_agents_back_comes_back_on_a_full_sync() -> None:
    local, catalog = synced(service(), checks=(check("service:web-1", "web-1"),))
    catalog.apply(DeregisterCommand(node="n1", service_id="web-1"))
    assert partial(local, catalog) == []  # nothing changed locally: a partial sync does not look
    commands = local.plan_sync(catalog.remote(), None)
    assert len(commands) == 1 and isinstance(commands[0], RegisterCommand)
    assert [c.check_id for c in commands[0].checks] == ["service:web-1"]  # it returns with its check
    converge(local, catalog, commands)


def test_service_removed_locally_leaves_the_catalog_with_its_checks() -> None:
    local, catalog = synced(service(), checks=(check("service:web-1", "web-1"),))
    local.remove_service("web-1")
    commands = partial(local, catalog)
    assert commands == [DeregisterCommand(node="n1", service_id="web-1")]
    converge(local, catalog, commands)
    assert catalog.store.check("n1", "service:web-1") is None


@pytest.mark.parametrize("status, output", [(Status.CRITICAL, ""), (Status.WARNING, "slow"),
                                            (Status.PASSING, "new output")])
def test_check_whose_status_or_output_differs_is_registered_alone(status: Status, output: str) -> None:
    local, catalog = synced(service(), checks=(check("service:web-1", "web-1"),))
    assert local.update_check("service:web-1", status, output)
    commands = partial(local, catalog)
    assert len(commands) == 1 and isinstance(commands[0], RegisterCommand)
    assert commands[0].service is None and commands[0].skip_node_update
    assert [(c.status, c.output) for c in commands[0].checks] == [(status, output)]
    converge(local, catalog, commands)


def test_check_changed_in_the_catalog_is_put_back_by_a_full_sync() -> None:
    local, catalog = synced(checks=(check("mem"),))
    catalog.apply(RegisterCommand(NODE, checks=[check("mem", status=Status.CRITICAL)], skip_node_update=True))
    commands = local.plan_sync(catalog.remote(), None)
    assert len(commands) == 1 and commands[0].checks[0].status == Status.PASSING  # type: ignore[union-attr]
    converge(local, catalog, commands)


def test_check_only_in_the_catalog_is_deregistered() -> None:
    local, catalog = synced(service())
    catalog.apply(RegisterCommand(NODE, checks=[check("stray"), check("stray-svc", "web-1")], skip_node_update=True))
    commands = local.plan_sync(catalog.remote(), None)
    assert commands == [DeregisterCommand(node="n1", check_id="stray"),
                        DeregisterCommand(node="n1", check_id="stray-svc")]
    converge(local, catalog, commands)


def test_check_removed_locally_is_deregistered() -> None:
    local, catalog = synced(checks=(check("mem"),))
    local.remove_check("mem")
    commands = partial(local, catalog)
    assert commands == [DeregisterCommand(node="n1", check_id="mem")]
    converge(local, catalog, commands)


def test_foreign_items_are_left_alone() -> None:
    """The server's `consul` service (and checks on it) and the leader's `serfHealth`."""
    local, catalog = synced(service())
    tags = {"role": "consul", "dc": "dc1", "port": "8300", "build": "1.0:waypost"}
    catalog.apply(RegisterCommand(NODE, consul_service(tags), [serf_check("n1", Status.CRITICAL)],
                                  skip_node_update=True),
                  RegisterCommand(NODE, checks=[check("consul-check", "consul")], skip_node_update=True))
    assert local.plan_sync(catalog.remote(), None) == []
    assert catalog.store.check("n1", SERF_CHECK_ID) is not None


def test_node_address_or_meta_change_registers_the_node() -> None:
    for changed in (dataclasses.replace(NODE, address="10.0.0.2"), dataclasses.replace(NODE, meta={"rack": "b"})):
        local, catalog = synced(service())
        local.set_node(changed)
        commands = partial(local, catalog)
        assert commands == [RegisterCommand(node=changed)]
        converge(local, catalog, commands)
        assert catalog.store.node_row("n1").address == changed.address  # type: ignore[union-attr]
        assert catalog.store.node_service("n1", "web-1") is not None  # services stay


def test_node_changed_in_the_catalog_is_put_back_by_a_full_sync() -> None:
    local, catalog = synced()
    catalog.apply(RegisterCommand(dataclasses.replace(NODE, meta={}, tagged_addresses={"lan": "1.1.1.1"})))
    commands = local.plan_sync(catalog.remote(), None)
    assert commands == [RegisterCommand(node=NODE)]
    converge(local, catalog, commands)


def test_node_missing_from_the_catalog_comes_back_first() -> None:
    local, catalog = synced(service(), checks=(check("mem"),))
    catalog.apply(DeregisterCommand(node="n1"))  # e.g. the leader saw it leave
    commands = local.plan_sync(catalog.remote(), None)
    assert commands[0] == RegisterCommand(node=NODE) and len(commands) == 3
    converge(local, catalog, commands)


def test_enable_tag_override_adopts_catalog_tags_on_a_full_sync() -> None:
    local, catalog = synced(service(tags=("a",), enable_tag_override=True))
    catalog.apply(RegisterCommand(NODE, dataclasses.replace(local.services["web-1"].service, tags=("b",)),
                                  skip_node_update=True))
    remote = catalog.remote()
    local.adopt_tag_overrides(remote)
    assert local.services["web-1"].service.tags == ("b",)
    assert local.plan_sync(remote, None) == []  # the catalog's tags stand


def test_enable_tag_override_never_reverts_a_fresh_local_change() -> None:
    local, catalog = synced(service(tags=("a",), enable_tag_override=True))
    local.add_service(service(tags=("c",), enable_tag_override=True))  # the agent re-registers it
    dirty = local.take_dirty()
    remote = catalog.remote()
    local.adopt_tag_overrides(remote, keep=dirty.services)
    commands = local.plan_sync(remote, None)
    assert len(commands) == 1 and commands[0].service.tags == ("c",)  # type: ignore[union-attr]


def test_without_tag_override_catalog_tags_are_overwritten() -> None:
    local, catalog = synced(service(tags=("a",)))
    catalog.apply(RegisterCommand(NODE, dataclasses.replace(local.services["web-1"].service, tags=("b",)),
                                  skip_node_update=True))
    local.adopt_tag_overrides(catalog.remote())
    commands = local.plan_sync(catalog.remote(), None)
    assert len(commands) == 1 and commands[0].service.tags == ("a",)  # type: ignore[union-attr]


def test_partial_scope_touches_only_dirty_items() -> None:
    local, catalog = synced(service("web-1"), service("web-2"), checks=(check("mem"),))
    catalog.apply(DeregisterCommand(node="n1", service_id="web-2"),  # drift the partial sync ignores
                  RegisterCommand(NODE, NodeService(id="rogue", service="rogue"), skip_node_update=True),
                  RegisterCommand(NODE, checks=[check("mem", status=Status.CRITICAL)], skip_node_update=True))
    local.add_service(service("web-1", port=8080))
    commands = partial(local, catalog)
    assert len(commands) == 1 and commands[0].service.id == "web-1"  # type: ignore[union-attr]
    catalog.apply(*commands)
    assert catalog.store.node_service("n1", "web-2") is None and catalog.store.node_service("n1", "rogue")
    assert len(local.plan_sync(catalog.remote(), None)) == 3  # the full sync repairs all three


def test_a_scoped_item_missing_on_both_sides_plans_nothing() -> None:
    local, catalog = synced()
    local.add_service(service("tmp"))
    local.remove_service("tmp")  # added and removed before any sync
    assert partial(local, catalog) == []
