"""The SWIM membership core, modelled on hashicorp/memberlist + Lifeguard (pure, layer 1).

Contract:
- `Swim` never reads a clock, sleeps, sends or draws module-level randomness: the driver passes
  `now` and an injected `random.Random`, and sends the returned `Outgoing` packets. `tick(now)` must
  be called at `next_deadline()` at the latest; calling it earlier is harmless.
- `receive(payload, source, now, stream=)` takes one packet or frame; malformed input is counted in
  `stats["malformed"]` and dropped, never raised.
- Failure detection: one probe per (awareness-scaled) probe interval in randomized round-robin
  order; ping → ack within probe_timeout, else indirect pings through `indirect_checks` members
  (with nacks) and a TCP fallback ping (answered on its connection); no ack by the end of the round
  → SUSPECT with a Lifeguard suspicion timeout that shrinks with independent confirmations (own
  failed probes and first-hand Suspect messages; never push-pull rows) → DEAD; a Suspect of a newer
  incarnation starts a new suspicion. A member hearing itself suspected or dead refutes with a
  higher incarnation. Pings to a SUSPECT member carry the suspicion (Lifeguard's buddy system); a
  member hearing an accusation that was already refuted (against itself or a member it holds ALIVE
  at a higher incarnation) answers the sender with the current Alive.
- Dissemination: every state change is queued as a transmit-limited broadcast (retransmit_mult ×
  max(2, ceil(log10(n + 1))) sends, see `broadcast.retransmit_limit`; an Alive is never sent to its
  own subject) and piggybacked on pings/acks and on gossip packets sent every gossip_interval to
  gossip_nodes members (recently dead ones too); full-state push-pull over a stream periodically
  (stretched in proportion to n above 32 members, so bytes per member stay flat), on join and on
  reconnect attempts to DEAD members (rumor handling lives in `agent.gossip.rumors`). Unlike
  memberlist, a join reply schedules one more push-pull with the same member a dissemination round
  later, so members that joined just after us are learnt in seconds, not at the next push-pull.
- Membership lifetime: DEAD members are reaped after reconnect_timeout, LEFT after
  tombstone_timeout. Events (`take_events`): join, update, failed, leave, reap (also for ourselves).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from agent.gossip.broadcast import PART_OVERHEAD, BroadcastQueue, retransmit_limit
from agent.gossip.config import ENVELOPE_RESERVE, MemberEvent, Outgoing, SwimConfig
from agent.gossip.messages import (
    Ack,
    Alive,
    Compound,
    Dead,
    IndirectPing,
    MalformedMessage,
    Member,
    MemberState,
    Nack,
    NodeState,
    Ping,
    PushPull,
    Suspect,
    compound_overhead,
    decode,
    encode,
    encode_compound,
    from_record,
    unpack_record,
)
from agent.gossip.probe import Prober
from agent.gossip.rumors import StateRumors
from agent.gossip.suspicion import Suspicion
from agent.gossip.table import LIVE, MemberRecord, MemberTable

__all__ = ["MemberEvent", "Outgoing", "Swim", "SwimConfig"]

ALIVE, SUSPECT, DEAD, LEFT = MemberState.ALIVE, MemberState.SUSPECT, MemberState.DEAD, MemberState.LEFT
_STATS = ("probes", "acks", "indirect_probes", "tcp_pings", "nacks_sent", "nacks_received", "suspicions", "refutes",
          "failed", "malformed", "misdirected", "conflicts", "push_pulls", "reconnects", "gossip_packets",
          "packets_out", "bytes_out", "packets_in", "bytes_in")


PUSH_PULL_FLAT_BELOW = 32  # memberlist's pushPullScaleThreshold: up to this many members, the plain interval


class Swim(StateRumors):
    def __init__(self, name: str, address: str, port: int, tags: Mapping[str, str], config: SwimConfig,
                 rng: random.Random, now: float) -> None:
        self.name = name
        self.config = config
        self.rng = rng
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self._me = MemberRecord(name, address, port, tags, 1, ALIVE, now)
        self._table = MemberTable(self._me, rng)
        self._nodes = self._table.nodes
        self._queue = BroadcastQueue(config.udp_payload_max - ENVELOPE_RESERVE - compound_overhead(1) - PART_OVERHEAD)
        self._suspicions: dict[str, Suspicion] = {}
        self._timers: list[tuple[float, int, str, str, float]] = []   # (when, n, kind, name, stamp)
        self._timer_n = 0
        self._prober = Prober(self._table, config, rng, self.stats, now)
        self._events: list[MemberEvent] = [MemberEvent("join", self._me.view())]
        self._leaving = False
        self._budget = config.udp_payload_max - ENVELOPE_RESERVE
        self._next_gossip = now + rng.uniform(0, config.gossip_interval)
        self._next_push_pull = now + rng.uniform(0.5, 1.0) * config.push_pull_interval
        self._next_reconnect = now + config.reconnect_interval
        self._follow_up = ""                    # the member we joined through: one more push-pull soon

    # --- public API -----------------------------------------------------------------------------

    @property
    def health_score(self) -> int:
        return self._prober.awareness.score

    def members(self) -> list[Member]:
        return [n.view() for n in self._nodes.values()]

    def member(self, name: str) -> Member | None:
        node = self._nodes.get(name)
        return node.view() if node else None

    def pending_broadcasts(self) -> int:
        """Broadcasts still queued for (re)transmission (0 in a quiet cluster)."""
        return len(self._queue)

    def take_events(self) -> list[MemberEvent]:
        events, self._events = self._events, []
        return events

    def join(self, addresses: Iterable[str], now: float) -> list[Outgoing]:
        payload = encode(PushPull(True, False, self._states()))
        out = [Outgoing(a, payload, stream=True, expect_reply=True) for a in addresses]
        self._count_out(out)
        return out

    def leave(self, now: float) -> list[Outgoing]:
        if self._leaving:
            return []
        self._leaving = True
        self._prober.stop()
        me = self._me
        me.incarnation += 1
        self._table.set_state(me, LEFT, now)
        self._queue.queue(self.name, encode(Dead(self.name, me.incarnation, self.name, True)))
        self._events.append(MemberEvent("leave", me.view()))
        out: list[Outgoing] = []
        self._gossip(now, out)
        self._next_gossip = now + self.config.gossip_interval
        return self._count_out(out)

    def left_broadcast_done(self) -> bool:
        return self.name not in self._queue or self._table.others_live() <= 0

    def force_leave(self, name: str, now: float, *, prune: bool = False) -> bool:
        node = self._nodes.get(name)
        if node is None or node is self._me:
            return False
        if node.state == DEAD:
            self._on_dead(Dead(name, node.incarnation, self.name, True), None, now)
        if prune and node.state == LEFT:
            self._remove(node)
        return True

    def set_tags(self, tags: Mapping[str, str], now: float) -> None:
        me = self._me
        me.tags = MappingProxyType(dict(tags))
        me.incarnation += 1
        me.touch()
        if not self._leaving:
            self._queue.queue(self.name, self._alive_payload())
        self._events.append(MemberEvent("update", me.view()))

    def next_deadline(self) -> float:
        d = min(self._next_push_pull, self._next_reconnect, self._prober.deadline())
        if self._timers:
            d = min(d, self._timers[0][0])
        if self._queue:
            d = min(d, self._next_gossip)
        return d

    def tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, kind, key, stamp = heapq.heappop(timers)
            self._fire(kind, key, stamp, now, out)
        failed = self._prober.tick(now, self._send, out)
        node = self._nodes.get(failed) if failed else None
        if node is not None and node.state in LIVE:
            self._on_suspect(Suspect(node.name, node.incarnation, self.name), None, now)
        if now >= self._next_gossip:
            self._gossip(now, out)
            nxt = self._next_gossip + self.config.gossip_interval
            self._next_gossip = nxt if nxt > now else now + self.config.gossip_interval
        if now >= self._next_push_pull:
            self._next_push_pull = now + self._push_pull_interval()
            self._push_pull(now, out)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            self._reconnect(out)
        return self._count_out(out)

    def receive(self, payload: bytes, source: str, now: float, *, stream: bool = False) -> list[Outgoing]:
        self.stats["packets_in"] += 1
        self.stats["bytes_in"] += len(payload)
        out: list[Outgoing] = []
        try:
            msg = decode(payload)
        except MalformedMessage:
            self.stats["malformed"] += 1
            return out
        if isinstance(msg, Compound):
            for part in msg.parts:
                try:
                    rec = unpack_record(part)
                    if self._stale_alive(rec):
                        continue
                    inner = from_record(rec)
                except MalformedMessage:
                    self.stats["malformed"] += 1
                    continue
                if isinstance(inner, Compound):
                    self.stats["malformed"] += 1
                    continue
                self._handle(inner, part, source, now, stream, out)
        else:
            self._handle(msg, payload, source, now, stream, out)
        return self._count_out(out)

    # --- message handling -----------------------------------------------------------------------

    def _handle(self, msg: object, raw: bytes, source: str, now: float, stream: bool, out: list[Outgoing]) -> None:
        if isinstance(msg, Alive):
            self._on_alive(msg, raw, now)
        elif isinstance(msg, Ping):
            if msg.target and msg.target != self.name:
                self.stats["misdirected"] += 1
                return
            if stream:   # a TCP fallback ping: the ack goes back on the same connection
                out.append(Outgoing("", encode(Ack(msg.seq, self.name)), stream=True, reply=True))
            else:
                self._send(msg.source_addr or source, encode(Ack(msg.seq, self.name)), out)
        elif isinstance(msg, Ack):
            self._prober.on_ack(msg.seq, self._send, out)
        elif isinstance(msg, Suspect):
            self._correct_stale_rumor(msg, source, stream, out)
            self._on_suspect(msg, raw, now)
        elif isinstance(msg, Dead):
            self._correct_stale_rumor(msg, source, stream, out)
            self._on_dead(msg, raw, now)
        elif isinstance(msg, IndirectPing):
            self._prober.on_indirect(msg, source, now, self._send, out)
        elif isinstance(msg, Nack):
            self._prober.on_nack(msg.seq)
        elif isinstance(msg, PushPull):
            self._merge(msg.states, source, now)
            if msg.reply and msg.join:
                self._follow_up_push_pull(source, now)
            if not msg.reply and stream:
                out.append(Outgoing("", encode(PushPull(msg.join, True, self._states())), stream=True, reply=True))

    def _fire(self, kind: str, name: str, stamp: float, now: float, out: list[Outgoing]) -> None:
        if kind == "suspect":
            sus = self._suspicions.get(name)
            node = self._nodes.get(name)
            if (sus is None or node is None or node.state != SUSPECT or sus.incarnation != int(stamp)
                    or now < sus.deadline):
                return
            self._on_dead(Dead(name, node.incarnation, self.name), None, now)
        elif kind == "reap":
            node = self._nodes.get(name)
            if node is not None and node.state in (DEAD, LEFT) and node.state_changed == stamp:
                self._remove(node)

    def _gossip(self, now: float, out: list[Outgoing]) -> None:
        if not self._queue:
            return
        dead_window = self.config.gossip_to_the_dead
        targets = self._table.random_nodes(self.config.gossip_nodes,
                                     lambda n: n.state in LIVE or now - n.state_changed < dead_window)
        limit = self._retransmit_limit()
        budget = self._budget - compound_overhead(0)
        for i, target in enumerate(targets):
            if i == 0:
                out.extend(Outgoing(target.addr, p, stream=True) for p in self._queue.take_oversized(limit))
            parts = self._queue.take(budget, limit, target.name)
            if not parts:
                break
            self.stats["gossip_packets"] += 1
            out.append(Outgoing(target.addr, encode_compound(parts)))

    def _push_pull(self, now: float, out: list[Outgoing]) -> None:
        if self._leaving:
            return
        follow_up, self._follow_up = self._follow_up, ""
        peers = [] if follow_up else self._table.random_nodes(1, lambda n: n.state == ALIVE)
        if follow_up or peers:
            payload = encode(PushPull(False, False, self._states()))
            out.append(Outgoing(follow_up or peers[0].addr, payload, stream=True, expect_reply=True))

    def _reconnect(self, out: list[Outgoing]) -> None:
        if self._leaving:
            return
        dead = self._table.with_state(DEAD)
        if dead:
            self.stats["reconnects"] += 1
            peer = dead[self.rng.randrange(len(dead))]
            out.append(Outgoing(peer.addr, encode(PushPull(True, False, self._states())), stream=True,
                                expect_reply=True))

    def _follow_up_push_pull(self, peer: str, now: float) -> None:
        """After a join, exchange state once more with the member we joined through, one dissemination
        round later: members that joined through it just after us would otherwise reach us only by
        gossip sent while nobody knew us yet, or at the next (log-scaled, minutes-long) push-pull."""
        rounds = self._retransmit_limit() / self.config.gossip_nodes
        delay = self.rng.uniform(1.0, 2.0) * rounds * self.config.gossip_interval
        if now + delay < self._next_push_pull:
            self._next_push_pull = now + delay
            self._follow_up = peer

    def _push_pull_interval(self) -> float:
        """Above 32 live members the interval grows in proportion to n: a push-pull moves the whole
        table both ways (O(n) bytes), so this keeps each member's push-pull bytes per second flat
        however large the cluster (memberlist's log2 stretch lets it grow as n / log n). Changes
        still spread at once by broadcast, and a partition still heals through the reconnect
        push-pulls to dead members every `reconnect_interval`."""
        n = self._table.live
        interval = self.config.push_pull_interval
        return interval if n <= PUSH_PULL_FLAT_BELOW else interval * n / PUSH_PULL_FLAT_BELOW

    # --- helpers --------------------------------------------------------------------------------

    def _send(self, addr: str, msg: bytes, out: list[Outgoing], extra: tuple[bytes, ...] = ()) -> None:
        if len(msg) > self._budget:
            out.append(Outgoing(addr, msg, stream=True))
            return
        parts = [msg, *extra]
        if self._queue:
            room = self._budget - compound_overhead(len(parts)) - sum(len(p) for p in parts)
            parts.extend(self._queue.take(room, self._retransmit_limit()))
        out.append(Outgoing(addr, encode_compound(parts)))

    def _count_out(self, out: list[Outgoing]) -> list[Outgoing]:
        if out:
            self.stats["packets_out"] += len(out)
            self.stats["bytes_out"] += sum(len(o.payload) for o in out)
        return out

    def _broadcast(self, name: str, raw: bytes | None, msg: Alive | Suspect | Dead) -> None:
        # an accusation must reach the accused (it refutes); its own Alive is no news to it
        self._queue.queue(name, raw if raw is not None else encode(msg), for_subject=not isinstance(msg, Alive))

    def _alive_payload(self) -> bytes:
        me = self._me
        return encode(Alive(me.name, me.address, me.port, me.incarnation, me.tags))

    def _states(self) -> tuple[NodeState, ...]:
        return self._table.states()

    def _retransmit_limit(self) -> int:
        return retransmit_limit(self.config.retransmit_mult, self._table.live)

    def _add_timer(self, when: float, kind: str, name: str, stamp: float) -> None:
        self._timer_n += 1
        heapq.heappush(self._timers, (when, self._timer_n, kind, name, stamp))

    def _remove(self, node: MemberRecord) -> None:
        self._table.remove(node)
        self._suspicions.pop(node.name, None)
        self._queue.discard(node.name)
        self._events.append(MemberEvent("reap", node.view()))
