"""Anti-entropy: keeps the catalog's view of this node equal to the local state (layer 3).

Contract: `trigger()` asks for a sync soon (after any local change); `sync_now()` runs one
sync (serialised: one at a time) and returns once the catalog matches or raises the catalog's
error; `run()` syncs on triggers and every `full_sync_interval` (+ jitter, Consul's 1 min rule),
retrying failures with capped exponential backoff. Only *when* is decided here; *what* is
`LocalState.plan_sync`.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Protocol

from agent.catalog.commands import Command
from agent.local.state import LocalState, RemoteNode

log = logging.getLogger("waypost.antientropy")


class CatalogAccess(Protocol):
    async def read_node(self, node: str) -> RemoteNode: ...
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

    async def sync_now(self) -> None:
        async with self._lock:
            version = self._local.version
            remote = await self._catalog.read_node(self._local.node.node)
            self._local.adopt_tag_overrides(remote)
            for command in self._local.plan_sync(remote):
                await self._catalog.apply(command)
            self.synced_version = version

    async def run(self) -> None:
        backoff = 0.0
        while True:
            timeout = backoff or self._interval + self._rng.uniform(0, self._interval / 16)
            try:
                await asyncio.wait_for(self._triggered.wait(), timeout)
            except TimeoutError:
                pass
            self._triggered.clear()
            try:
                await self.sync_now()
                backoff = 0.0
            except Exception as exc:  # any failure is retried; the catalog may be briefly unreachable
                backoff = min(max(backoff * 2, 0.5), 30.0)
                log.warning("anti-entropy sync failed (retry in %.1fs): %s", backoff, exc)
