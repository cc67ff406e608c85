"""Session TTL timers, lock-delay and tombstone reaping on the leader's clock (layer 3).

Contract:
- `SessionTimers` and `LockDelays` are pure (every method takes `now`, seconds on a monotonic
  clock): a TTL session is invalidated between TTL and 2xTTL after its last renew (Consul arms
  `TTL x SESSION_TTL_MULTIPLIER`); timers are (re)armed from scratch for every TTL session the
  driver sees, on create, on renew and when the driver starts (a new leader).
- `SessionDriver(server, clock=time.monotonic)`: `run()` works only while this server is the Raft
  leader (checked every `LEADER_POLL` s, as the member reconciler does): on becoming leader it
  starts with empty timers, so every TTL is armed from scratch (Consul's leader), destroys
  expired sessions by proposing `SessionDestroyCommand` (never deciding inside the FSM) and reaps
  tombstones older than `TOMBSTONE_TTL` (granularity `REAP_GRANULARITY`); it sleeps until the next
  deadline, a change of the sessions table or the next leadership check. Renewals must reach the
  leader's driver (`http/session.py` forwards them from followers). `renew(id)` re-arms a timer
  and returns the session (None when unknown). `lock_delayed(key)` is True while a key released
  by an invalidation is under its session's LockDelay (the FSM reports those keys through `fsm.on_lock_delay`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from agent.catalog.commands import SessionDestroyCommand, TombstoneReapCommand
from agent.catalog.sessions import SESSIONS, Session
from agent.errors import WaypostError
from agent.server import CatalogServer
from checks.definition import DurationError, parse_duration

SESSION_TTL_MULTIPLIER = 2
SESSION_TTL_MIN = 10.0
SESSION_TTL_MAX = 86_400.0
MAX_LOCK_DELAY = 60.0
TOMBSTONE_TTL = 15 * 60.0
REAP_GRANULARITY = 30.0
LEADER_POLL = 0.5  # how soon a new leader takes over the timers (agent.reconcile_driver polls the same way)
log = logging.getLogger("waypost.sessions")


def ttl_seconds(ttl: str) -> float:
    """Seconds of a session TTL string ("" → 0, no TTL); ValueError for a bad one."""
    if not ttl:
        return 0.0
    try:
        return parse_duration(ttl)
    except DurationError as exc:
        raise ValueError(str(exc)) from exc


class SessionTimers:
    def __init__(self, multiplier: int = SESSION_TTL_MULTIPLIER) -> None:
        self._multiplier = multiplier
        self._deadlines: dict[str, float] = {}

    def sync(self, sessions: Iterable[Session], now: float) -> None:
        """Arm timers for TTL sessions not yet armed; forget sessions that are gone."""
        seen = set()
        for row in sessions:
            ttl = ttl_seconds(row.ttl)
            if ttl <= 0:
                continue
            seen.add(row.id)
            self._deadlines.setdefault(row.id, now + ttl * self._multiplier)
        for sid in [s for s in self._deadlines if s not in seen]:
            del self._deadlines[sid]

    def renew(self, row: Session, now: float) -> None:
        ttl = ttl_seconds(row.ttl)
        if ttl > 0:
            self._deadlines[row.id] = now + ttl * self._multiplier

    def due(self, now: float) -> list[str]:
        return sorted(sid for sid, at in self._deadlines.items() if at <= now)

    def forget(self, session_id: str) -> None:
        self._deadlines.pop(session_id, None)

    def next_deadline(self) -> float | None:
        return min(self._deadlines.values(), default=None)

    def __len__(self) -> int:
        return len(self._deadlines)


class LockDelays:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def add(self, key: str, delay_ns: int, now: float) -> None:
        delay = min(delay_ns / 1e9, MAX_LOCK_DELAY)
        if delay > 0:
            self._until[key] = max(self._until.get(key, 0.0), now + delay)

    def blocked(self, key: str, now: float) -> bool:
        until = self._until.get(key)
        if until is None:
            return False
        if until <= now:
            del self._until[key]
            return False
        return True


class SessionDriver:
    def __init__(self, server: CatalogServer, clock: Callable[[], float] = time.monotonic,
                 *, tombstone_ttl: float = TOMBSTONE_TTL) -> None:
        self._server = server
        self._clock = clock
        self._tombstone_ttl = tombstone_ttl
        self.timers = SessionTimers()
        self.delays = LockDelays()
        self._samples: deque[tuple[float, int]] = deque()  # (time, applied index) for reaping
        self._last_sample = -REAP_GRANULARITY
        self._reaped = 0
        self._leading = False
        self._changed = asyncio.Event()
        server.fsm.on_lock_delay = lambda key, ns: self.delays.add(key, ns, self._clock())

    def lock_delayed(self, key: str) -> bool:
        return self.delays.blocked(key, self._clock())

    def renew(self, session_id: str) -> Session | None:
        row = self._server.fsm.sessions.get(session_id)
        if row is not None:
            self.timers.renew(row, self._clock())
            self._changed.set()
        return row

    async def run(self) -> None:
        while True:
            now = self._clock()
            if self._server.raft.is_leader():
                if not self._leading:
                    self._leading = True
                    self.timers = SessionTimers()  # a new leader arms every TTL from scratch
                self.timers.sync(self._server.fsm.sessions.all()[1], now)
                for session_id in self.timers.due(now):
                    self.timers.forget(session_id)
                    log.info("session %s expired (TTL not renewed)", session_id)
                    await self._propose(SessionDestroyCommand(session_id))
                await self._maybe_reap(now)
            else:
                self._leading = False
            await self._sleep()

    async def _propose(self, command: object) -> None:
        try:
            await self._server.apply(command)  # type: ignore[arg-type]
        except WaypostError as exc:
            log.warning("could not apply %s: %s", type(command).__name__, exc)

    async def _maybe_reap(self, now: float) -> None:
        if now - self._last_sample < REAP_GRANULARITY:
            return
        self._last_sample = now
        self._samples.append((now, self._server.fsm.last_index))
        up_to = 0
        while self._samples and self._samples[0][0] <= now - self._tombstone_ttl:
            up_to = self._samples.popleft()[1]
        if up_to > self._reaped and self._server.fsm.kv.tombstone_count:
            self._reaped = up_to
            await self._propose(TombstoneReapCommand(up_to))

    async def _sleep(self) -> None:
        now = self._clock()
        deadline = self.timers.next_deadline()
        timeout = LEADER_POLL if deadline is None else min(LEADER_POLL, max(0.0, deadline - now))
        self._changed.clear()
        handle = self._server.fsm.sessions.watch([SESSIONS], lambda _i: self._changed.set())
        try:
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
        finally:
            handle.cancel()
