"""The leader's member reconciliation driver on a real in-process single-server CatalogServer,
with fake gossip members and a fake clock (the real Raft apply runs on the loop; waits have deadlines)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.catalog.reconcile import serf_check
from agent.catalog.store import StateStore
from agent.errors import NoLeader
from agent.gossip.messages import Member, MemberState
from agent.gossip.swim import MemberEvent
from agent.raft.cluster import ClusterSettings
from agent.reconcile_driver import COALESCE, LEFT_RECHECK, RETRY_MIN, MemberReconciler
from agent.server import CatalogServer
from agent.types import SERF_CHECK_ID, HealthCheck, Node
from agent.version import VERSION
from checks.clock import FakeClock
from checks.definition import Status

DC = "dc1"


def gossip(name: str, state: MemberState = MemberState.ALIVE, role: str = "node") -> Member:
    tags = {"role": role, "dc": DC, "id": f"id-{name}", "build": f"{VERSION}:waypost"}
    if role == "consul":
        tags["port"] = "8300"
    return Member(name, "127.0.0.1", 8301, tags, state, 1, 0.0)


class Leadership:
    """A CatalogServer whose leadership the test decides, and whose applies can be made to fail."""

    def __init__(self, real: CatalogServer) -> None:
        self.real = real
        self.leader = True
        self.fail = 0
        self.raft = self

    def is_leader(self) -> bool:
        return self.leader

    @property
    def store(self) -> StateStore:
        return self.real.store

    async def read_barrier(self, mode: str) -> None:
        await self.real.read_barrier(mode)

    async def apply(self, command: Command) -> object:
        if self.fail:
            self.fail -= 1
            raise NoLeader()
        return await self.real.apply(command)


class Harness:
    def __init__(self, clock: FakeClock, server: Leadership) -> None:
        self.clock = clock
        self.server = server
        self.members: list[Member] = [gossip("leader", role="consul")]
        self.callbacks: list[Callable[[MemberEvent], None]] = []

    def subscribe(self, callback: Callable[[MemberEvent], None]) -> Callable[[], None]:
        self.callbacks.append(callback)
        return lambda: self.callbacks.remove(callback)

    def set(self, member: Member, kind: str = "update") -> None:
        self.members = [m for m in self.members if m.name != member.name] + [member]
        for callback in list(self.callbacks):
            callback(MemberEvent(kind, member))  # type: ignore[arg-type]

    def remove(self, name: str) -> None:
        gone = next(m for m in self.members if m.name == name)
        self.members = [m for m in self.members if m.name != name]
        for callback in list(self.callbacks):
            callback(MemberEvent("reap", gone))

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Let the real Raft apply run (it uses the real loop) until `condition`, or fail."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5.0
        while not condition():
            assert loop.time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.001)

    def serf(self, node: str) -> Status | None:
        check = self.server.store.check(node, SERF_CHECK_ID)
        return None if check is None else check.status


def run_driver(body: Callable[[Harness, MemberReconciler], Awaitable[None]], *, fail_first: int = 0,
               **kw: object) -> None:
    async def scenario() -> None:
        clock = FakeClock(start=0.0)
        real = CatalogServer("127.0.0.1:0")
        server = Leadership(real)
        server.fail = fail_first
        harness = Harness(clock, server)
        reconciler = MemberReconciler(server, lambda: list(harness.members), harness.subscribe,  # type: ignore[arg-type]
                                      datacenter=DC, node_name="leader", clock=clock, **kw)  # type: ignore[arg-type]
        tasks = [asyncio.create_task(real.run()), asyncio.create_task(reconciler.run())]
        try:
            await body(harness, reconciler)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert harness.callbacks == []  # run() unsubscribed on the way out

    asyncio.run(scenario())


def test_driver_reconciles_at_once_then_on_events() -> None:
    async def body(h: Harness, r: MemberReconciler) -> None:
        h.members.append(gossip("c1"))
        await h.until(lambda: h.serf("c1") == Status.PASSING and h.serf("leader") == Status.PASSING,
                      "the first pass")
        assert h.server.store.node_service("leader", "consul") is not None
        passes = r.stats["passes"]
        h.set(gossip("c1", MemberState.DEAD), "failed")
        h.set(gossip("c2"), "join")  # a burst: one pass
        await h.clock.advance(COALESCE)
        await h.until(lambda: h.serf("c1") == Status.CRITICAL and h.serf("c2") == Status.PASSING, "the event pass")
        assert r.stats["passes"] == passes + 1 and r.stats["full"] == 1  # an event pass: only c1 and c2
        h.set(gossip("c2", MemberState.LEFT), "leave")
        await h.clock.advance(COALESCE)
        await h.until(lambda: h.server.store.node_row("c2") is None, "the leave")

    run_driver(body)


def test_driver_repairs_drift_on_the_periodic_pass() -> None:
    async def body(h: Harness, r: MemberReconciler) -> None:
        h.members.append(gossip("c1"))
        await h.until(lambda: h.serf("c1") == Status.PASSING, "the first pass")
        await h.server.real.apply(DeregisterCommand(node="c1", check_id=SERF_CHECK_ID))  # no member event
        await h.clock.advance(59.0)
        assert h.serf("c1") is None
        await h.clock.advance(1.0)
        await h.until(lambda: h.serf("c1") == Status.PASSING, "the periodic pass")

    run_driver(body, reap_grace=0.0)  # (a pass at the end of the grace would repair it sooner)


def test_driver_does_nothing_unless_leader() -> None:
    async def body(h: Harness, r: MemberReconciler) -> None:
        h.server.leader = False
        await h.clock.settle()
        h.set(gossip("c1"), "join")
        await h.clock.advance(5.0)
        assert r.stats["passes"] == 0 and h.server.store.node_row("c1") is None
        h.server.leader = True  # elected: a full pass at the next poll
        await h.clock.advance(0.5)
        await h.until(lambda: h.serf("c1") == Status.PASSING, "the new leader's pass")

    run_driver(body)


def test_driver_retries_a_failed_pass_soon() -> None:
    async def body(h: Harness, r: MemberReconciler) -> None:
        await h.until(lambda: r.stats["failed"] == 1, "the failed first pass")
        assert h.serf("leader") is None
        await h.clock.advance(RETRY_MIN)
        await h.until(lambda: h.serf("leader") == Status.PASSING, "the retry")
        assert r.stats["passes"] == 2

    run_driver(body, fail_first=1)


def test_driver_follows_a_failed_event_pass_with_a_full_one() -> None:
    async def body(h: Harness, r: MemberReconciler) -> None:
        await h.until(lambda: h.serf("leader") == Status.PASSING, "the first pass")
        h.server.fail = 1
        h.members.append(gossip("c1"))
        h.set(gossip("c1"), "join")
        await h.clock.advance(COALESCE)
        await h.until(lambda: r.stats["failed"] == 1, "the failed event pass")
        assert h.serf("c1") is None
        await h.clock.advance(RETRY_MIN)
        await h.until(lambda: h.serf("c1") == Status.PASSING, "the full pass after it")
        assert r.stats["full"] == 2

    run_driver(body, reap_grace=0.0)


def test_driver_reaps_only_after_the_grace_period() -> None:
    async def body(h: Harness, r: MemberReconciler) -> None:
        await h.server.real.apply(RegisterCommand(Node("old", "10.0.0.7"), checks=[serf_check("old", Status.PASSING)]))
        await h.until(lambda: h.serf("leader") == Status.PASSING, "the first pass")
        assert h.server.store.node_row("old") is not None  # a fresh leader's gossip view may be partial
        await h.clock.advance(10.0)
        await h.until(lambda: h.server.store.node_row("old") is None, "the reap after the grace")
        h.set(gossip("c1"), "join")
        await h.clock.advance(COALESCE)
        await h.until(lambda: h.serf("c1") == Status.PASSING, "c1 registered")
        h.remove("c1")  # pruned / reaped from gossip
        await h.clock.advance(COALESCE)
        await h.until(lambda: h.server.store.node_row("c1") is None, "c1 reaped")

    run_driver(body, reap_grace=10.0)


def test_driver_defaults_its_node_to_the_raft_id_and_its_datacenter_to_its_own_member() -> None:
    async def scenario() -> None:
        clock = FakeClock(start=0.0)
        real = CatalogServer("127.0.0.1:0", settings=ClusterSettings(server_id="leader", address="127.0.0.1:0"))
        h = Harness(clock, Leadership(real))
        h.members = []  # gossip not started yet
        reconciler = MemberReconciler(real, lambda: list(h.members), h.subscribe, clock=clock, reap_grace=0.0)
        tasks = [asyncio.create_task(real.run()), asyncio.create_task(reconciler.run())]
        try:
            await h.until(lambda: reconciler.stats["passes"] == 1, "the first pass")
            assert real.store.nodes()[1] == []  # no own member: no datacenter, nothing planned
            leader = dataclasses.replace(gossip("leader", role="consul"), tags={**gossip("leader").tags, "dc": "dc7"})
            far = dataclasses.replace(gossip("c1"), tags={**gossip("c1").tags, "dc": "dc7"})
            h.set(leader, "join")
            h.set(far, "join")
            await clock.advance(COALESCE)
            await h.until(lambda: h.serf("c1") == Status.PASSING and h.serf("leader") == Status.PASSING, "dc7")
            h.set(dataclasses.replace(leader, state=MemberState.LEFT), "leave")  # the leader itself leaves
            await clock.advance(COALESCE)
            await h.until(lambda: reconciler.stats["passes"] == 3, "the leave pass")
            assert real.store.node_row("leader") is not None  # a follower deregisters it, never itself
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_a_late_registration_of_a_departed_node_is_removed_again() -> None:
    """A registration the leaving agent had in flight lands after the leader deregistered it: the
    full pass LEFT_RECHECK seconds after the deregistration removes it again."""
    async def body(h: Harness, r: MemberReconciler) -> None:
        h.members.append(gossip("c1"))
        await h.until(lambda: h.serf("c1") == Status.PASSING, "the first pass")
        h.set(gossip("c1", MemberState.LEFT), "leave")
        await h.clock.advance(COALESCE)
        await h.until(lambda: h.server.store.node_row("c1") is None, "the leave")
        late = RegisterCommand(node=Node(node="c1", address="10.0.0.9"),
                               checks=[HealthCheck(node="c1", check_id=SERF_CHECK_ID, name="Serf Health Status",
                                                   status=Status.PASSING)])
        await h.server.real.apply(late)  # the departed agent's write, landing late (no member event)
        await h.clock.advance(LEFT_RECHECK - 1.0)
        assert h.server.store.node_row("c1") is not None
        await h.clock.advance(1.0)
        await h.until(lambda: h.server.store.node_row("c1") is None, "the recheck")

    run_driver(body, reap_grace=0.0)
