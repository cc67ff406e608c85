"""Clocks for the check runner (layer 2): the real one and a fake one for tests.

Contract:
- `Clock.now()` is monotonic seconds; `Clock.wall()` is unix time (only for persisted TTL
  expiry); `await Clock.sleep_until(t)` returns once `now() >= t`.
- `LoopClock` uses the running loop's time and `asyncio.sleep`.
- `FakeClock` never moves by itself: `await fake.advance(dt)` steps through every pending
  deadline in order, wakes the sleepers and lets the woken tasks run before moving on.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...

    def wall(self) -> float: ...

    async def sleep_until(self, deadline: float) -> None: ...


class LoopClock:
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


class FakeClock:
    """A manual clock; `wall()` is `wall_offset + now()`."""

    def __init__(self, start: float = 1000.0, wall_offset: float = 1_700_000_000.0, settle_rounds: int = 50):
        self._now = start
        self.wall_offset = wall_offset
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._settle_rounds = settle_rounds

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self.wall_offset + self._now

    async def sleep_until(self, deadline: float) -> None:
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (deadline, next(self._seq), future))
        await future

    async def settle(self) -> None:
        """Let every runnable task run until the loop is quiet (bounded number of rounds)."""
        for _ in range(self._settle_rounds):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        target = self._now + seconds
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            if not future.done():
                future.set_result(None)
            await self.settle()
        self._now = target
        await self.settle()

    def pending(self) -> int:
        return sum(1 for _, _, f in self._sleepers if not f.done())
