"""The agent's local state: the services and checks this node declares (layer 1: pure).

Contract:
- The agent is the authority for its own node: `plan_sync(remote)` compares the desired local
  state with what the catalog holds for this node and returns the commands that make the catalog
  match (register what is missing or different, deregister what the catalog has and we do not),
  leaving alone what others own (the `consul` service of servers, `serfHealth`).
- Every mutation bumps `version` and marks what it touched dirty. A partial sync plans only the
  dirty items (`take_dirty()` → `SyncScope`), so one registration costs O(1) catalog work however
  many services the agent has; a full sync (`scope=None`) diffs everything and repairs drift.
  `plan_sync` is a pure function of (local, remote, scope).
- Services registered with `enable_tag_override` adopt tags changed in the catalog.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.types import SERF_CHECK_ID, HealthCheck, Node, NodeService, ServiceDefinition
from checks.definition import CheckDefinition, Status

FOREIGN_SERVICE_IDS = frozenset({"consul"})  # written by servers for themselves
FOREIGN_CHECK_IDS = frozenset({SERF_CHECK_ID})  # maintained by the leader


@dataclass(slots=True)
class LocalCheck:
    check: HealthCheck
    definition: CheckDefinition | None = None
    source: str = "api"


@dataclass(slots=True)
class SyncScope:
    """What changed locally since the last sync."""

    node: bool = False
    services: set[str] = field(default_factory=set)
    checks: set[str] = field(default_factory=set)

    def merge(self, other: SyncScope) -> None:
        self.node = self.node or other.node
        self.services |= other.services
        self.checks |= other.checks


@dataclass(slots=True)
class RemoteNode:
    """What the catalog currently holds for this node."""

    node: Node | None
    services: dict[str, NodeService] = field(default_factory=dict)
    checks: dict[str, HealthCheck] = field(default_factory=dict)


class LocalState:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.services: dict[str, ServiceDefinition] = {}
        self.checks: dict[str, LocalCheck] = {}
        self.version = 0
        self._dirty = SyncScope(node=True)

    def take_dirty(self) -> SyncScope:
        dirty, self._dirty = self._dirty, SyncScope()
        return dirty

    def mark_dirty(self, scope: SyncScope) -> None:
        self._dirty.merge(scope)

    # --- mutations ---
    def add_service(self, definition: ServiceDefinition) -> None:
        self.services[definition.service.id] = definition
        self._refresh_check_service_fields(definition.service)
        self._dirty.services.add(definition.service.id)
        self.version += 1

    def remove_service(self, service_id: str) -> bool:
        if self.services.pop(service_id, None) is None:
            return False
        for check_id in [c for c, lc in self.checks.items() if lc.check.service_id == service_id]:
            del self.checks[check_id]
            self._dirty.checks.add(check_id)
        self._dirty.services.add(service_id)
        self.version += 1
        return True

    def add_check(self, check: HealthCheck, definition: CheckDefinition | None, source: str = "api") -> None:
        previous = self.checks.get(check.check_id)
        if previous is not None and previous.definition == definition and definition is not None:
            check = dataclasses.replace(check, status=previous.check.status, output=previous.check.output)
        service = self.services.get(check.service_id)
        if service is not None:
            check = dataclasses.replace(check, service_name=service.service.service,
                                        service_tags=service.service.tags)
        self.checks[check.check_id] = LocalCheck(check, definition, source)
        self._dirty.checks.add(check.check_id)
        self.version += 1

    def remove_check(self, check_id: str) -> bool:
        if self.checks.pop(check_id, None) is None:
            return False
        self._dirty.checks.add(check_id)
        self.version += 1
        return True

    def update_check(self, check_id: str, status: Status, output: str) -> bool:
        """Record a check result; True when it changed anything."""
        local = self.checks.get(check_id)
        if local is None or (local.check.status == status and local.check.output == output):
            return False
        local.check = dataclasses.replace(local.check, status=status, output=output)
        self._dirty.checks.add(check_id)
        self.version += 1
        return True

    def set_node(self, node: Node) -> None:
        if node != self.node:
            self.node = node
            self._dirty.node = True
            self.version += 1

    def service_checks(self, service_id: str) -> list[HealthCheck]:
        return [lc.check for lc in self.checks.values() if lc.check.service_id == service_id]

    def node_checks(self) -> list[HealthCheck]:
        return [lc.check for lc in self.checks.values() if not lc.check.service_id]

    def _refresh_check_service_fields(self, service: NodeService) -> None:
        for local in self.checks.values():
            if local.check.service_id == service.id:
                local.check = dataclasses.replace(local.check, service_name=service.service,
                                                  service_tags=service.tags)
                self._dirty.checks.add(local.check.check_id)

    # --- anti-entropy planning ---
    def adopt_tag_overrides(self, remote: RemoteNode, keep: Iterable[str] = ()) -> None:
        """EnableTagOverride: tags changed in the catalog by others become the local tags, except
        for the services in `keep` (changed locally since the last sync: ours are newer)."""
        keep = set(keep)
        for service_id, definition in self.services.items():
            if service_id in keep:
                continue
            theirs = remote.services.get(service_id)
            if (definition.service.enable_tag_override and theirs is not None
                    and theirs.tags != definition.service.tags):
                definition.service = dataclasses.replace(definition.service, tags=theirs.tags)
                self._refresh_check_service_fields(definition.service)
                self._dirty.services.add(service_id)

    def plan_sync(self, remote: RemoteNode, scope: SyncScope | None = None) -> list[Command]:
        """Commands that make the catalog match; `scope=None` diffs everything, else only `scope`
        (and `remote` then need only hold the scoped rows)."""
        commands: list[Command] = []
        if (scope is None or scope.node) and (remote.node is None or not _same_row(remote.node, self.node)):
            commands.append(RegisterCommand(node=self.node))
        service_ids = set(self.services) | set(remote.services) if scope is None else scope.services
        check_ids = set(self.checks) | set(remote.checks) if scope is None else scope.checks
        stale_checks: dict[str, HealthCheck] = {}
        gone_checks: list[str] = []
        gone_services = {sid for sid in service_ids if sid not in self.services and sid in remote.services
                         and sid not in FOREIGN_SERVICE_IDS}
        for check_id in sorted(check_ids):
            local, theirs = self.checks.get(check_id), remote.checks.get(check_id)
            if local is not None:
                if theirs is None or not theirs.same_state(local.check):
                    stale_checks[check_id] = local.check
            elif theirs is not None and check_id not in FOREIGN_CHECK_IDS \
                    and theirs.service_id not in FOREIGN_SERVICE_IDS and theirs.service_id not in gone_services:
                gone_checks.append(check_id)  # (a deregistered service takes its checks with it)
        for service_id in sorted(service_ids):
            definition, theirs = self.services.get(service_id), remote.services.get(service_id)
            if definition is not None:
                if theirs is None or not _same_row(theirs, definition.service):
                    # the service travels with its checks: no reader sees it without them
                    checks = [c for c in stale_checks.values() if c.service_id == service_id]
                    for check in checks:
                        del stale_checks[check.check_id]
                    commands.append(RegisterCommand(node=self.node, service=definition.service, checks=checks,
                                                    skip_node_update=True))
            elif theirs is not None and service_id not in FOREIGN_SERVICE_IDS:
                commands.append(DeregisterCommand(node=self.node.node, service_id=service_id))
        for check in stale_checks.values():
            commands.append(RegisterCommand(node=self.node, checks=[check], skip_node_update=True))
        for check_id in gone_checks:
            commands.append(DeregisterCommand(node=self.node.node, check_id=check_id))
        return commands


def _same_row(a: Node | NodeService, b: Node | NodeService) -> bool:
    return dataclasses.replace(a, create_index=0, modify_index=0) == dataclasses.replace(
        b, create_index=0, modify_index=0
    )
