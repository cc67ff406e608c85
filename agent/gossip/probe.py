"""SWIM failure detection: probe rounds, indirect probes with nacks, Lifeguard awareness (pure, layer 1).

Contract: `Prober` picks one target per (awareness-scaled) probe interval from the member table's
randomized round-robin order, pings it, sends `indirect_checks` indirect pings through random ALIVE
members (and the same ping over a stream: memberlist's TCP fallback) if no ack came within
probe_timeout, and at the end of the round reports the target as failed (`tick` returns its name;
the core then suspects it). Acks and nacks are matched by sequence number. As a relay it forwards
acks for indirect pings and sends a nack if the target stays silent. The health score rises with
missed nacks / failed probes / refutations and falls with each ack.
A ping to a SUSPECT member carries the suspicion itself (Lifeguard's buddy system), so the accused
hears it and refutes even if gossip missed it. It sends through the `send(addr, payload, out, extra)`
callback, which adds `extra` parts and piggybacked broadcasts.
"""

from __future__ import annotations

import heapq
import random
from typing import Protocol

from agent.gossip.config import Outgoing, SwimConfig
from agent.gossip.messages import Ack, IndirectPing, MemberState, Nack, Ping, Suspect, encode
from agent.gossip.suspicion import Awareness
from agent.gossip.table import MemberTable

# a relay gives up on the target a little before probe_timeout, so its nack reaches the prober before
# the prober's round ends (indirect pings leave at probe_timeout, the round ends at 2 × probe_timeout)
NACK_AFTER = 0.8

class Send(Protocol):
    def __call__(self, addr: str, msg: bytes, out: list[Outgoing], extra: tuple[bytes, ...] = ()) -> None: ...


class _Probe:
    __slots__ = ("end_at", "indirect_at", "indirect_sent", "nacks", "nacks_expected", "seq", "target")

    def __init__(self, target: str, seq: int, indirect_at: float, end_at: float) -> None:
        self.target = target
        self.seq = seq
        self.indirect_at = indirect_at
        self.end_at = end_at
        self.indirect_sent = False
        self.nacks_expected = 0
        self.nacks = 0


class Prober:
    def __init__(self, table: MemberTable, config: SwimConfig, rng: random.Random, stats: dict[str, int],
                 now: float) -> None:
        self.table = table
        self.config = config
        self.stats = stats
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.stopped = False
        self._probe: _Probe | None = None
        self._forwards: dict[int, tuple[str, int, bool]] = {}    # our seq → (requester, its seq, wants nack)
        self._nack_at: list[tuple[float, int]] = []              # (when, our seq)
        self._seq = 0
        self._next_probe = now + rng.uniform(0, config.probe_interval)

    def stop(self) -> None:
        self.stopped = True
        self._probe = None

    def deadline(self) -> float:
        d = self._nack_at[0][0] if self._nack_at else float("inf")
        if not self.stopped:
            d = min(d, self._next_probe)
        probe = self._probe
        if probe is not None:
            d = min(d, probe.end_at if probe.indirect_sent else probe.indirect_at)
        return d

    def tick(self, now: float, send: Send, out: list[Outgoing]) -> str | None:
        """Advance timers; the name of a member whose probe round just failed, if any."""
        while self._nack_at and self._nack_at[0][0] <= now:
            _, seq = heapq.heappop(self._nack_at)
            fwd = self._forwards.pop(seq, None)
            if fwd is not None and fwd[2]:
                self.stats["nacks_sent"] += 1
                send(fwd[0], encode(Nack(fwd[1], self.table.me.name)), out)
        failed = None
        probe = self._probe
        if probe is not None:
            if not probe.indirect_sent and now >= probe.indirect_at:
                self._send_indirect(probe, send, out)
            if now >= probe.end_at:
                self._probe = None
                missed = probe.nacks_expected - probe.nacks if probe.nacks_expected else 1
                self.awareness.apply(missed)
                failed = probe.target
        if not self.stopped and now >= self._next_probe:
            self._next_probe = now + self.awareness.scale(self.config.probe_interval)
            self._start(now, send, out)
        return failed

    def on_ack(self, seq: int, send: Send, out: list[Outgoing]) -> None:
        probe = self._probe
        if probe is not None and probe.seq == seq:
            self.stats["acks"] += 1
            self.awareness.apply(-1)
            self._probe = None
            return
        fwd = self._forwards.pop(seq, None)
        if fwd is not None:
            send(fwd[0], encode(Ack(fwd[1], self.table.me.name)), out)

    def on_nack(self, seq: int) -> None:
        if self._probe is not None and self._probe.seq == seq:
            self._probe.nacks += 1
            self.stats["nacks_received"] += 1

    def on_indirect(self, msg: IndirectPing, source: str, now: float, send: Send, out: list[Outgoing]) -> None:
        seq = self._next_seq()
        self._forwards[seq] = (msg.source_addr or source, msg.seq, msg.nack)
        me = self.table.me
        send(msg.target_addr, encode(Ping(seq, msg.target, me.name, me.addr)), out)
        heapq.heappush(self._nack_at, (now + NACK_AFTER * self.config.probe_timeout, seq))

    def _start(self, now: float, send: Send, out: list[Outgoing]) -> None:
        self._probe = None
        target = self.table.next_probe_target()
        if target is None:
            return
        seq = self._next_seq()
        # as memberlist: the health score stretches the round (more time for indirect and TCP acks),
        # not the direct ack wait, since waiting longer does not get a lost UDP packet through
        self._probe = _Probe(target.name, seq, now + self.config.probe_timeout,
                             now + self.awareness.scale(self.config.probe_interval))
        self.stats["probes"] += 1
        me = self.table.me
        extra: tuple[bytes, ...] = ()
        if target.state == MemberState.SUSPECT:
            # Lifeguard's buddy system: tell the accused directly, so it can refute in time
            extra = (encode(Suspect(target.name, target.incarnation, me.name)),)
        send(target.addr, encode(Ping(seq, target.name, me.name, me.addr)), out, extra)

    def _send_indirect(self, probe: _Probe, send: Send, out: list[Outgoing]) -> None:
        probe.indirect_sent = True
        target = self.table.get(probe.target)
        if target is None:
            return
        relays = self.table.random_nodes(self.config.indirect_checks,
                                         lambda n: n.state == MemberState.ALIVE and n.name != probe.target)
        me = self.table.me
        msg = encode(IndirectPing(probe.seq, target.name, target.addr, me.name, me.addr, True))
        probe.nacks_expected = len(relays)
        for relay in relays:
            self.stats["indirect_probes"] += 1
            send(relay.addr, msg, out)
        if not self.config.tcp_pings:
            return
        # memberlist's TCP fallback: the same ping over a stream, answered on that connection; lost
        # UDP on a lossy path no longer convicts a member whose TCP still gets through in time
        self.stats["tcp_pings"] += 1
        out.append(Outgoing(target.addr, encode(Ping(probe.seq, target.name, me.name, me.addr)), stream=True,
                            expect_reply=True))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq
