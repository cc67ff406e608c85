"""AntiEntropy scheduling on a fake clock (no sleeps): scaling, stagger, resync, backoff, retries."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.errors import BadRequest, NoLeader
from agent.local.antientropy import (
    AE_INTERVAL,
    BACKOFF_MAX,
    AntiEntropy,
    next_backoff,
    scale_factor,
    stagger,
)
from agent.local.state import LocalState, RemoteNode, SyncScope
from agent.types import HealthCheck, Node, NodeService, ServiceDefinition
from checks.clock import FakeClock
from checks.definition import Status
from tests.unit.store_fixtures import StoreCatalog

NODE = Node(node="n1", address="10.0.0.1")


class FakeCatalog(StoreCatalog):
    """CatalogAccess over a real store that fails the next `fail` calls; records when it is read."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.fail = 0
        self.reject: set[str] = set()  # service ids whose registration the catalog rejects
        self.reads: list[tuple[float, bool]] = []  # (time, full)
        self.index = 0

    async def read_node(self, node: str, scope: SyncScope | None = None) -> RemoteNode:
        self.reads.append((self.clock.now(), scope is None))
        if self.fail:
            self.fail -= 1
            raise NoLeader()
        return self.remote(scope, node)

    async def apply(self, command: Command) -> object:
        if isinstance(command, RegisterCommand) and command.service and command.service.id in self.reject:
            raise BadRequest(f"rejected {command.service.id}")
        self.apply_commands(command)
        return None


def web(sid: str = "web-1") -> ServiceDefinition:
    return ServiceDefinition(NodeService(id=sid, service="web", port=80))


def run_scenario(body: Callable[[FakeClock, FakeCatalog, LocalState, AntiEntropy], Awaitable[None]],
                 *, seed: int = 7, cluster_size: int = 1) -> None:
    async def scenario() -> None:
        clock = FakeClock(start=0.0)
        catalog = FakeCatalog(clock)
        local = LocalState(NODE)
        sync = AntiEntropy(local, catalog, rng=random.Random(seed), clock=clock,
                           cluster_size=lambda: cluster_size)
        task = asyncio.create_task(sync.run())
        try:
            await clock.settle()
            await body(clock, catalog, local, sync)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())


@pytest.mark.parametrize("nodes, factor", [(0, 1), (1, 1), (128, 1), (129, 2), (256, 2), (257, 3), (512, 3),
                                           (513, 4), (1000, 4), (8192, 7), (8193, 8), (10000, 8)])
def test_scale_factor_is_consuls(nodes: int, factor: int) -> None:
    # Consul's comment says "at 8192 nodes the factor is 8"; its code (which we follow) gives 7
    assert scale_factor(nodes) == factor


def test_stagger_stays_within_the_scaled_window() -> None:
    rng = random.Random(1)
    for nodes, factor in ((1, 1), (256, 2), (1000, 4), (10000, 8)):
        samples = [stagger(60.0, nodes, rng) for _ in range(500)]
        assert all(0.0 <= s < 60.0 * factor for s in samples)
        assert max(samples) > 60.0 * factor * 0.9  # it does spread over the whole window


def test_backoff_doubles_up_to_the_cap() -> None:
    waits, previous = [], 0.0
    for _ in range(10):
        previous = next_backoff(previous)
        waits.append(previous)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0, 30.0]
    assert max(waits) == BACKOFF_MAX


@pytest.mark.parametrize("cluster_size", [1, 1000])
def test_periodic_full_sync_interval_scales_with_cluster_size(cluster_size: int) -> None:
    seed = 11
    expected_rng = random.Random(seed)  # the same draws run() makes
    first = AE_INTERVAL + stagger(AE_INTERVAL, cluster_size, expected_rng)
    second = first + AE_INTERVAL + stagger(AE_INTERVAL, cluster_size, expected_rng)

    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        await clock.advance(first - 0.01)
        assert catalog.reads == []
        await clock.advance(0.02)
        assert catalog.reads == [(pytest.approx(first), True)]
        await clock.advance(second - first)
        assert [full for _, full in catalog.reads] == [True, True]
        assert catalog.reads[1][0] == pytest.approx(second)
        assert AE_INTERVAL <= first < AE_INTERVAL * (1 + scale_factor(cluster_size))

    run_scenario(body, seed=seed, cluster_size=cluster_size)


def test_trigger_syncs_only_what_changed_at_once() -> None:
    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        local.add_service(web())
        sync.trigger()
        await clock.settle()
        assert catalog.reads == [(0.0, False)]
        assert catalog.store.node_service("n1", "web-1") is not None
        sync.trigger()  # nothing dirty: no round trip at all
        await clock.settle()
        assert len(catalog.reads) == 1 and sync.stats["partial"] == 1

    run_scenario(body)


