"""The member table of the SWIM core: records, live count, random picks, probe order (pure, layer 1).

Contract: `MemberTable` owns every `MemberRecord` (us included) by name, keeps the number of
ALIVE + SUSPECT members (`live`, us included) in step with every `set_state`, picks k distinct random
members other than us in O(k) for large tables (`random_nodes`), and yields probe targets in
memberlist's randomized round-robin order (reshuffled each round; a newcomer is inserted at a random
place of the current round). All randomness comes from the injected rng; iteration orders are
insertion orders, so a seeded run is reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from types import MappingProxyType

from agent.gossip.messages import Member, MemberState, NodeState, join_hostport

LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


class MemberRecord:
    __slots__ = ("_view", "addr", "address", "incarnation", "name", "port", "state", "state_changed", "tags")

    def __init__(self, name: str, address: str, port: int, tags: Mapping[str, str], incarnation: int,
                 state: MemberState, now: float) -> None:
        self.name = name
        self.address = address
        self.port = port
        self.addr = join_hostport(address, port)
        self.tags: Mapping[str, str] = MappingProxyType(dict(tags))
        self.incarnation = incarnation
        self.state = state
        self.state_changed = now
        self._view: Member | None = None

    def view(self) -> Member:
        if self._view is None:
            self._view = Member(self.name, self.address, self.port, self.tags, self.state, self.incarnation,
                                self.state_changed)
        return self._view

    def touch(self) -> None:
        """Call after changing a field: the cached `Member` view is rebuilt on next use."""
        self._view = None

    def move(self, address: str, port: int) -> None:
        self.address, self.port, self.addr = address, port, join_hostport(address, port)
        self._view = None


class MemberTable:
    def __init__(self, me: MemberRecord, rng: random.Random) -> None:
        self.me = me
        self.rng = rng
        self.nodes: dict[str, MemberRecord] = {me.name: me}
        self.live = 1 if me.state in LIVE else 0
        self._others: list[str] = []
        self._pos: dict[str, int] = {}
        self._probe_list: list[str] = []
        self._probe_index = 0

    def __len__(self) -> int:
        return len(self.nodes)

    def get(self, name: str) -> MemberRecord | None:
        return self.nodes.get(name)

    def others_live(self) -> int:
        return self.live - (1 if self.me.state in LIVE else 0)

    def add(self, node: MemberRecord) -> None:
        self.nodes[node.name] = node
        self._pos[node.name] = len(self._others)
        self._others.append(node.name)
        if node.state in LIVE:
            self.live += 1
        lo = self._probe_index
        self._probe_list.insert(self.rng.randint(lo, len(self._probe_list)), node.name)

    def remove(self, node: MemberRecord) -> None:
        del self.nodes[node.name]
        if node.state in LIVE:
            self.live -= 1
        pos = self._pos.pop(node.name)
        last = self._others.pop()
        if last != node.name:
            self._others[pos] = last
            self._pos[last] = pos

    def set_state(self, node: MemberRecord, state: MemberState, now: float) -> None:
        was_live, is_live = node.state in LIVE, state in LIVE
        if was_live != is_live:
            self.live += 1 if is_live else -1
        node.state = state
        node.state_changed = now
        node.touch()

    def states(self) -> tuple[NodeState, ...]:
        return tuple(NodeState(n.name, n.address, n.port, n.incarnation, n.state, n.tags)
                     for n in self.nodes.values())

    def with_state(self, state: MemberState) -> list[MemberRecord]:
        return [self.nodes[n] for n in self._others if self.nodes[n].state == state]

    def next_probe_target(self) -> MemberRecord | None:
        for _ in range(len(self._probe_list) + 1):
            if self._probe_index >= len(self._probe_list):
                self._probe_list = list(self._others)
                self.rng.shuffle(self._probe_list)
                self._probe_index = 0
                if not self._probe_list:
                    return None
            node = self.nodes.get(self._probe_list[self._probe_index])
            self._probe_index += 1
            if node is not None and node.state in LIVE:
                return node
        return None

    def random_nodes(self, k: int, ok: Callable[[MemberRecord], bool]) -> list[MemberRecord]:
        """Up to k distinct random members (never us) for which ok(node) holds."""
        others, nodes = self._others, self.nodes
        if k <= 0 or not others:
            return []
        if len(others) <= 4 * k + 8:
            pool = [nodes[n] for n in others if ok(nodes[n])]
            return self.rng.sample(pool, min(k, len(pool)))
        picked: dict[str, MemberRecord] = {}
        for _ in range(6 * k):
            node = nodes[others[self.rng.randrange(len(others))]]
            if node.name not in picked and ok(node):
                picked[node.name] = node
                if len(picked) == k:
                    break
        return list(picked.values())
