"""A deterministic SWIM simulation: seeded fake clock + fake network driving real `Swim` cores.

Contract: `SwimNet(seed)` owns the clock (`now`, seconds) and one `random.Random(seed)` from which
every latency, loss decision and core rng is drawn, so a run is replayed exactly by its seed.
Packets travel as the bytes the cores produce (real msgpack codec). UDP packets are lost with
probability `loss` and delayed by a random latency; streams are reliable but fail (are dropped)
when either end is down or the ends are partitioned, and under loss each frame is late by TCP's
retransmission timeouts (a connection's SYN / SYN-ACK: 1 s each, data: 0.2 s, doubling). A stream
frame with `expect_reply` gets the receiver's `reply=True` outputs delivered back to the sender as
`receive(stream=True)`, like the asyncio driver does. Each core is ticked exactly at its
`next_deadline()`. Faults: crash / restart, partitions into groups. Byte counters per node support
the scale measurements. Invariant checked on every event: what a member reports about another never
returns to a lower incarnation.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from agent.gossip.messages import Member, MemberState
from agent.gossip.swim import MemberEvent, Outgoing, Swim, SwimConfig

GOSSIP_PORT = 8301


@dataclass
class SimMember:
    name: str
    address: str
    swim: Swim
    up: bool = True
    events: list[MemberEvent] = field(default_factory=list)
    udp_bytes: int = 0
    stream_bytes: int = 0

    @property
    def addr(self) -> str:
        return f"{self.address}:{GOSSIP_PORT}"


class SwimNet:
    def __init__(self, seed: int, config: SwimConfig | None = None, *, latency: tuple[float, float] = (0.0005, 0.005),
                 loss: float = 0.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.config = config or SwimConfig.lan()
        self.latency = latency
        self.loss = loss
        self.now = 0.0
        self.members: dict[str, SimMember] = {}
        self._by_addr: dict[str, str] = {}
        self._groups: dict[str, int] | None = None
        self._q: list[tuple[float, int, int, tuple]] = []      # (time, n, kind, args) packets in flight
        self._ticks: list[tuple[float, int, str]] = []          # (deadline, n, name)
        self._sched: dict[str, float] = {}
        self._n = 0
        self._ephemeral = 40000
        self.delivered = 0
        self._seen_inc: dict[tuple[str, str], int] = {}
        self.dropped = 0

    # --- membership of the simulation -----------------------------------------------------------

    def add(self, name: str, tags: Mapping[str, str] | None = None, config: SwimConfig | None = None) -> SimMember:
        i = len(self.members)
        address = f"10.{i // 250}.{i % 250 + 1}.{1 + (i * 7) % 250}"
        swim = Swim(name, address, GOSSIP_PORT, tags or {"role": "node", "dc": "dc1"}, config or self.config,
                    random.Random(self.rng.getrandbits(64)), self.now)
        m = SimMember(name, address, swim)
        self.members[name] = m
        self._by_addr[m.addr] = name
        self._after(m, [])
        return m

    def join(self, name: str, seeds: Iterable[str]) -> None:
        m = self.members[name]
        self._after(m, m.swim.join([self.members[s].addr for s in seeds], self.now))

    def crash(self, name: str) -> None:
        self.members[name].up = False

    def restart(self, name: str, seeds: Iterable[str] = ()) -> SimMember:
        """A crashed member comes back as a fresh process (incarnation 1) at the same address."""
        old = self.members[name]
        swim = Swim(name, old.address, GOSSIP_PORT, dict(old.swim.member(name).tags),  # type: ignore[union-attr]
                    old.swim.config, random.Random(self.rng.getrandbits(64)), self.now)
        m = SimMember(name, old.address, swim)
        self.members[name] = m
        self._sched.pop(name, None)
        self._seen_inc = {k: v for k, v in self._seen_inc.items() if k[0] != name}   # a new process
        self._after(m, [])
        if seeds:
            self.join(name, seeds)
        return m

    def partition(self, *groups: Iterable[str]) -> None:
        self._groups = {name: g for g, names in enumerate(groups) for name in names}

    def heal(self) -> None:
        self._groups = None

    def act(self, name: str, fn: Callable[[Swim, float], list[Outgoing] | None]) -> None:
        """Run fn(core, now) on a member and send whatever it returns (leave, set_tags, force_leave...)."""
        m = self.members[name]
        outs = fn(m.swim, self.now)
        self._after(m, outs if isinstance(outs, list) else [])

    # --- views -----------------------------------------------------------------------------------

    def up(self) -> list[SimMember]:
        return [m for m in self.members.values() if m.up]

    def state(self, observer: str, name: str) -> MemberState | None:
        member = self.members[observer].swim.member(name)
        return member.state if member else None

    def view(self, observer: str) -> dict[str, MemberState]:
        return {mm.name: mm.state for mm in self.members[observer].swim.members()}

    def all_see(self, name: str, states: Iterable[MemberState], observers: Iterable[str] | None = None) -> bool:
        wanted = set(states)
        names = observers if observers is not None else [m.name for m in self.up() if m.name != name]
        return all(self.state(o, name) in wanted for o in names)

    def converged(self, names: Iterable[str] | None = None) -> bool:
        """Every live member sees exactly the given names (default: the live ones) as ALIVE."""
        want = set(names) if names is not None else {m.name for m in self.up()}
        for m in self.up():
            alive = {x.name for x in m.swim.members() if x.state == MemberState.ALIVE}
            if alive != want:
                return False
        return True

    def member(self, observer: str, name: str) -> Member | None:
        return self.members[observer].swim.member(name)

    # --- the clock ------------------------------------------------------------------------------

    def run_for(self, seconds: float) -> None:
        self.run_until(self.now + seconds)

    def run_until(self, t_end: float, until: Callable[[], bool] | None = None, check_every: float = 0.1) -> bool:
        """Advance to t_end (or until `until()` holds, checked every `check_every`); True if it held."""
        next_check = self.now
        while True:
            if until is not None and self.now >= next_check:
                if until():
                    return True
                next_check = self.now + check_every
            t_pkt = self._q[0][0] if self._q else float("inf")
            t_tick = self._ticks[0][0] if self._ticks else float("inf")
            t = min(t_pkt, t_tick, next_check if until is not None else float("inf"))
            if t > t_end:
                self.now = t_end
                return until() if until is not None else False
            self.now = max(self.now, t)
            if t_pkt <= t_tick and t_pkt == t:
                _, _, kind, args = heapq.heappop(self._q)
                self._deliver(kind, args)
            elif t_tick == t:
                _, _, name = heapq.heappop(self._ticks)
                m = self.members.get(name)
                if m is None or not m.up or self._sched.get(name) != t:
                    continue
                self._sched.pop(name, None)
                self._after(m, m.swim.tick(self.now))

    # --- the network ----------------------------------------------------------------------------

    def _after(self, m: SimMember, outs: list[Outgoing]) -> None:
        if not m.up:
            return
        for out in outs:
            self._send(m, out)
        events = m.swim.take_events()
        if events:
            self._check(m, events)
            m.events.extend(events)
        d = m.swim.next_deadline()
        if self._sched.get(m.name) != d:
            self._sched[m.name] = d
            self._n += 1
            heapq.heappush(self._ticks, (max(d, self.now), self._n, m.name))
            self._sched[m.name] = max(d, self.now)

    def _check(self, m: SimMember, events: list[MemberEvent]) -> None:
        """Invariant: what one member reports about another never goes back to a lower incarnation
        (until it is reaped and forgotten)."""
        for e in events:
            key = (m.name, e.member.name)
            if e.kind == "reap":
                self._seen_inc.pop(key, None)
                continue
            last = self._seen_inc.get(key, -1)
            if e.member.incarnation < last:
                raise AssertionError(f"seed={self.seed}: {m.name} saw {e.member.name} go from incarnation "
                                     f"{last} to {e.member.incarnation} ({e.kind}) at t={self.now:.3f}")
            self._seen_inc[key] = e.member.incarnation

    def _blocked(self, a: str, b: str) -> bool:
        if not self.members[a].up or not self.members[b].up:
            return True
        return self._groups is not None and self._groups.get(a, -1) != self._groups.get(b, -2)

    def _send(self, m: SimMember, out: Outgoing, reply_to: str | None = None) -> None:
        dst = reply_to if out.reply else self._by_addr.get(out.address)
        if dst is None:
            self.dropped += 1
            return
        delay = self.rng.uniform(*self.latency)
        self._n += 1
        if out.stream or out.reply:
            m.stream_bytes += len(out.payload)
            delay += self._tcp_retransmits(handshake=not out.reply)
            if self._blocked(m.name, dst):
                self.dropped += 1
                return
            # the driver reports a reply frame as coming from the address it dialled; an inbound
            # connection comes from an ephemeral port
            self._ephemeral += 1
            src = m.addr if out.reply else f"{m.address}:{self._ephemeral}"
            heapq.heappush(self._q, (self.now + delay, self._n, 1, (m.name, dst, out.payload, src, out.expect_reply)))
        else:
            m.udp_bytes += len(out.payload)
            if self.loss and self.rng.random() < self.loss:
                self.dropped += 1
                return
            heapq.heappush(self._q, (self.now + delay, self._n, 0, (m.name, dst, out.payload, m.addr, False)))

    def _tcp_retransmits(self, *, handshake: bool) -> float:
        """The extra delay packet loss adds to one TCP frame: each lost segment waits out a
        retransmission timeout that doubles (Linux: 1 s for SYN and SYN-ACK, at least 0.2 s for data).
        No loss, no random draw (loss-free runs keep their sequences)."""
        if not self.loss:
            return 0.0
        extra = 0.0
        for rto in (1.0, 1.0, 0.2) if handshake else (0.2,):
            while self.rng.random() < self.loss:
                extra += rto
                rto *= 2
        return extra

    def _deliver(self, kind: int, args: tuple) -> None:
        src_name, dst_name, payload, src, expect_reply = args
        if self._blocked(src_name, dst_name):
            self.dropped += 1
            return
        dst = self.members[dst_name]
        self.delivered += 1
        outs = dst.swim.receive(payload, src, self.now, stream=kind == 1)
        replies = [o for o in outs if o.reply]
        self._after(dst, [o for o in outs if not o.reply])
        if expect_reply:
            for o in replies:
                self._send(dst, o, reply_to=src_name)
