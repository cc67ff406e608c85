"""Anti-entropy: keeps the catalog's view of this node equal to the local state (layer 3).

Contract (Consul's agent/ae StateSyncer; only *when* is decided here, *what* is
`LocalState.plan_sync`):
- `trigger()` asks for a partial sync soon (after any local change); `resync()` asks for a full
  sync after a random stagger in [0, `server_up_interval` x scale) (a server became reachable, or
  we joined); `sync_now()` syncs what changed locally (`sync_now(full=True)`: everything,
  repairing drift in the catalog, and adopting catalog tags of `enable_tag_override` services),
  serialised one at a time. It returns once the catalog matches or raises the catalog's error;
  the dirty items then stay dirty for the next try. A command the catalog rejects (`BadRequest`)
  is logged and skipped so the others still land (Consul #7020); the next full sync retries it.
- `run()` does partial syncs on triggers and a full sync every `full_sync_interval` plus a random
  stagger in [0, interval x scale) where scale = `scale_factor(cluster_size())` (1 up to 128
  nodes, then +1 per doubling). A failed sync is retried (the same kind: a failed full sync is
  retried as a full one) after a capped exponential backoff (`BACKOFF_MIN` doubling to
  `BACKOFF_MAX`), during which triggers wait but `resync()` is honoured.
- `await pause()` stops all syncing for good and waits for a sync in progress (Consul pauses its
  syncer on leave): a leaving agent must not re-register the node the leader is deregistering;
  `sync_now` then returns at once.
- Time comes from an injected `checks.clock.Clock` (default: the loop's), randomness from an
  injected `random.Random`: tests drive `run()` on a `FakeClock` without sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
from collections.abc import Callable
from typing import Protocol

from agent.catalog.commands import Command
from agent.errors import BadRequest
from agent.local.state import LocalState, RemoteNode, SyncScope
from checks.clock import Clock, LoopClock

log = logging.getLogger("waypost.antientropy")

AE_INTERVAL = 60.0          # Consul's ae_interval: a full sync every minute (not user-settable)
SERVER_UP_INTERVAL = 3.0    # Consul's serverUpIntv: resync() waits a random [0, 3 s x scale)
SCALE_THRESHOLD = 128       # Consul's scaleThreshold: above this many nodes syncs spread out
BACKOFF_MIN = 0.5           # first retry after a failed sync (a brief leader election passes)
BACKOFF_MAX = 30.0          # retries never wait longer (Consul waits 15 s + stagger)


def scale_factor(nodes: int) -> int:
    """Consul's aeScale: 1 up to 128 nodes, then ceil(log2(n) - log2(128)) + 1 (129 and 256 → 2,
    1000 → 4, 10000 → 8): the sync period doubles every time the cluster doubles."""
    if nodes <= SCALE_THRESHOLD:
        return 1
    return math.ceil(math.log2(nodes) - math.log2(SCALE_THRESHOLD)) + 1


def stagger(seconds: float, nodes: int, rng: random.Random) -> float:
    """Consul's RandomStagger(scale x seconds): uniform in [0, scale_factor(nodes) x seconds)."""
    return rng.uniform(0.0, scale_factor(nodes) * seconds)


def next_backoff(previous: float) -> float:
    """The wait before the next retry, given the previous one (0 = first failure)."""
    return min(max(previous * 2, BACKOFF_MIN), BACKOFF_MAX)


