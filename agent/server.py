"""The server role: catalog FSM behind the Raft driver, writes, blocking reads (layer 3).

Contract:
- `CatalogServer(raft_address, data_dir, settings=None)`: without `settings` a single server
  (dev or -bootstrap) on `agent.raft.cluster.RaftCluster`; with them, a cluster member.
- `apply(command)` proposes an encoded command through Raft (followers forward it to the leader)
  and returns the FSM result; raises `NoLeader` when no leader appears within the hold timeout,
  and the FSM's `CatalogError` for a rejected command.
- `store` is the local catalog `StateStore`; reads are local (leader lease / stale semantics).
- `wait_for_change(keys, index, timeout)` returns as soon as any watch key's index passes `index`,
  or when `timeout` elapses (blocking queries). It never polls: it registers a store watcher.
- `register_self(...)` writes this server's node, its passing `serfHealth` check and the `consul`
  service, as Consul's leader does when it reconciles its own member.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from agent.catalog.commands import Command, RegisterCommand, encode
from agent.catalog.fsm import CatalogFSM
from agent.catalog.store import StateStore
from agent.errors import NoLeader
from agent.local.state import RemoteNode, SyncScope
from agent.raft.cluster import ClusterSettings, RaftCluster
from agent.types import (
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    HealthCheck,
    Node,
    NodeService,
    Status,
)


class CatalogServer:
    def __init__(self, raft_address: str, data_dir: Path | None = None,
                 settings: ClusterSettings | None = None) -> None:
        self.fsm = CatalogFSM(StateStore())
        if settings is None:
            settings = ClusterSettings(server_id=raft_address, address=raft_address, data_dir=data_dir)
        self.cluster = RaftCluster(settings, self.fsm)
        self.raft = self.cluster.node

    @property
    def single(self) -> bool:
        return self.cluster.settings.single

    @property
    def store(self) -> StateStore:
        return self.fsm.store

    def known_leader(self) -> bool:
        return bool(self.raft.leader_id())

    def last_contact_ms(self) -> int:
        return self.raft.last_contact_ms()

    def leader_address(self) -> str:
        return self.cluster.leader_address()

    def peers(self) -> list[str]:
        return self.cluster.peers()

    async def run(self) -> None:
        try:
            await self.cluster.run()
        finally:
            self.cluster.close()

    async def apply(self, command: Command) -> object:
        return await self.cluster.propose(encode(command))

    def apply_now(self, command: Command) -> object:
        """Synchronous apply for bootstrap writes made before the event loop serves requests
        (single server only)."""
        return self.cluster.apply_now(encode(command))

    async def wait_for_change(self, keys: Iterable[str], index: int, timeout: float) -> None:
        keys = tuple(keys)
        if index <= 0 or self.store.index_of(*keys) > index or timeout <= 0:
            return
        changed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def wake(new_index: int) -> None:
            if not changed.done():
                changed.set_result(new_index)

        handle = self.store.watch(keys, wake)
        try:
            await asyncio.wait_for(changed, timeout)
        except TimeoutError:
            pass
        finally:
            handle.cancel()

    def register_self(self, node: Node, server_port: int, version: str) -> None:
        """Synchronously on a single server; cluster members use `register_self_async`."""
        self.apply_now(self._self_registration(node, server_port, version))

    async def register_self_async(self, node: Node, server_port: int, version: str) -> None:
        """Register this server once the cluster can take writes (retries until it does)."""
        command = self._self_registration(node, server_port, version)
        while True:
            try:
                await self.apply(command)
                return
            except NoLeader:
                continue

    def _self_registration(self, node: Node, server_port: int, version: str) -> RegisterCommand:
        service = NodeService(
            id="consul",
            service="consul",
            port=server_port,
            meta={"raft_version": "3", "serf_protocol_current": "2", "serf_protocol_min": "1",
                  "serf_protocol_max": "5", "version": version, "read_replica": "false",
                  "non_voter": "false"},
        )
        serf = HealthCheck(node=node.node, check_id=SERF_CHECK_ID, name=SERF_CHECK_NAME,
                           status=Status.PASSING, output=SERF_ALIVE_OUTPUT)
        return RegisterCommand(node=node, service=service, checks=[serf])

    async def read_node(self, node: str, scope: SyncScope | None = None) -> RemoteNode:
        """This node as the catalog holds it (anti-entropy's view of the remote side): all of it,
        or only the rows in `scope`."""
        store = self.store
        if scope is None:
            _, found, services = store.node(node)
            _, checks = store.node_checks(node)
            return RemoteNode(found, {s.id: s for s in services}, {c.check_id: c for c in checks})
        remote = RemoteNode(store.node_row(node) if scope.node else None)
        for service_id in scope.services:
            row = store.node_service(node, service_id)
            if row is not None:
                remote.services[service_id] = row
        for check_id in scope.checks:
            check = store.check(node, check_id)
            if check is not None:
                remote.checks[check_id] = check
        return remote
