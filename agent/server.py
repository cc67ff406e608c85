"""The server role: catalog FSM behind the Raft driver, writes, blocking reads (layer 3).

Contract:
- `apply(command)` proposes an encoded command through Raft and returns the FSM result; raises
  `NoLeader` when no leader is known, and the FSM's `CatalogError` for a rejected command.
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
from agent.local.state import RemoteNode
from agent.raft.filelog import FileLog
from agent.raft.node import SingleVoterRaft
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
    def __init__(self, raft_address: str, data_dir: Path | None = None) -> None:
        self.fsm = CatalogFSM(StateStore())
        storage = FileLog(data_dir / "raft") if data_dir is not None else None
        self.raft = SingleVoterRaft(self.fsm, raft_address, storage)
        self.raft.recover()

    @property
    def store(self) -> StateStore:
        return self.fsm.store

    def known_leader(self) -> bool:
        return bool(self.raft.leader_address())

    def last_contact_ms(self) -> int:
        return self.raft.last_contact_ms()

    def leader_address(self) -> str:
        return self.raft.leader_address()

    def peers(self) -> list[str]:
        return [self.raft.address]

    async def run(self) -> None:
        await self.raft.run()

    async def apply(self, command: Command) -> object:
        if not self.known_leader():
            raise NoLeader()
        return await self.raft.propose(encode(command))

    def apply_now(self, command: Command) -> object:
        """Synchronous apply for bootstrap writes made before the event loop serves requests."""
        return self.raft.apply_now(encode(command))

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
        self.apply_now(RegisterCommand(node=node, service=service, checks=[serf]))

    async def read_node(self, node: str) -> RemoteNode:
        """This node as the catalog holds it (anti-entropy's view of the remote side)."""
        _, found, services = self.store.node(node)
        _, checks = self.store.node_checks(node)
        return RemoteNode(found, {s.id: s for s in services}, {c.check_id: c for c in checks})
