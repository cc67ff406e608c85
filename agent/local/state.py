"""The agent's local state: the services and checks this node declares (layer 1: pure).

Contract:
- The agent is the authority for its own node: `plan_sync(remote)` compares the desired local
  state with what the catalog holds for this node and returns the commands that make the catalog
  match (register what is missing or different, deregister what the catalog has and we do not),
  leaving alone what others own (the `consul` service of servers, `serfHealth`).
- Every mutation bumps `version`; `plan_sync` is a pure function of (local, remote).
- Services registered with `enable_tag_override` adopt tags changed in the catalog.
"""

from __future__ import annotations

import dataclasses
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

    # --- mutations ---
    def add_service(self, definition: ServiceDefinition) -> None:
        self.services[definition.service.id] = definition
        self._refresh_check_service_fields(definition.service)
        self.version += 1

    def remove_service(self, service_id: str) -> bool:
        if self.services.pop(service_id, None) is None:
            return False
        for check_id in [c for c, lc in self.checks.items() if lc.check.service_id == service_id]:
            del self.checks[check_id]
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
        self.version += 1

    def remove_check(self, check_id: str) -> bool:
        if self.checks.pop(check_id, None) is None:
            return False
        self.version += 1
        return True

    def update_check(self, check_id: str, status: Status, output: str) -> bool:
        """Record a check result; True when it changed anything."""
        local = self.checks.get(check_id)
        if local is None or (local.check.status == status and local.check.output == output):
            return False
        local.check = dataclasses.replace(local.check, status=status, output=output)
        self.version += 1
        return True

    def set_node(self, node: Node) -> None:
        if node != self.node:
            self.node = node
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

    # --- anti-entropy planning ---
    def adopt_tag_overrides(self, remote: RemoteNode) -> None:
        """EnableTagOverride: tags changed in the catalog by others become the local tags."""
        for service_id, definition in self.services.items():
            theirs = remote.services.get(service_id)
            if (definition.service.enable_tag_override and theirs is not None
                    and theirs.tags != definition.service.tags):
                definition.service = dataclasses.replace(definition.service, tags=theirs.tags)
                self._refresh_check_service_fields(definition.service)

    def plan_sync(self, remote: RemoteNode) -> list[Command]:
        commands: list[Command] = []
        if remote.node is None or not _same_row(remote.node, self.node):
            commands.append(RegisterCommand(node=self.node))
        stale_checks = {check_id: local.check for check_id, local in sorted(self.checks.items())
                        if check_id not in remote.checks or not remote.checks[check_id].same_state(local.check)}
        for service_id, definition in sorted(self.services.items()):
            theirs = remote.services.get(service_id)
            if theirs is None or not _same_row(theirs, definition.service):
                # the service travels with its checks: no reader sees it without them
                checks = [c for c in stale_checks.values() if c.service_id == service_id]
                for check in checks:
                    del stale_checks[check.check_id]
                commands.append(RegisterCommand(node=self.node, service=definition.service, checks=checks,
                                                skip_node_update=True))
        for service_id in sorted(remote.services):
            if service_id not in self.services and service_id not in FOREIGN_SERVICE_IDS:
                commands.append(DeregisterCommand(node=self.node.node, service_id=service_id))
        for check in stale_checks.values():
            commands.append(RegisterCommand(node=self.node, checks=[check], skip_node_update=True))
        for check_id, theirs in sorted(remote.checks.items()):
            owned_elsewhere = check_id in FOREIGN_CHECK_IDS or theirs.service_id in FOREIGN_SERVICE_IDS
            if check_id not in self.checks and not owned_elsewhere:
                commands.append(DeregisterCommand(node=self.node.node, check_id=check_id))
        return commands


def _same_row(a: Node | NodeService, b: Node | NodeService) -> bool:
    return dataclasses.replace(a, create_index=0, modify_index=0) == dataclasses.replace(
        b, create_index=0, modify_index=0
    )
