"""The leader's member reconciliation loop: gossip members → catalog (layer 3).

Contract (Consul's leaderLoop reconcile duties):
- `MemberReconciler(server, members, subscribe, *, datacenter=None, node_name=None)`: `members()`
  lists the gossip members (`agent.gossip.messages.Member`); `subscribe(callback)` delivers member
  events and returns an unsubscribe function. `node_name` (this server's node, never
  deregistered) defaults to the Raft server id (the agent uses the node name), `datacenter` to
  the `dc` tag of that node's own member (no pass plans anything before gossip shows it).
- `run()` works only while `server.raft.is_leader()` (polled every `leader_poll` s). A full pass
  (every member, plus reaping) runs on becoming leader (after a consistent read barrier, so it
  plans from an up-to-date store) and every `interval` s (Consul's reconcile_interval, 60 s).
  Member events are reconciled in between by an event pass that plans only the members the
  events named (the latest event per name; a burst within `coalesce` s → one pass), so a
  failure costs O(1) catalog work however large the cluster (Consul's reconcileMember).
- A pass plans with `agent.catalog.reconcile.plan_member_reconcile` and applies the commands one
  at a time with `await server.apply(cmd)`. A command the catalog rejects is logged and skipped;
  any other error (no leader, leadership lost) ends the pass, and a full pass follows after
  `RETRY_MIN` s, doubling up to `interval` while failures repeat. An event pass that deregistered
  a node is followed by a full pass `LEFT_RECHECK` s later: a registration the departed agent had
  in flight may land after the deregistration and must not stay.
- Reaping (catalog nodes with `serfHealth` but no member) waits until this server has been leader
  for `reap_grace` s and sees its own member: a fresh gossip view (a restarted server before its
  push-pull) must not deregister live nodes.
- Time comes from an injected `checks.clock.Clock` (tests use a `FakeClock`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from agent.catalog.commands import DeregisterCommand
from agent.catalog.reconcile import MemberView, plan_member_reconcile
from agent.errors import BadRequest
from agent.gossip.messages import Member
from agent.gossip.swim import MemberEvent
from agent.local.antientropy import wait_event
from agent.server import CatalogServer
from checks.clock import Clock, LoopClock

log = logging.getLogger("waypost.reconcile")

RECONCILE_INTERVAL = 60.0  # Consul's reconcile_interval: a full pass every minute
LEADER_POLL = 0.5          # how often leadership is checked (the Raft node's callback is the cluster's)
COALESCE = 0.05            # member events within this window share one pass
RETRY_MIN = 1.0            # a failed pass is retried this soon, doubling up to the interval
REAP_GRACE = 30.0          # one push-pull interval: a new leader's gossip view has filled by then
LEFT_RECHECK = 8.0         # after deregistering a node: one more full pass once writes it had in
                           # flight (a forwarded registration waits up to the 7 s hold timeout) landed


class MemberReconciler:
    def __init__(self, server: CatalogServer, members: Callable[[], list[Member]],
                 subscribe: Callable[[Callable[[MemberEvent], None]], Callable[[], None]], *,
                 datacenter: str | None = None, node_name: str | None = None,
                 interval: float = RECONCILE_INTERVAL, leader_poll: float = LEADER_POLL,
                 coalesce: float = COALESCE, reap_grace: float = REAP_GRACE,
                 clock: Clock | None = None) -> None:
        self._server = server
        self._members = members
        self._subscribe = subscribe
        self._datacenter = datacenter
        if node_name is None:
            node_name = str(getattr(getattr(server, "cluster", None), "id", ""))
        self._node_name = node_name
        self._interval = interval
        self._leader_poll = leader_poll
        self._coalesce = coalesce
        self._reap_grace = reap_grace
        self._clock: Clock = clock or LoopClock()
        self._wake = asyncio.Event()
        self._changed: dict[str, MemberView] = {}  # named by events since the last pass
        self._pending_at = 0.0                      # when the first of them arrived
        self._leader_since: float | None = None
        self._next_full = 0.0
        self._retry = RETRY_MIN
        self.stats = {"passes": 0, "full": 0, "failed": 0, "applied": 0, "rejected": 0, "servers_removed": 0,
                      "deregistered": 0}

    def _on_event(self, event: MemberEvent) -> None:
        """Called by the gossip node: never raises into it."""
        try:
            view = MemberView.from_member(event.member)
        except KeyError:  # a member state this planner does not know: let a full pass look
            log.warning("member %s in unexpected state %r", event.member.name, event.member.state)
            self._next_full = min(self._next_full, self._clock.now())
            self._wake.set()
            return
        if event.kind == "reap":
            view = MemberView(view.name, view.address, "reaped", view.tags)
        if not self._changed:
            self._pending_at = self._clock.now()
        self._changed.pop(view.name, None)
        self._changed[view.name] = view
        self._wake.set()

    async def run(self) -> None:
        unsubscribe = self._subscribe(self._on_event)
        try:
            while True:
                await self._step()
        finally:
            unsubscribe()

    async def _step(self) -> None:
        now = self._clock.now()
        if not self._server.raft.is_leader():
            self._leader_since = None
            deadline = now + self._leader_poll
        else:
            if self._leader_since is None:  # a new leader reconciles everything at once
                self._leader_since = now
                self._next_full = now
            if now >= self._next_full:
                await self._full_pass()
                return
            if self._changed and now >= self._pending_at + self._coalesce:
                await self._event_pass()
                return
            deadline = min(self._next_full, now + self._leader_poll)
            if self._changed:
                deadline = min(deadline, self._pending_at + self._coalesce)
        self._wake.clear()
        await wait_event(self._wake, self._clock, deadline)

    async def _full_pass(self) -> None:
        self._changed = {}  # a full pass covers them (events from here on need another pass)
        ok, reaped = await self.reconcile_once(full=True)
        now = self._clock.now()
        if ok:
            self._retry = RETRY_MIN
            self._next_full = now + self._interval
        else:
            self._next_full = now + self._retry
            self._retry = min(self._retry * 2, self._interval)
        if not reaped and self._leader_since is not None and self._leader_since + self._reap_grace > now:
            self._next_full = min(self._next_full, self._leader_since + self._reap_grace)

    async def _event_pass(self) -> None:
        deregistered = self.stats["deregistered"]
        ok, _ = await self.reconcile_once(full=False)
        if not ok:  # a full pass soon repairs whatever this one missed
            self._next_full = min(self._next_full, self._clock.now() + self._retry)
        elif self.stats["deregistered"] > deregistered:  # a write the node had in flight may still land
            self._next_full = min(self._next_full, self._clock.now() + LEFT_RECHECK)

    async def reconcile_once(self, *, full: bool = True) -> tuple[bool, bool]:
        """One pass over every member (`full`) or over those events named since the last pass;
        (every command applied or rejected, reaping was allowed)."""
        self.stats["passes"] += 1
        self.stats["full"] += full
        changed, self._changed = self._changed, {}
        try:
            await self._server.read_barrier("consistent")
            everyone = [MemberView.from_member(m) for m in self._members()] if full else []
            datacenter = self._datacenter or self._own_datacenter(everyone if full else self._members())
            if datacenter is None:
                return True, False  # gossip has not shown us yet: nothing to reconcile against
            reap = full and self._may_reap(everyone)
            commands = plan_member_reconcile(everyone if full else list(changed.values()), self._server.store,
                                             datacenter=datacenter, local_node=self._node_name, reap=reap)
            for command in commands:
                if not self._server.raft.is_leader():
                    self.stats["failed"] += 1
                    return False, reap
                try:
                    await self._server.apply(command)
                    self.stats["applied"] += 1
                    self.stats["deregistered"] += isinstance(command, DeregisterCommand)
                except BadRequest as exc:  # this command only; the others still apply
                    self.stats["rejected"] += 1
                    log.warning("member reconcile: the catalog rejected %s: %s", command, exc)
            await self._remove_departed_servers(everyone if full else list(changed.values()), datacenter)
        except Exception as exc:  # no leader, leadership lost: a full pass tries again
            self.stats["failed"] += 1
            log.warning("member reconcile pass failed (retry in %.1fs): %s", self._retry, exc)
            return False, False
        return True, reap

    async def _remove_departed_servers(self, members: Sequence[MemberView], datacenter: str) -> None:
        """A server of ours that left the gossip pool gracefully (`waypost leave`) leaves Raft too,
        so the quorum shrinks with it (Consul's handleLeftMember → removeConsulServer)."""
        cluster = getattr(self._server, "cluster", None)
        if cluster is None:  # a bare catalog (tests): no Raft membership to change
            return
        voters = cluster.node.membership().members()
        for member in members:
            if (member.status == "left" and member.tags.get("role") == "consul"
                    and member.tags.get("dc") == datacenter and member.name != self._node_name
                    and member.name in voters):
                log.info("removing server %s from Raft: it left the cluster", member.name)
                await cluster.remove_peer(member.name)
                self.stats["servers_removed"] += 1

    def _own_datacenter(self, members: Sequence[MemberView | Member]) -> str | None:
        if self._datacenter is None:
            own = next((m for m in members if m.name == self._node_name), None)
            if own is not None:
                self._datacenter = own.tags.get("dc")  # a node's datacenter never changes
        return self._datacenter

    def _may_reap(self, members: list[MemberView]) -> bool:
        if self._leader_since is None or self._clock.now() - self._leader_since < self._reap_grace:
            return False
        if self._node_name:
            return any(m.name == self._node_name for m in members)
        return bool(members)
