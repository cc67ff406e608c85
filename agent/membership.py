"""This agent's place in the LAN gossip pool: builds the GossipNode from config, joins (layer 3).

Contract:
- `Membership(config, node_id, advertise)` loads the keyring: `data_dir/serf/local.keyring` (unless
  `disable_keyring_file` or in memory) seeded from `encrypt` (bad keys raise `KeyringError`).
- `start(server_port)` builds the `GossipNode` with Consul's member tags (`gossip_tags`, with the
  bound server port) and the SWIM timing from `gossip_lan` (+ `reconnect_timeout`), binds
  `ports.serf_lan` (0 = ephemeral, see `port`), then tries the `-join` addresses once (failure
  raises `GossipJoinError`: the agent exits, as Consul's does); `run()` runs the
  `-retry-join` loop (agent.gossip.joiner) until one join succeeds, `retry_max` is exhausted
  (`RetryJoinFailed` ends the agent) or the agent stops.
- Until `start`, there are no members and events subscribed with `on_event` are queued for the
  node. It delegates what the HTTP API needs of gossip (`members`, `join`, `force_leave`,
  `keyring_operation`, `local_member`; user events: `on_user_event`, kept until `start`, and
  `broadcast_event`, which sends nothing before `start`) to the node; `servers()` → alive server
  members of our datacenter; `leave(timeout)` broadcasts our leave; `close()` stops gossip.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agent.config import AgentConfig, ConfigError
from agent.errors import Problem
from agent.gossip.config import MemberEvent, SwimConfig
from agent.gossip.joiner import retry_join, start_join
from agent.gossip.keyring import Keyring, KeyringReport
from agent.gossip.messages import Member, MemberState
from agent.gossip.node import GossipNode
from agent.gossip.userevents import BroadcastResult
from agent.version import VERSION

log = logging.getLogger("waypost.membership")
ALIVE_STATES = (MemberState.ALIVE, MemberState.SUSPECT)
# Consul's LAN setting: a name dead for this long may come back from another address or port
# (a rebuilt host); before that, a second agent claiming a live or freshly dead name is ignored
DEAD_NODE_RECLAIM_SECONDS = 30.0


def gossip_tags(config: AgentConfig, node_id: str, server_port: int) -> dict[str, str]:
    """Consul's LAN member tags: role, datacenter, node id, build, protocol versions; servers
    add their server port (clients reach the servers' API there) and how they bootstrap."""
    tags = {"role": "consul" if config.server else "node", "dc": config.datacenter, "id": node_id,
            "segment": "", "build": f"{VERSION}:waypost", "vsn": "2", "vsn_min": "2", "vsn_max": "3"}
    if config.server:
        tags.update(port=str(server_port), raft_vsn="3")
        if config.bootstrap or config.dev:
            tags["bootstrap"] = "1"
        elif config.bootstrap_expect:
            tags["expect"] = str(config.bootstrap_expect)
    return tags


def packet_loss(environ: Mapping[str, str]) -> Callable[[str, bytes], bool] | None:
    """Fault injection for tests and benchmarks: `WAYPOST_TEST_GOSSIP_DROP=0.05` drops that fraction
    of the gossip packets this agent sends (so 5% per hop; an internal setting, not a Consul key)."""
    raw = environ.get("WAYPOST_TEST_GOSSIP_DROP", "").strip()
    try:
        fraction = float(raw) if raw else 0.0
    except ValueError:
        problem = Problem("WAYPOST_TEST_GOSSIP_DROP", 0, f"must be a fraction such as 0.05, got {raw!r}")
        raise ConfigError([problem]) from None
    if not 0.0 < fraction < 1.0:
        return None
    rng = random.Random()
    return lambda direction, _packet: direction == "out" and rng.random() < fraction


def keyring_path(config: AgentConfig) -> Path | None:
    if config.disable_keyring_file or config.dev or not config.data_dir:
        return None
    return Path(config.data_dir) / "serf" / "local.keyring"


EVENT_LOG_NAMES = {"join": "EventMemberJoin", "update": "EventMemberUpdate", "failed": "EventMemberFailed",
                   "leave": "EventMemberLeave", "reap": "EventMemberReap"}


def log_member_event(event: MemberEvent) -> None:
    """Consul's `serf: EventMemberJoin: name address` lines: the operator's record of who came and went."""
    log.info("serf: %s: %s %s", EVENT_LOG_NAMES[event.kind], event.member.name, event.member.address)


class Membership:
    def __init__(self, config: AgentConfig, node_id: str, advertise: str) -> None:
        self.config = config
        self.node_id = node_id
        self.advertise = advertise
        self.keyring = Keyring.load(keyring_path(config), config.encrypt)
        self.node: GossipNode | None = None
        self.port = 0
        self._subscribers: list[Callable[[MemberEvent], None]] = []
        self._servers: list[Member] | None = None  # servers() between member events (client hot path)
        self._event_handler: Callable[[bytes, str], None] | None = None

    async def start(self, server_port: int) -> int:
        config = self.config
        self.node = GossipNode(
            config.node_name, self.advertise, config.bind_addr, config.ports.serf_lan,
            gossip_tags(config, self.node_id, server_port),
            dataclasses.replace(SwimConfig.from_gossip_config(config.gossip_lan, config.reconnect_timeout),
                                dead_node_reclaim=DEAD_NODE_RECLAIM_SECONDS),
            keyring=self.keyring, verify_incoming=config.encrypt_verify_incoming,
            verify_outgoing=config.encrypt_verify_outgoing, drop=packet_loss(os.environ))
        self.node.subscribe(self._forget_servers)  # first: later subscribers may ask for servers()
        self.node.subscribe(log_member_event)
        for callback in self._subscribers:
            self.node.subscribe(callback)
        self.node.on_user_event(self._event_handler)
        self.port = await self.node.start()
        if config.start_join:
            joined = await start_join(self.node, config.start_join)
            log.info("joined the cluster through %d of %d -join addresses", joined, len(config.start_join))
        return self.port

    async def run(self) -> None:
        """The -retry-join loop (returns at once without retry-join addresses)."""
        if self.config.retry_join and self.node is not None:
            await retry_join(self.node, self.config.retry_join, self.config.retry_interval,
                             self.config.retry_max, on_joined=self._joined)

    def _joined(self, count: int) -> None:
        log.info("retry-join: joined the cluster through %d node(s)", count)

    def on_event(self, callback: Callable[[MemberEvent], None]) -> Callable[[], None]:
        if self.node is not None:
            return self.node.subscribe(callback)
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    # --- what the HTTP API and the agent ask ---
    def members(self) -> list[Member]:
        return self.node.members() if self.node is not None else []

    def local_member(self) -> Member:
        assert self.node is not None, "gossip not started"
        return self.node.local_member()

    async def join(self, addresses: Sequence[str]) -> int:
        assert self.node is not None, "gossip not started"
        return await self.node.join(addresses)

    def force_leave(self, name: str, prune: bool = False) -> bool:
        return self.node.force_leave(name, prune) if self.node is not None else False

    def on_user_event(self, handler: Callable[[bytes, str], None]) -> None:
        self._event_handler = handler
        if self.node is not None:
            self.node.on_user_event(handler)

    async def broadcast_event(self, payload: bytes) -> BroadcastResult:
        if self.node is None:
            return BroadcastResult(sent=0, failed=0)
        return await self.node.broadcast_event(payload)

    async def keyring_operation(self, op: str, key: str = "") -> KeyringReport:
        assert self.node is not None, "gossip not started"
        return await self.node.keyring_operation(op, key)  # type: ignore[arg-type]

    def alive_count(self) -> int:
        return sum(1 for m in self.members() if m.state in ALIVE_STATES)

    def servers(self) -> list[Member]:
        """Alive (or suspect) servers of our datacenter. A client agent asks on every forwarded
        request and DNS lookup, so the answer is kept until the next member event: every change it
        depends on (join, tags, failed, left, reaped) is one; alive ↔ suspect is not, and both count."""
        if self._servers is None:
            dc = self.config.datacenter
            servers = [m for m in self.members()
                       if m.state in ALIVE_STATES and m.tags.get("role") == "consul" and m.tags.get("dc") == dc]
            if self.node is None:
                return servers
            self._servers = servers
        return self._servers

    def _forget_servers(self, _event: MemberEvent) -> None:
        self._servers = None

    async def leave(self, timeout: float) -> None:
        if self.node is not None:
            await self.node.leave(timeout)

    async def close(self) -> None:
        if self.node is not None:
            await self.node.close()
