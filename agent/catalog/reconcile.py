"""The leader's reconciliation of gossip members into the catalog (layer 1: pure).

Contract (Consul's agent/consul/leader.go `reconcileMember` and `reconcileReaped`):
- `plan_member_reconcile(members, catalog, *, datacenter, local_node="", reap=True)` returns the
  catalog commands that make `catalog` (a `StateStore`) reflect the gossip `members`; applying
  them in order and planning again gives `[]` (steady state writes nothing).
- alive → the node is registered only when missing or its address changed (an existing row's
  meta and tagged addresses, written by the agent's own anti-entropy, are kept), `serfHealth` is
  set passing ("Agent alive and reachable") unless it already is; a server (tag role=consul) also
  gets the `consul` service (`consul_service(tags)`, port = tags["port"]) when missing or different.
- failed → `serfHealth` critical ("Agent not live or unreachable") with `skip_node_update` (the
  node and its services stay: they drop out of `?passing` and DNS); a node not in the catalog is
  left alone.
- left / reaped → the whole node is deregistered (when present).
- With `reap`, catalog nodes that carry a `serfHealth` check but have no gossip member are
  deregistered; nodes without `serfHealth` (registered by hand through /v1/catalog/register) never.
- Members of another datacenter (tags["dc"]) are ignored; `local_node` (the leader itself) is
  never deregistered. A name listed twice: the last view wins. Output order is deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.catalog.store import StateStore
from agent.gossip.messages import Member, MemberState
from agent.types import (
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    SERF_FAILED_OUTPUT,
    HealthCheck,
    Node,
    NodeService,
)
from checks.definition import Status

MemberStatus = Literal["alive", "failed", "left", "reaped"]
CONSUL_SERVICE_ID = "consul"
SERVER_ROLE = "consul"
# serf's own protocol range (memberlist ProtocolVersion min/current/max), as Consul reports it
SERF_PROTOCOL = {"serf_protocol_current": "2", "serf_protocol_min": "1", "serf_protocol_max": "5"}

_STATUS_OF: dict[MemberState, MemberStatus] = {
    MemberState.ALIVE: "alive", MemberState.SUSPECT: "alive",  # suspicion is not failure yet
    MemberState.DEAD: "failed", MemberState.LEFT: "left",
}


@dataclass(frozen=True, slots=True)
class MemberView:
    """What reconciliation needs of one gossip member."""

    name: str
    address: str
    status: MemberStatus
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_member(cls, member: Member) -> MemberView:
        return cls(member.name, member.address, _STATUS_OF[member.state], dict(member.tags))


def consul_service(tags: Mapping[str, str]) -> NodeService | None:
    """The `consul` service a server member gets (None for clients or a bad `port` tag); the same
    row `CatalogServer.register_self` writes for the server it runs on."""
    port = _port(tags)
    if tags.get("role") != SERVER_ROLE or port is None:
        return None
    version = tags.get("build", "").partition(":")[0]
    meta = {"raft_version": tags.get("raft_vsn", "3"), **SERF_PROTOCOL, "version": version,
            "read_replica": "false", "non_voter": "false"}
    return NodeService(id=CONSUL_SERVICE_ID, service=CONSUL_SERVICE_ID, port=port, meta=meta)


def serf_check(node: str, status: Status) -> HealthCheck:
    output = SERF_ALIVE_OUTPUT if status == Status.PASSING else SERF_FAILED_OUTPUT
    return HealthCheck(node=node, check_id=SERF_CHECK_ID, name=SERF_CHECK_NAME, status=status, output=output)


def plan_member_reconcile(members: Sequence[MemberView], catalog: StateStore, *, datacenter: str,
                          local_node: str = "", reap: bool = True) -> list[Command]:
    latest = {m.name: m for m in members}
    commands: list[Command] = []
    for name in sorted(latest):
        member = latest[name]
        if member.tags.get("dc") != datacenter:
            continue
        if member.status == "alive":
            commands.extend(_alive(member, catalog, datacenter))
        elif member.status == "failed":
            commands.extend(_failed(member, catalog))
        elif name != local_node and catalog.node_row(name) is not None:  # left or reaped
            commands.append(DeregisterCommand(node=name))
    if reap:  # a name in `latest` was handled above (or belongs to another datacenter)
        for node in catalog.nodes()[1]:
            if node.node in latest or node.node == local_node:
                continue
            if catalog.check(node.node, SERF_CHECK_ID) is not None:
                commands.append(DeregisterCommand(node=node.node))
    return commands


def _alive(member: MemberView, catalog: StateStore, datacenter: str) -> list[Command]:
    existing = catalog.node_row(member.name)
    node_changed = existing is None or existing.address != member.address
    serf = catalog.check(member.name, SERF_CHECK_ID)
    check_changed = serf is None or serf.status != Status.PASSING
    service = consul_service(member.tags)
    service_changed = service is not None and not _same_service(
        catalog.node_service(member.name, CONSUL_SERVICE_ID), service)
    if not (node_changed or check_changed or service_changed):
        return []
    node_id = member.tags.get("id", "")
    if existing is None:
        node = Node(node=member.name, address=member.address, id=node_id, datacenter=datacenter)
    else:  # keep what the agent wrote (meta, tagged addresses); only the address follows gossip
        node = replace(existing, address=member.address, id=node_id or existing.id,
                       create_index=0, modify_index=0)
    return [RegisterCommand(node=node, service=service if service_changed else None,
                            checks=[serf_check(member.name, Status.PASSING)] if check_changed else [],
                            skip_node_update=not node_changed)]


def _failed(member: MemberView, catalog: StateStore) -> list[Command]:
    existing = catalog.node_row(member.name)
    if existing is None:
        return []  # never registered: nothing to mark (Consul ignores it too)
    serf = catalog.check(member.name, SERF_CHECK_ID)
    if serf is not None and serf.status == Status.CRITICAL:
        return []
    return [RegisterCommand(node=Node(node=member.name, address=existing.address),
                            checks=[serf_check(member.name, Status.CRITICAL)], skip_node_update=True)]


def _same_service(row: NodeService | None, want: NodeService) -> bool:
    return row is not None and row.port == want.port and row.meta == want.meta and row.service == want.service


def _port(tags: Mapping[str, str]) -> int | None:
    raw = tags.get("port", "")
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        return None
    return int(raw)
