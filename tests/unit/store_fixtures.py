"""A catalog store driven directly by commands, for pure tests of what plans write (no Raft, no FSM)."""

from __future__ import annotations

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.catalog.store import StateStore
from agent.local.state import RemoteNode, SyncScope


class StoreCatalog:
    """`apply_commands(*commands)` writes registrations and deregistrations at increasing indexes;
    `remote(scope, node)` is what anti-entropy reads back for `node` (all of it, or `scope`)."""

    def __init__(self) -> None:
        self.store = StateStore()
        self.index = 0

    def apply_commands(self, *commands: Command) -> None:
        for command in commands:
            self.index += 1
            if isinstance(command, RegisterCommand):
                self.store.ensure_registration(self.index, command)
            else:
                assert isinstance(command, DeregisterCommand)
                self.store.deregister(self.index, command)

    def remote(self, scope: SyncScope | None = None, node: str = "n1") -> RemoteNode:
        _, row, services = self.store.node(node)
        _, checks = self.store.node_checks(node)
        remote = RemoteNode(row, {s.id: s for s in services}, {c.check_id: c for c in checks})
        if scope is not None:
            remote.node = row if scope.node else None
            remote.services = {k: v for k, v in remote.services.items() if k in scope.services}
            remote.checks = {k: v for k, v in remote.checks.items() if k in scope.checks}
        return remote
