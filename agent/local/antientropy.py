"""Anti-entropy: keeps the catalog's view of this node equal to the local state (layer 3).

Contract: `trigger()` asks for a sync soon (after any local change); `sync_now()` syncs what
changed locally (`sync_now(full=True)`: everything, repairing drift in the catalog), serialised
one at a time, and returns once the catalog matches or raises the catalog's error (the dirty
items stay dirty for the next try); `run()` does partial syncs on triggers and a full sync every
`full_sync_interval` (+ jitter, Consul's 1 min rule), retrying failures with capped exponential
backoff. Only *when* is decided here; *what* is
`LocalState.plan_sync`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

from agent.catalog.commands import Command
from agent.local.state import LocalState, RemoteNode, SyncScope

log = logging.getLogger("waypost.antientropy")


class CatalogAccess(Protocol):
    async def read_node(self, node: str, scope: SyncScope | None = None) -> RemoteNode: ...
    async def apply(self, command: Command) -> object: ...


class AntiEntropy:
    def __init__(self, local: LocalState, catalog: CatalogAccess, *, full_sync_interval: float = 60.0,
                 rng: random.Random | None = None) -> None:
        self._local = local
        self._catalog = catalog
        self._interval = full_sync_interval
        self._rng = rng or random.Random()
        self._triggered = asyncio.Event()
        self._lock = asyncio.Lock()
        self.synced_version = -1

    def trigger(self) -> None:
        self._triggered.set()

    async def sync_now(self, *, full: bool = False) -> None:
        async with self._lock:
            version = self._local.version
            dirty = self._local.take_dirty()
            scope = None if full else dirty
            try:
                remote = await self._catalog.read_node(self._local.node.node, scope)
                self._local.adopt_tag_overrides(remote)
                for command in self._local.plan_sync(remote, scope):
                    await self._catalog.apply(command)
            except BaseException:
                self._local.mark_dirty(dirty)
                raise
            self.synced_version = version

    async def run(self) -> None:
        backoff = 0.0
        while True:
            timeout = backoff or self._interval + self._rng.uniform(0, self._interval / 16)
            full = False
            try:
                await asyncio.wait_for(self._triggered.wait(), timeout)
            except TimeoutError:
                full = not backoff
            self._triggered.clear()
            try:
                await self.sync_now(full=full)
                backoff = 0.0
            except Exception as exc:  # any failure is retried; the catalog may be briefly unreachable
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.warning("anti-entropy sync failed (retry in %.1fs): %s", backoff, exc)
