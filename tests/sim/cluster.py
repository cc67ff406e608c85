"""A deterministic Raft cluster simulation: seeded fake clock, fake network, real codec.

Contract: `Cluster(seed, ids)` bootstraps RaftCores on `MemoryStorage`; everything random
(latency, loss, duplication, tick phases, election timeouts) comes from the seed, so a run is
replayed exactly by its seed. Messages travel as msgpack bytes through `agent.raft.codec`.
Each node is driven the way a real driver must: persist a Ready, then send, then apply, then
advance. `Invariants` are checked after every delivery and every Ready; a violation raises
`InvariantViolation` naming the seed. Faults: partitions (groups), loss, duplication,
reordering (random latency), crash (volatile state lost, storage kept) and restart.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import msgpack

from agent.raft.codec import decode, encode
from agent.raft.core import CoreConfig, RaftCore, Role
from agent.raft.errors import RaftError
from agent.raft.memstore import MemoryStorage
from agent.raft.messages import EntryKind, Membership
from tests.sim.invariants import Invariants

TICK_MS = 100  # one heartbeat interval; election timeout 1–2 s with the default CoreConfig
ANNOUNCE_MS = 2  # RaftNode's COMMIT_ANNOUNCE_DELAY


@dataclass
class NetConfig:
    min_latency: int = 1   # ms
    max_latency: int = 15
    loss: float = 0.0
    duplicate: float = 0.0


@dataclass
class SimNode:
    id: str
    storage: MemoryStorage
    bootstrap: Membership | None
    core: RaftCore | None = None
    fsm: list[bytes] = field(default_factory=list)   # applied COMMAND payloads, in order
    fsm_index: int = 0                               # last applied log index
    lives: int = 0

    @property
    def up(self) -> bool:
        return self.core is not None


class Cluster:
    def __init__(self, seed: int, ids: list[str], net: NetConfig | None = None, config: CoreConfig | None = None,
                 snapshot_every: int = 0, trailing: int = 5) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.net = net or NetConfig()
        self.config = config or CoreConfig()
        self.snapshot_every = snapshot_every
        self.trailing = trailing
        self.now = 0
        self._seq = 0
        self._events: list[tuple[int, int, str, object]] = []
        self._announcing: set[str] = set()
        self.groups: dict[str, int] = {}
        self.inv = Invariants(seed)
        self.acked: dict[bytes, int] = {}               # payload → index, once its leader applied it
        self._pending: dict[tuple[str, int], tuple[int, bytes]] = {}  # (node, index) → (term, payload)
        self.delivered = 0
        self.reads: dict[bytes, int] = {}
        self._reads_started = 0
        boot = Membership.of(ids)
        self.nodes: dict[str, SimNode] = {}
        for sid in ids:
            self.add_node(sid, boot)

    # --- nodes ---
    def add_node(self, sid: str, bootstrap: Membership | None = None) -> SimNode:
        node = SimNode(sid, MemoryStorage(), bootstrap)
        self.nodes[sid] = node
        self._start(node)
        self._schedule(self.rng.randrange(1, TICK_MS + 1), "tick", sid)
        return node

    def _start(self, node: SimNode) -> None:
        node.lives += 1
        rng = random.Random(f"{self.seed}/{node.id}/{node.lives}")
        node.core = RaftCore(node.id, node.storage, rng, self.config, bootstrap=node.bootstrap)
        snap = node.storage.snapshot()
        node.fsm = list(msgpack.unpackb(snap.data)) if snap else []
        node.fsm_index = snap.index if snap else 0
        self.inv.on_start(node.id, node.core)
        self._drive(node)

    def crash(self, sid: str) -> None:
        node = self.nodes[sid]
        node.core = None
        self._pending = {k: v for k, v in self._pending.items() if k[0] != sid}

    def restart(self, sid: str) -> None:
        node = self.nodes[sid]
        if node.core is None:
            self._start(node)

    def partition(self, *groups: list[str]) -> None:
        """Nodes in different groups cannot talk; nodes in no group are alone."""
        self.groups = {sid: n for n, group in enumerate(groups) for sid in group}
        for sid in self.nodes:
            self.groups.setdefault(sid, -1 - len(self.groups))

    def heal(self) -> None:
        self.groups = {}

    def _blocked(self, a: str, b: str) -> bool:
        return bool(self.groups) and self.groups.get(a, -1) != self.groups.get(b, -2)

    # --- queries ---
    def leader(self) -> RaftCore | None:
        """The live leader with the highest term (there may be a stale one in a minority)."""
        leaders = [n.core for n in self.nodes.values() if n.core is not None and n.core.role is Role.LEADER]
        return max(leaders, key=lambda c: c.term, default=None)

    def cores(self) -> list[RaftCore]:
        return [n.core for n in self.nodes.values() if n.core is not None]

    # --- client ---
    def propose(self, data: bytes, via: str | None = None) -> bool:
        core = self.nodes[via].core if via else self.leader()
        if core is None:
            return False
        try:
            index = core.propose(data)
        except RaftError:
            return False
        self._pending[(core.id, index)] = (core.term, data)
        self._drive(self.nodes[core.id])
        return True

    # --- running ---
    def _schedule(self, delay: int, kind: str, payload: object) -> None:
        self._seq += 1
        heapq.heappush(self._events, (self.now + delay, self._seq, kind, payload))

    def run_for(self, ms: int) -> None:
        self.run_until(lambda: False, ms)

    def run_until(self, done: Callable[[], bool], timeout_ms: int) -> bool:
        end = self.now + timeout_ms
        while self._events and self._events[0][0] <= end:
            if done():
                return True
            when, _, kind, payload = heapq.heappop(self._events)
            self.now = when
            if kind == "tick":
                self._tick(str(payload))
            elif kind == "announce":
                self._announce(str(payload))
            else:
                self._deliver(payload)  # type: ignore[arg-type]
        self.now = max(self.now, end)
        return done()

    def _tick(self, sid: str) -> None:
        self._schedule(TICK_MS, "tick", sid)
        node = self.nodes.get(sid)
        if node is None or node.core is None:
            return
        node.core.tick()
        self._drive(node)

    def _announce(self, sid: str) -> None:
        """RaftNode's commit announcement timer (COMMIT_ANNOUNCE_DELAY after a commit no
        AppendEntries carried)."""
        self._announcing.discard(sid)
        node = self.nodes.get(sid)
        if node is None or node.core is None:
            return
        node.core.announce_commit()
        self._drive(node)

    def _send(self, src: str, dst: str, data: bytes) -> None:
        if self._blocked(src, dst) or self.rng.random() < self.net.loss:
            return
        copies = 2 if self.rng.random() < self.net.duplicate else 1
        for _ in range(copies):
            self._schedule(self.rng.randint(self.net.min_latency, self.net.max_latency), "msg", (src, dst, data))

    def _deliver(self, item: tuple[str, str, bytes]) -> None:
        src, dst, data = item
        node = self.nodes.get(dst)
        if node is None or node.core is None or self._blocked(src, dst):
            return
        self.delivered += 1
        node.core.step(decode(data))
        self._drive(node)

    def _drive(self, node: SimNode) -> None:
        core = node.core
        assert core is not None
        while core.has_ready():
            rd = core.ready()
            self.inv.before_persist(node.id, core, rd)
            node.storage.save(rd.hard_state, rd.entries, rd.snapshot)   # "fsync" before sending
            if rd.snapshot is not None:
                node.fsm = list(msgpack.unpackb(rd.snapshot.data))
                node.fsm_index = rd.snapshot.index
            for m in rd.messages:
                self._send(node.id, m.dst, encode(m))
            for entry in rd.committed:
                self.inv.on_apply(node.id, node.fsm_index, entry)
                node.fsm_index = entry.index
                if entry.kind == EntryKind.COMMAND:
                    node.fsm.append(entry.data)
                pending = self._pending.pop((node.id, entry.index), None)
                if pending is not None and pending == (entry.term, entry.data):
                    self.acked[entry.data] = entry.index
            for rs in rd.read_states:
                self.inv.on_read_state(node.id, rs.context, rs.index)
                self.reads[rs.context] = rs.index
            core.advance(rd)
            self.inv.after_step(node.id, core)
            self._check_lease(core)
        if node.id not in self._announcing and core.commit_unannounced():
            self._announcing.add(node.id)
            self._schedule(ANNOUNCE_MS, "announce", node.id)
        self._maybe_snapshot(node)

    def _check_lease(self, core: RaftCore) -> None:
        """A lease read must never be stale: its index covers everything committed anywhere."""
        index = core.lease_read_index()
        if index is not None and index < self.inv.max_committed:
            self.inv.fail(f"stale lease read on {core.id} (term {core.term}): index {index} < committed "
                          f"{self.inv.max_committed}")

    def read(self, via: str) -> bytes | None:
        """Start a read-index (`?consistent`) read on `via`; its ReadState lands in `self.reads`."""
        core = self.nodes[via].core
        if core is None:
            return None
        self._reads_started += 1
        ctx = f"{via}/{self._reads_started}".encode()
        try:
            core.read_index(ctx)
        except RaftError:
            return None
        self.inv.on_read_start(ctx)
        self._drive(self.nodes[via])
        return ctx

    def _maybe_snapshot(self, node: SimNode) -> None:
        core, storage = node.core, node.storage
        assert core is not None
        base = storage.snap.index if storage.snap else 0
        if not self.snapshot_every or node.fsm_index - base < self.snapshot_every:
            return
        storage.save_snapshot(core.snapshot_at(node.fsm_index, msgpack.packb(node.fsm)))
        core.compact(max(node.fsm_index - self.trailing, core.log.snap_index))

    # --- end-of-run checks ---
    def converged(self) -> bool:
        """A leader exists and every live node applied everything it committed."""
        leader = self.leader()
        if leader is None or leader.log.term(leader.committed) != leader.term:
            return False
        if leader.committed < leader.log.last_index():
            return False
        return all(n.fsm_index >= leader.committed for n in self.nodes.values()
                   if n.core is not None and n.id in leader.membership.members())

    def check_acked_everywhere(self) -> None:
        leader = self.leader()
        assert leader is not None, f"seed={self.seed}: no leader"
        for node in self.nodes.values():
            if node.core is None or node.id not in leader.membership.members():
                continue
            have = set(node.fsm)
            missing = [d for d in self.acked if d not in have]
            assert not missing, f"seed={self.seed}: {node.id} lost acknowledged writes {missing[:5]}"
        fsms = {n.id: n.fsm for n in self.nodes.values() if n.core is not None and n.fsm_index == leader.committed}
        assert len({tuple(f) for f in fsms.values()}) <= 1, f"seed={self.seed}: state machines differ"
