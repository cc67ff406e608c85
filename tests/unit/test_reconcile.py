"""Leader member reconciliation, pure: `plan_member_reconcile` rule by rule against a real store
(the driver is tested in test_reconcile_driver.py)."""

from __future__ import annotations

import dataclasses
import random

import pytest

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.catalog.reconcile import MemberView, consul_service, plan_member_reconcile, serf_check
from agent.gossip.messages import Member, MemberState
from agent.server import CatalogServer
from agent.types import SERF_ALIVE_OUTPUT, SERF_CHECK_ID, SERF_FAILED_OUTPUT, Node, NodeService
from agent.version import VERSION
from checks.definition import Status
from tests.unit.store_fixtures import StoreCatalog

DC = "dc1"


def client(name: str, address: str = "", status: str = "alive", dc: str = DC) -> MemberView:
    return MemberView(name, address or f"10.0.0.{len(name)}", status,  # type: ignore[arg-type]
                      {"role": "node", "dc": dc, "id": f"id-{name}", "build": f"{VERSION}:waypost"})


def server(name: str, address: str = "10.0.1.1", port: int = 8300, status: str = "alive") -> MemberView:
    view = client(name, address, status)
    return dataclasses.replace(view, tags={**view.tags, "role": "consul", "port": str(port), "raft_vsn": "3"})


class Catalog(StoreCatalog):
    def apply(self, *commands: Command) -> None:
        self.apply_commands(*commands)

    def reconcile(self, members: list[MemberView], **kw: object) -> list[Command]:
        """Plan, apply, and check that planning again writes nothing."""
        commands = plan_member_reconcile(members, self.store, datacenter=DC, **kw)  # type: ignore[arg-type]
        self.apply(*commands)
        before = self.store.last_index
        assert plan_member_reconcile(members, self.store, datacenter=DC, **kw) == []  # type: ignore[arg-type]
        assert self.store.last_index == before
        return commands

    def serf(self, node: str) -> tuple[Status, str] | None:
        check = self.store.check(node, SERF_CHECK_ID)
        return None if check is None else (check.status, check.output)


# ------------------------------------------------------------------ planner


def test_alive_client_is_registered_with_a_passing_serf_check() -> None:
    catalog = Catalog()
    commands = catalog.reconcile([client("c1", "10.0.0.5")])
    assert len(commands) == 1
    node = catalog.store.node_row("c1")
    assert node is not None and (node.address, node.id, node.datacenter) == ("10.0.0.5", "id-c1", DC)
    assert catalog.serf("c1") == (Status.PASSING, SERF_ALIVE_OUTPUT)
    assert catalog.store.node_service("c1", "consul") is None  # clients get no consul service


def test_alive_server_gets_the_consul_service_exactly_as_register_self_writes_it() -> None:
    catalog = Catalog()
    catalog.reconcile([server("s1", port=8305)])
    row = catalog.store.node_service("s1", "consul")
    assert row is not None and row.port == 8305 and row.meta["version"] == VERSION
    own = CatalogServer("127.0.0.1:0")._self_registration(Node("s1", "10.0.1.1"), 8305, VERSION).service
    assert dataclasses.replace(row, create_index=0, modify_index=0) == own  # no churn between the two writers


def test_alive_keeps_what_the_agents_anti_entropy_wrote() -> None:
    catalog = Catalog()
    own = Node("c1", "10.0.0.5", id="id-c1", meta={"rack": "r1"}, tagged_addresses={"lan": "10.0.0.5"})
    catalog.apply(RegisterCommand(own, NodeService(id="web", service="web")))
    commands = catalog.reconcile([client("c1", "10.0.0.5")])
    assert len(commands) == 1 and isinstance(commands[0], RegisterCommand) and commands[0].skip_node_update
    node = catalog.store.node_row("c1")
    assert node is not None and node.meta == {"rack": "r1"} and node.tagged_addresses == {"lan": "10.0.0.5"}
    assert catalog.store.node_service("c1", "web") is not None


def test_alive_with_a_new_address_moves_the_node_and_keeps_its_meta() -> None:
    catalog = Catalog()
    catalog.apply(RegisterCommand(Node("c1", "10.0.0.5", meta={"rack": "r1"})))
    catalog.reconcile([client("c1", "10.0.0.9")])
    node = catalog.store.node_row("c1")
    assert node is not None and node.address == "10.0.0.9" and node.meta == {"rack": "r1"}


def test_steady_state_writes_nothing() -> None:
    catalog = Catalog()
    members = [server("s1"), client("c1"), client("c2", status="failed"), client("c3", status="left")]
    catalog.reconcile(members)
    for _ in range(3):
        assert plan_member_reconcile(members, catalog.store, datacenter=DC) == []


def test_failed_member_turns_serf_health_critical_and_its_services_stay() -> None:
    catalog = Catalog()
    catalog.reconcile([client("c1")])
    catalog.apply(RegisterCommand(Node("c1", "10.0.0.2"), NodeService(id="web", service="web"),
                                  skip_node_update=True))
    commands = catalog.reconcile([client("c1", status="failed")])
    assert len(commands) == 1 and commands[0].skip_node_update  # type: ignore[union-attr]
    assert catalog.serf("c1") == (Status.CRITICAL, SERF_FAILED_OUTPUT)
    _, instances = catalog.store.check_service_nodes("web")
    assert len(instances) == 1 and any(c.status == Status.CRITICAL for c in instances[0][2])  # out of ?passing
    catalog.reconcile([client("c1")])  # back alive
    assert catalog.serf("c1") == (Status.PASSING, SERF_ALIVE_OUTPUT)