async def wait_event(event: asyncio.Event, clock: Clock, deadline: float) -> bool:
    """Wait until `event` is set or `clock` reaches `deadline`; True when the event is set."""
    if event.is_set():
        return True
    if deadline <= clock.now():
        return False
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep_until(deadline))
    try:
        await asyncio.wait((waiter, sleeper), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (waiter, sleeper):
            task.cancel()
        await asyncio.gather(waiter, sleeper, return_exceptions=True)
    return event.is_set()


class CatalogAccess(Protocol):
    async def read_node(self, node: str, scope: SyncScope | None = None) -> RemoteNode: ...
    async def apply(self, command: Command) -> object: ...


class AntiEntropy:
    def __init__(self, local: LocalState, catalog: CatalogAccess, *, full_sync_interval: float = AE_INTERVAL,
                 rng: random.Random | None = None, cluster_size: Callable[[], int] = lambda: 1,
                 clock: Clock | None = None, server_up_interval: float = SERVER_UP_INTERVAL) -> None:
        self._local = local
        self._catalog = catalog
        self._interval = full_sync_interval
        self._rng = rng or random.Random()
        self._cluster_size = cluster_size
        self._clock: Clock = clock or LoopClock()
        self._server_up = server_up_interval
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._triggered = False
        self._resync_at: float | None = None
        self._next_full: float | None = None   # set when run() starts
        self._retry_at: float | None = None    # backing off after a failure until then
        self._retry_full = False
        self._backoff = 0.0
        self.synced_version = -1
        self.paused = False
        self.stats = {"full": 0, "partial": 0, "failed": 0, "rejected": 0}

    # --- requests ---
    def trigger(self) -> None:
        self._triggered = True
        self._wake.set()

    def resync(self) -> None:
        at = self._clock.now() + stagger(self._server_up, self._cluster_size(), self._rng)
        self._resync_at = at if self._resync_at is None else min(self._resync_at, at)
        self._wake.set()

    def full_sync_delay(self) -> float:
        """Seconds until the next periodic full sync: interval + stagger(interval) (Consul)."""
        return self._interval + stagger(self._interval, self._cluster_size(), self._rng)

    @property
    def backoff(self) -> float:
        """The current retry wait (0 when the last sync succeeded)."""
        return self._backoff

    async def pause(self) -> None:
        """Stop syncing for good; returns once a sync in progress has finished."""
        self.paused = True
        self._wake.set()
        async with self._lock:
            pass

    # --- syncing ---
    async def sync_now(self, *, full: bool = False) -> None:
        async with self._lock:
            if self.paused:
                return
            version = self._local.version
            dirty = self._local.take_dirty()
            if not full and not (dirty.node or dirty.services or dirty.checks):
                self.synced_version = version
                return  # nothing changed: no round trip to the catalog
            scope = None if full else dirty
            try:
                remote = await self._catalog.read_node(self._local.node.node, scope)
                if full:  # Consul adopts catalog tags in a full sync only, never over a fresh local change
                    self._local.adopt_tag_overrides(remote, keep=dirty.services)
                for command in self._local.plan_sync(remote, scope):
                    try:
                        await self._catalog.apply(command)
                    except BadRequest as exc:  # this item only; the next full sync tries it again
                        self.stats["rejected"] += 1
                        log.warning("anti-entropy: the catalog rejected %s: %s", type(command).__name__, exc)
            except BaseException:
                self._local.mark_dirty(dirty)
                raise
            self.stats["full" if full else "partial"] += 1
            self.synced_version = version

    async def run(self) -> None:
        self._next_full = self._clock.now() + self.full_sync_delay()
        while not self.paused:
            now = self._clock.now()
            resync_due = self._resync_at is not None and now >= self._resync_at
            full_due = now >= self._next_full
            if self._retry_at is not None:  # backing off: only the retry time or a resync count
                go = resync_due or now >= self._retry_at
                full = self._retry_full or resync_due or full_due
                deadline = min(self._retry_at, math.inf if self._resync_at is None else self._resync_at)
            else:
                full = resync_due or full_due
                go = full or self._triggered
                deadline = min(self._next_full, math.inf if self._resync_at is None else self._resync_at)
            if go:
                await self._attempt(full)
                continue
            self._wake.clear()
            await wait_event(self._wake, self._clock, deadline)

    async def _attempt(self, full: bool) -> None:
        self._triggered = False  # this sync takes whatever is dirty now
        if full:
            self._resync_at = None
        try:
            await self.sync_now(full=full)
        except Exception as exc:  # any failure is retried; the catalog may be briefly unreachable
            self._backoff = next_backoff(self._backoff)
            self._retry_at = self._clock.now() + self._backoff
            self._retry_full = self._retry_full or full
            self.stats["failed"] += 1
            log.warning("anti-entropy %s sync failed (retry in %.1fs): %s",
                        "full" if full else "partial", self._backoff, exc)
            return
        self._backoff = 0.0
        self._retry_at = None
        self._retry_full = False
        if full:
            self._next_full = self._clock.now() + self.full_sync_delay()
