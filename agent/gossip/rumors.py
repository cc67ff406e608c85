"""How SWIM state rumors change the member table: alive, suspect, dead, refutation, push-pull merge
(pure, layer 1; part of `agent.gossip.swim.Swim`, split out for size).

Contract (memberlist's aliveNode / suspectNode / deadNode / refute / mergeState, with the
deviations `swim.py` lists): `StateRumors` is a base class of `Swim` and works on its table,
suspicions, broadcasts and events. An Alive with a higher incarnation (or new tags at the same one
from the member itself) wins; a member can move to another address only while LEFT or once it has
been DEAD for `dead_node_reclaim`. A Suspect starts or confirms a Lifeguard suspicion (push-pull rows
never confirm one); a Dead about a live member marks it DEAD, or LEFT when it left on its own. Any
accusation against ourselves is refuted with a higher incarnation.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType

from agent.gossip.config import MemberEvent, Outgoing
from agent.gossip.messages import ALIVE_TAG, Alive, Dead, MemberState, NodeState, Suspect, encode
from agent.gossip.suspicion import Suspicion, suspicion_timeout
from agent.gossip.table import LIVE, MemberRecord

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT


class StateRumors:
    """Rumor handling for `Swim` (which provides every attribute used here)."""

    def _stale_alive(self, rec: object) -> bool:
        """Fast path: an Alive record about a known member, no newer than what we hold, same address
        (most gossip during a join storm) is dropped before it is validated and built."""
        if type(rec) is not list or len(rec) != 6 or rec[0] != ALIVE_TAG or type(rec[1]) is not str:
            return False
        node = self._nodes.get(rec[1])
        return (node is not None and node is not self._me and type(rec[4]) is int and rec[4] <= node.incarnation
                and rec[2] == node.address and rec[3] == node.port)

    def _correct_stale_rumor(self, msg: Suspect | Dead, source: str, stream: bool, out: list[Outgoing]) -> None:
        """Someone still gossips an accusation that was already refuted (against us, or against a
        member we hold ALIVE at a higher incarnation): it missed the refutation, so answer it directly
        with the current Alive before its own suspicion timer expires (not memberlist; see
        tests/sim/swim_soak.py: a refutation's gossip can miss one member by chance)."""
        node = self._nodes.get(msg.name)
        if stream or node is None or msg.incarnation >= node.incarnation:
            return
        if node is self._me:
            if not self._leaving:
                self._send(source, self._alive_payload(), out)
        elif node.state == ALIVE:
            self._send(source, encode(Alive(node.name, node.address, node.port, node.incarnation, node.tags)), out)

    def _on_alive(self, a: Alive, raw: bytes | None, now: float) -> None:
        if a.name == self.name:
            me = self._me
            if self._leaving:
                return
            if a.incarnation > me.incarnation or (
                    a.incarnation == me.incarnation and (a.address, a.port, a.tags) != (me.address, me.port, me.tags)):
                self._refute(a.incarnation)
            return
        node = self._nodes.get(a.name)
        if node is None:
            node = MemberRecord(a.name, a.address, a.port, a.tags, a.incarnation, ALIVE, now)
            self._table.add(node)
            self._broadcast(a.name, raw, a)
            self._events.append(MemberEvent("join", node.view()))
            return
        moved = node.address != a.address or node.port != a.port
        if moved:
            reclaim = self.config.dead_node_reclaim
            if node.state in LIVE or (node.state == DEAD and (reclaim <= 0 or now - node.state_changed < reclaim)):
                self.stats["conflicts"] += 1
                return
        elif a.incarnation <= node.incarnation:
            return
        old_state, old_tags = node.state, node.tags
        node.incarnation = a.incarnation
        if moved:
            node.move(a.address, a.port)
        if a.tags != old_tags:
            node.tags = MappingProxyType(dict(a.tags))
        self._suspicions.pop(a.name, None)
        if old_state != ALIVE:
            self._table.set_state(node, ALIVE, now)
        else:
            node.touch()
        self._broadcast(a.name, raw, a)
        if old_state in (DEAD, LEFT):
            self._events.append(MemberEvent("join", node.view()))
        elif moved or a.tags != old_tags:
            self._events.append(MemberEvent("update", node.view()))

    def _on_suspect(self, s: Suspect, raw: bytes | None, now: float, *, second_hand: bool = False) -> None:
        """`second_hand`: a SUSPECT/DEAD row of a push-pull, nobody's own failed probe: it starts a
        suspicion with no known accuser, never confirms one and is not re-broadcast (memberlist
        confirms under its own name here, so anti-entropy alone shrinks Lifeguard timeouts)."""
        node = self._nodes.get(s.name)
        if node is None or s.incarnation < node.incarnation:
            return
        if node is self._me:
            if not self._leaving:
                self._refute(s.incarnation)
            return
        sus = self._suspicions.get(s.name)
        if node.state == SUSPECT and sus is not None and s.incarnation == sus.incarnation:
            if not second_hand and sus.confirm(s.source):
                self._add_timer(sus.deadline, "suspect", s.name, float(sus.incarnation))
                self._broadcast(s.name, raw, s)
            return
        if node.state not in LIVE:
            return
        # ALIVE, or SUSPECT at an older incarnation: then the member refuted that suspicion (we missed
        # its Alive) and is accused afresh, so this starts a new suspicion; confirming the stale one
        # (memberlist does) would date it from the old start and can expire it at once
        node.incarnation = s.incarnation
        self._table.set_state(node, SUSPECT, now)
        n = self._table.live
        k = self.config.suspicion_mult - 2
        if n - 2 < k:
            k = 0
        lo = suspicion_timeout(self.config.suspicion_mult, n, self.config.probe_interval)
        origin = None if second_hand else s.source
        sus = Suspicion(origin, s.incarnation, now, k, lo, lo * self.config.suspicion_max_timeout_mult)
        self._suspicions[s.name] = sus
        self._add_timer(sus.deadline, "suspect", s.name, float(s.incarnation))
        self.stats["suspicions"] += 1
        if not second_hand:
            self._broadcast(s.name, raw, s)

    def _on_dead(self, d: Dead, raw: bytes | None, now: float) -> None:
        node = self._nodes.get(d.name)
        if node is None or d.incarnation < node.incarnation:
            return
        if node is self._me:
            if not self._leaving:
                self._refute(d.incarnation)
            return
        if node.state == LEFT or (node.state == DEAD and not d.left):
            return
        node.incarnation = d.incarnation
        self._suspicions.pop(d.name, None)
        new = LEFT if d.left else DEAD
        self._table.set_state(node, new, now)
        self._broadcast(d.name, raw, d)
        if new == DEAD:
            self.stats["failed"] += 1
        self._events.append(MemberEvent("leave" if d.left else "failed", node.view()))
        timeout = self.config.tombstone_timeout if d.left else self.config.reconnect_timeout
        self._add_timer(now + timeout, "reap", d.name, now)

    def _refute(self, accused: int) -> None:
        me = self._me
        me.incarnation = max(me.incarnation, accused) + 1
        me.touch()
        self._queue.queue(self.name, self._alive_payload())
        self._prober.awareness.apply(1)
        self.stats["refutes"] += 1

    def _merge(self, states: Iterable[NodeState], source: str, now: float) -> None:
        self.stats["push_pulls"] += 1
        for st in states:
            if st.state == ALIVE or (st.state == SUSPECT and st.name not in self._nodes):
                self._on_alive(Alive(st.name, st.address, st.port, st.incarnation, st.tags), None, now)
            if st.state == LEFT:
                self._on_dead(Dead(st.name, st.incarnation, st.name, True), None, now)
            elif st.state != ALIVE:
                # a remote DEAD verdict only makes us suspect: our own probes decide
                self._on_suspect(Suspect(st.name, st.incarnation, self.name), None, now, second_hand=True)

    # --- periodic work --------------------------------------------------------------------------