def test_failed_member_never_registered_is_left_alone() -> None:
    catalog = Catalog()
    assert catalog.reconcile([client("ghost", status="failed")]) == []
    assert catalog.store.node_row("ghost") is None


@pytest.mark.parametrize("status", ["left", "reaped"])
def test_left_or_reaped_member_is_deregistered_whole(status: str) -> None:
    catalog = Catalog()
    catalog.reconcile([client("c1")])
    catalog.apply(RegisterCommand(Node("c1", "10.0.0.2"), NodeService(id="web", service="web"),
                                  skip_node_update=True))
    assert catalog.reconcile([client("c1", status=status)]) == [DeregisterCommand(node="c1")]
    assert catalog.store.node_row("c1") is None and catalog.store.service_nodes("web")[1] == []


def test_catalog_nodes_with_serf_health_but_no_member_are_reaped() -> None:
    catalog = Catalog()
    catalog.reconcile([client("c1"), client("c2")])
    catalog.apply(RegisterCommand(Node("external", "192.0.2.1"), NodeService(id="db", service="db")))  # by hand
    commands = catalog.reconcile([client("c1")])  # c2 is gone from gossip (reaped / pruned)
    assert commands == [DeregisterCommand(node="c2")]
    assert catalog.store.node_row("external") is not None  # no serfHealth: never touched


def test_reaping_can_be_held_back() -> None:
    catalog = Catalog()
    catalog.reconcile([client("c1"), client("c2")])
    assert plan_member_reconcile([], catalog.store, datacenter=DC, reap=False) == []


def test_the_leader_never_deregisters_itself() -> None:
    catalog = Catalog()
    catalog.reconcile([server("s1")])
    assert catalog.reconcile([server("s1", status="left")], local_node="s1") == []
    assert catalog.reconcile([], local_node="s1") == []  # not reaped either
    assert catalog.store.node_row("s1") is not None


def test_members_of_another_datacenter_are_ignored() -> None:
    catalog = Catalog()
    assert catalog.reconcile([client("far", dc="dc2")]) == []
    catalog.apply(RegisterCommand(Node("far", "10.9.0.1"), checks=[serf_check("far", Status.PASSING)]))
    assert catalog.reconcile([client("far", status="left", dc="dc2")]) == []  # not ours to remove
    assert catalog.store.node_row("far") is not None


def test_a_server_with_a_bad_port_tag_gets_no_consul_service() -> None:
    view = server("s1")
    catalog = Catalog()
    catalog.reconcile([dataclasses.replace(view, tags={**view.tags, "port": "nope"})])
    assert catalog.store.node_row("s1") is not None and catalog.store.node_service("s1", "consul") is None
    assert consul_service({"role": "node", "port": "8300"}) is None


def test_a_server_whose_port_changed_gets_its_consul_service_updated() -> None:
    catalog = Catalog()
    catalog.reconcile([server("s1", port=8300)])
    assert len(catalog.reconcile([server("s1", port=8310)])) == 1
    assert catalog.store.node_service("s1", "consul").port == 8310  # type: ignore[union-attr]


def test_the_last_view_of_a_name_wins() -> None:
    catalog = Catalog()
    catalog.reconcile([client("c1"), client("c1", status="failed")])
    assert catalog.store.node_row("c1") is None  # failed and never registered: nothing


def test_member_view_from_a_gossip_member() -> None:
    def member(state: MemberState) -> Member:
        return Member("n", "10.0.0.1", 8301, {"dc": DC}, state, 3, 0.0)

    assert [MemberView.from_member(member(s)).status for s in MemberState] == ["alive", "alive", "failed", "left"]
    assert MemberView.from_member(member(MemberState.ALIVE)) == MemberView("n", "10.0.0.1", "alive", {"dc": DC})


def test_random_member_histories_always_converge() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    catalog = Catalog()
    names = [f"n{i}" for i in range(12)]
    for _ in range(200):
        members = []
        for name in rng.sample(names, rng.randrange(len(names))):
            status = rng.choice(["alive", "alive", "failed", "left"])
            address = f"10.0.0.{rng.randrange(3)}"
            members.append(server(name, address, status=status) if rng.random() < 0.3
                           else client(name, address, status))
        catalog.reconcile(members, local_node="n0")  # asserts a second plan is empty
        for view in members:
            row = catalog.store.node_row(view.name)
            if view.status == "alive":
                assert row is not None and row.address == view.address
                assert catalog.serf(view.name) == (Status.PASSING, SERF_ALIVE_OUTPUT)
            elif view.status == "left" and view.name != "n0":
                assert row is None
            elif view.status == "failed" and row is not None:
                assert catalog.serf(view.name) == (Status.CRITICAL, SERF_FAILED_OUTPUT)
        listed = {v.name for v in members}
        assert all(n.node in listed or n.node == "n0" for n in catalog.store.nodes()[1])
