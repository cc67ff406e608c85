"""The server role: catalog FSM behind the Raft driver, writes, blocking reads (layer 3).

Contract:
- `CatalogServer(raft_address, data_dir, settings=None)`: without `settings` a single server
  (dev or -bootstrap) on `agent.raft.cluster.RaftCluster`; with them, a cluster member.
- `apply(command)` proposes an encoded command through Raft (followers forward it to the leader)
  and returns the FSM result; raises `NoLeader` when no leader appears within the hold timeout,
  and the FSM's `CatalogError` for a rejected command.
- `store` is the local catalog `StateStore`; reads are local (leader lease / stale semantics);
  `read_barrier("consistent")` first confirms leadership with a quorum (read-index).
- `wait_for_change(keys, index, timeout)` returns as soon as any watch key's index passes `index`,
  or when `timeout` elapses (blocking queries). It never polls: it registers a store watcher.
- `register_self(...)` writes this server's node, its passing `serfHealth` check and the `consul`
  service, as Consul's leader does when it reconciles its own member.
- `cluster_settings(config, address, data_dir)` maps an agent's configuration to its Raft
  settings (alone or with the other servers, timing, snapshots).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.catalog.commands import Command, RegisterCommand, encode
from agent.catalog.fsm import CatalogFSM
from agent.catalog.store import StateStore
from agent.catalog.watch import WatchHandle
from agent.config import AgentConfig
from agent.errors import NoLeader
from agent.local.state import RemoteNode, SyncScope
from agent.raft.cluster import ClusterSettings, RaftCluster
from agent.raft.errors import RaftError
from agent.types import (
    SERF_ALIVE_OUTPUT,
    SERF_CHECK_ID,
    SERF_CHECK_NAME,
    HealthCheck,
    Node,
    NodeService,
    Status,
)

log = logging.getLogger("waypost.server")


async def wait_for_index(current: Callable[[], int], watch: Callable[[Callable[[int], None]], WatchHandle],
                         index: int, timeout: float) -> None:
    """Blocking-query wait: return once `current()` passes `index` (a watcher registered with
    `watch(wake)` says when), or after `timeout`. Never polls; `index <= 0` never waits."""
    if index <= 0 or timeout <= 0 or current() > index:
        return
    changed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def wake(new_index: int) -> None:
        if not changed.done():
            changed.set_result(new_index)

    handle = watch(wake)
    try:
        await asyncio.wait_for(changed, timeout)
    except TimeoutError:
        pass
    finally:
        handle.cancel()


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
        return self.cluster.alone()

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
        except Exception:
            log.exception("raft stopped")  # the agent's task group then stops the agent
            raise
        finally:
            self.cluster.close()

    async def apply(self, command: Command) -> object:
        return await self.cluster.propose(encode(command))

    def apply_now(self, command: Command) -> object:
        """Synchronous apply for bootstrap writes made before the event loop serves requests
        (single server only)."""
        return self.cluster.apply_now(encode(command))

    def reads_locally(self) -> bool:
        """A default-mode read may be answered from this server's store right now (the fast path
        asks this on every request): a single server, or the leader holding a fresh lease."""
        return self.single or self.raft.lease_ok()

    def read_ready(self, mode: str) -> bool:
        """A read in `mode` may be answered from this server's store right now, with no barrier:
        "stale" always, a single server always, "leader" (default) on a leader holding a fresh
        lease (shorter than the election timeout, it vouches for the store)."""
        return mode == "stale" or self.single or (mode == "leader" and self.reads_locally())

    async def read_barrier(self, mode: str) -> None:
        """Call before answering a read in `mode` ("stale", "leader" or "consistent", as
        `http.common.parse_consistency` returns): nothing to wait for when `read_ready(mode)`;
        otherwise, and always for "consistent" on a cluster, a read-index round (a quorum
        confirms the leader) and this server applying up to it come first. Raises `NoLeader` when
        no leader answers within the hold timeout."""
        if self.read_ready(mode):
            return
        # "consistent", or a default read on a follower / a leader without a fresh lease: a
        # read-index round through the leader, then wait until this server has applied up to it
        try:
            async with asyncio.timeout(self.cluster.settings.hold_timeout):  # no extra task
                await self.raft.read_index()
        except (TimeoutError, RaftError):
            raise NoLeader() from None

    async def wait_for_change(self, keys: Iterable[str], index: int, timeout: float) -> None:
        keys = tuple(keys)
        store = self.store
        await wait_for_index(lambda: store.index_of(*keys), lambda wake: store.watch(keys, wake), index, timeout)

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


def cluster_settings(config: AgentConfig, address: str, data_dir: Path | None) -> ClusterSettings:
    """How this server joins Raft: alone (-dev, -bootstrap, or neither -bootstrap-expect > 1 nor a
    join address) or with the other servers, whose server ports gossip tells (`_member_event`).
    The agent's server-port listener (agent.rpc) accepts Raft connections."""
    joins = config.start_join + config.retry_join
    single = config.dev or config.bootstrap or (config.bootstrap_expect <= 1 and not joins)
    return ClusterSettings(
        server_id=config.node_name, address=f"{address}:{config.ports.server}",
        bind_host=config.bind_addr or "0.0.0.0", port=config.ports.server, data_dir=data_dir,
        expect=config.bootstrap_expect, join=[], single=single, listen=False,
        accept_joins=single and not config.dev and data_dir is not None,
        raft_multiplier=config.performance.raft_multiplier, hold_timeout=config.performance.rpc_hold_timeout,
        snapshot_threshold=config.raft_snapshot_threshold, trailing_logs=config.raft_trailing_logs,
        snapshot_interval=config.raft_snapshot_interval)