def test_failures_back_off_exponentially_and_keep_items_dirty() -> None:
    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        catalog.fail = 4
        local.add_service(web())
        sync.trigger()
        await clock.advance(20.0)
        times = [t for t, _ in catalog.reads]
        # attempts at 0, then after 0.5, 1, 2, 4 s of backoff: the fifth succeeds
        assert times == pytest.approx([0.0, 0.5, 1.5, 3.5, 7.5])
        assert all(not full for _, full in catalog.reads)  # a failed partial sync is retried partially
        assert sync.stats["failed"] == 4 and sync.backoff == 0.0
        assert catalog.store.node_service("n1", "web-1") is not None  # the dirty item survived 4 failures
        assert catalog.store.node_row("n1") is not None

    run_scenario(body)


def test_triggers_wait_for_the_backoff_but_are_not_lost() -> None:
    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        catalog.fail = 3
        local.add_service(web())
        sync.trigger()
        await clock.advance(0.1)  # failed at 0; retry at 0.5
        local.add_service(web("web-2"))
        sync.trigger()
        await clock.settle()
        assert len(catalog.reads) == 1  # still backing off
        await clock.advance(10.0)
        assert catalog.store.node_service("n1", "web-2") is not None
        assert catalog.store.node_service("n1", "web-1") is not None

    run_scenario(body)


def test_a_failed_full_sync_is_retried_as_a_full_sync() -> None:
    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        catalog.fail = 2
        sync.resync()
        await clock.advance(10.0)
        assert [full for _, full in catalog.reads] == [True, True, True]
        assert catalog.store.node_row("n1") is not None

    run_scenario(body)


@pytest.mark.parametrize("cluster_size", [1, 300])
def test_resync_runs_a_full_sync_within_the_staggered_window(cluster_size: int) -> None:
    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        local.add_service(web())
        await sync.sync_now()
        await catalog.apply(DeregisterCommand(node="n1", service_id="web-1"))  # lost behind our back
        sync.resync()
        await clock.advance(3.0 * scale_factor(cluster_size))
        assert [full for _, full in catalog.reads] == [False, True]
        assert catalog.store.node_service("n1", "web-1") is not None  # the full sync brought it back
        assert catalog.reads[1][0] < 3.0 * scale_factor(cluster_size)

    run_scenario(body, cluster_size=cluster_size)


def test_resync_cuts_a_backoff_short() -> None:
    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        catalog.fail = 6
        local.add_service(web())
        sync.trigger()
        await clock.advance(7.6)  # failures at 0, 0.5, 1.5, 3.5, 7.5: next retry at 15.5
        assert len(catalog.reads) == 5 and sync.backoff == 8.0
        catalog.fail = 0
        sync.resync()  # a server is back: do not wait out the backoff
        await clock.advance(3.0)
        assert len(catalog.reads) == 6 and catalog.reads[-1][1] is True
        assert catalog.store.node_service("n1", "web-1") is not None

    run_scenario(body)


def test_a_rejected_item_does_not_block_the_others() -> None:
    async def body(clock: FakeClock, catalog: FakeCatalog, local: LocalState, sync: AntiEntropy) -> None:
        catalog.reject = {"bad"}
        for sid in ("a", "bad", "z"):
            local.add_service(web(sid))
        local.add_check(HealthCheck(node="n1", check_id="mem", name="mem", status=Status.PASSING), None)
        sync.trigger()
        await clock.settle()
        assert catalog.store.node_service("n1", "a") and catalog.store.node_service("n1", "z")
        assert catalog.store.check("n1", "mem") is not None
        assert sync.stats == {"full": 0, "partial": 1, "failed": 0, "rejected": 1}
        catalog.reject = set()
        await clock.advance(AE_INTERVAL * 2)  # the next full sync lands it
        assert catalog.store.node_service("n1", "bad") is not None

    run_scenario(body)


async def test_paused_anti_entropy_never_writes_again() -> None:
    """A leaving agent pauses its syncer: the leader's deregistration of the node must stick."""
    clock = FakeClock()
    catalog = FakeCatalog(clock)
    local = LocalState(NODE)
    local.add_service(ServiceDefinition(NodeService(id="web-1", service="web", port=80)))
    sync = AntiEntropy(local, catalog, clock=clock)
    await sync.sync_now(full=True)
    written = catalog.index
    await sync.pause()
    local.add_service(ServiceDefinition(NodeService(id="web-2", service="web", port=81)))
    await sync.sync_now(full=True)
    await asyncio.wait_for(sync.run(), 1)  # returns at once: nothing more to do, ever
    assert catalog.index == written
