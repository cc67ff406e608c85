"""RaftNode: the asyncio driver of one `RaftCore` (layer 3).

Contract:
- One coroutine (`run`) owns the core. Every input — ticks, received messages, proposals, read
  requests, membership and transfer requests — is queued and handed to the core only between two
  Ready cycles, so nothing touches the core between `ready()` and `advance()`. Inputs that arrive
  while a Ready is being fsynced are batched into the next Ready (group commit: one fsync and one
  AppendEntries per follower for all of them).
- A Ready is handled in the order the core requires: persist (persist.py: fsync in a thread, or
  on the loop for a lone small entry; commit-only hard states skip the fsync; a leader's appends
  leave before its own fsync) → send →
  restore a received snapshot →
  apply committed entries to the FSM → resolve read states → `advance`. After `snapshot_every`
  applied entries — and no sooner than a random time in [`snapshot_interval`, 2×`snapshot_interval`)
  after the last snapshot, as Consul's raft_snapshot_interval — the FSM is snapshotted and the log
  truncated, keeping the last `trailing_logs`
  entries in memory (a follower slightly behind catches up from the log instead of a snapshot).
- `propose(data)` resolves with the FSM's result when the entry is applied here, or raises the
  FSM's error; `NotLeader` when this server is not the leader; `LeadershipLost` (waiters.py) when another
  entry took its index. `register_waiter(index, term, cb)` lets a follower wait for the result of
  an entry the leader appended on its behalf (forwarded writes): results of the last
  `RESULT_HISTORY` entries are kept in case the entry was applied before the waiter arrived.
- `read_index()` returns a linearizable read point once this server has applied it (`?consistent`);
  `lease_ok()` says whether a default read may be served locally (leader with a fresh lease).
- `drain_now()` runs inputs and Ready cycles synchronously (inline persistence): for a single
  server's bootstrap writes before the event loop serves requests.
- A leader's new commit index rides its next AppendEntries; one that no AppendEntries carried
  within `COMMIT_ANNOUNCE_DELAY` goes out by heartbeat (see `RaftCore.announce_commit`).
- Timing: one tick is `tick_seconds` (the heartbeat interval); the core's election/lease ticks are
  counted in ticks, so `raft_multiplier` scales them all by scaling the tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from typing import Protocol

from agent.raft.core import CoreConfig, RaftCore, Ready, Role
from agent.raft.errors import NotLeader, RaftError
from agent.raft.messages import (
    AppendEntries,
    EntryKind,
    Heartbeat,
    InstallSnapshot,
    LogEntry,
    Membership,
    Message,
)
from agent.raft.persist import RaftStorage, ReadyPersister
from agent.raft.waiters import AppliedIndexWaiters, ApplyWaiters, Waiter

SNAPSHOT_EVERY = 10_000  # applied entries between automatic snapshots (and log truncation)
TRAILING_LOGS = 0        # entries kept in memory behind a snapshot (the agent passes raft_trailing_logs)
RESULT_HISTORY = 4096    # apply results kept for forwarded writes that finish before their waiter
COMMIT_ANNOUNCE_DELAY = 0.002  # s a new commit index may wait for an AppendEntries to carry it
BASE_TICK_SECONDS = 0.02  # × raft_multiplier (default 5 → 100 ms heartbeat, election 1–2 s)
log = logging.getLogger("waypost.raft")


class StateMachine(Protocol):
    def apply(self, index: int, data: bytes) -> object: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


class RaftNode:
    def __init__(self, server_id: str, fsm: StateMachine, storage: RaftStorage, *,
                 tick_seconds: float = BASE_TICK_SECONDS * 5, config: CoreConfig | None = None,
                 send: Callable[[Message], None] | None = None, durable: bool = True,
                 snapshot_every: int = SNAPSHOT_EVERY, trailing_logs: int = TRAILING_LOGS,
                 snapshot_interval: float = 0.0, rng: random.Random | None = None) -> None:
        self.id = server_id
        self.fsm = fsm
        self.storage = storage
        self.tick_seconds = tick_seconds
        self.durable = durable  # False: MemoryStorage, saved inline without a thread
        self.snapshot_every = snapshot_every
        self.trailing_logs = trailing_logs
        self.snapshot_interval = snapshot_interval
        self._config = config or CoreConfig()
        self._rng = rng or random.Random()
        self.send: Callable[[Message], None] = send or (lambda m: None)
        self.core = RaftCore(server_id, storage, self._rng, self._config)
        snap = storage.snapshot()
        if snap is not None:
            fsm.restore(snap.data)
        self._inbox: list[Callable[[], None]] = []
        self._wake = asyncio.Event()
        self._apply_waiters = ApplyWaiters(RESULT_HISTORY)
        self._read_waiters: dict[bytes, asyncio.Future[int]] = {}
        self._applied_waiters = AppliedIndexWaiters()
        self._read_seq = 0
        self._announce_armed = False
        self._last_contact = time.monotonic()
        self._since_snapshot = 0
        self._snapshot_not_before = time.monotonic() + snapshot_interval * self._rng.random()
        # what the FSM holds: the core's `applied` moves as soon as a snapshot message is stepped,
        # before the driver has persisted and restored it, so readers wait on this instead
        self._fsm_applied = self.core.applied
        self._persister = ReadyPersister(storage, durable)
        self.on_commit: Callable[[int, float], None] | None = None  # metrics hook
        self.on_leader_change: Callable[[str], None] | None = None

    # --- state ---
    def is_fresh(self) -> bool:
        return self.core.log.last_index() == 0 and self.core.term == 0

    def bootstrap(self, membership: Membership) -> None:
        """Write the initial membership (a fresh server only) and campaign at once; a restarted
        server that is its own majority campaigns at once too."""
        if not self.is_fresh():
            if self.core.membership.voters == (self.id,) and not self.is_leader():
                self.core.campaign()
                self._wake.set()
            return
        self.core = RaftCore(self.id, self.storage, self._rng, self._config, bootstrap=membership)
        self.core.campaign()
        self._wake.set()

    def request_bootstrap(self, membership: Membership) -> None:
        """`bootstrap` between two Ready cycles (the loop is running)."""
        self._submit(lambda: self.bootstrap(membership))

    def is_leader(self) -> bool:
        return self.core.role is Role.LEADER

    def leader_id(self) -> str:
        return self.core.leader

    def role(self) -> str:
        return self.core.role.value

    def term(self) -> int:
        return self.core.term

    def last_contact_ms(self) -> int:
        if self.is_leader():
            return 0
        return int((time.monotonic() - self._last_contact) * 1000)

    def applied_index(self) -> int:
        return self._fsm_applied

    def commit_index(self) -> int:
        return self.core.committed

    def last_index(self) -> int:
        return self.core.log.last_index()

    def membership(self) -> Membership:
        return self.core.membership

    def lease_ok(self) -> bool:
        """A default read may be served here now: leader with a lease a quorum confirmed (read-only)."""
        return self.core.lease_read_index() is not None

    # --- inputs ---
    def _submit(self, fn: Callable[[], None]) -> None:
        self._inbox.append(fn)
        self._wake.set()

    def step(self, msg: Message) -> None:
        if isinstance(msg, AppendEntries | Heartbeat | InstallSnapshot) and msg.term >= self.core.term:
            self._last_contact = time.monotonic()
        self._submit(lambda: self.core.step(msg))

    def call(self, fn: Callable[[RaftCore], object]) -> asyncio.Future[object]:
        """Run `fn(core)` between Ready cycles (membership, transfer); its result or error."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()

        def run() -> None:
            try:
                result = fn(self.core)
            except Exception as exc:  # the core's refusals travel back to the caller
                if not future.done():
                    future.set_exception(exc)
                return
            if not future.done():
                future.set_result(result)

        self._submit(run)
        return future

    async def propose(self, data: bytes) -> object:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()

        def done(result: object) -> None:
            if future.done():
                return
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

        def run() -> None:
            try:
                index = self.core.propose(data)
            except RaftError as exc:
                done(exc)
                return
            self.register_waiter(index, self.core.term, done)

        self._submit(run)
        return await future

    def propose_forwarded(self, data: bytes, reply: Callable[[int, int, str], None], origin: str = "") -> None:
        """Leader side of a forwarded write from server `origin`: append it and
        `reply(index, term, leader_hint)`; index 0 when this server cannot take it (the hint names
        the leader, if known). `origin` learns of the commit at once."""
        def run() -> None:
            try:
                index = self.core.propose(data, origin)
            except RaftError:
                reply(0, 0, self.core.leader)
                return
            reply(index, self.core.term, self.core.leader)

        self._submit(run)

    def register_waiter(self, index: int, term: int, waiter: Waiter) -> None:
        self._apply_waiters.register(index, term, waiter, self._fsm_applied)

    async def read_index(self) -> int:
        """A linearizable read point, once applied here (raises NotLeader when none is known)."""
        self._read_seq += 1
        context = f"{self.id}/{self._read_seq}".encode()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._read_waiters[context] = future

        def run() -> None:
            try:
                self.core.read_index(context)
            except RaftError as exc:
                self._read_waiters.pop(context, None)
                if not future.done():
                    future.set_exception(exc)

        self._submit(run)
        try:
            index = await future
        finally:
            self._read_waiters.pop(context, None)
        await self.wait_applied(index)
        return index

    async def wait_applied(self, index: int) -> None:
        if self._fsm_applied < index:
            await self._applied_waiters.future(index)

    # --- the loop ---
    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._ticker(), name="raft-tick")
            await self._loop()

    async def _ticker(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += self.tick_seconds
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > self.tick_seconds * 5:
                next_at = loop.time()  # the loop stalled: do not burst ticks to catch up
            self._submit(self.core_tick)

    def core_tick(self) -> None:
        self.core.tick()

    async def _loop(self) -> None:
        while True:
            if not self._inbox and not self.core.has_ready():
                await self._wake.wait()
            self._wake.clear()
            self._run_inbox()
            if self.core.has_ready():
                rd = self.core.ready()
                await self._persist(rd)
                self._after_persist(rd)
                await self._maybe_snapshot()
                if rd.committed:
                    await asyncio.sleep(0)  # writers whose entries were just applied answer before the next cycle
            self._schedule_commit_announcement()

    def _schedule_commit_announcement(self) -> None:
        """A leader's new commit index rides its next AppendEntries; if none leaves within
        `COMMIT_ANNOUNCE_DELAY`, heartbeats carry it (the core's `announce_commit`)."""
        if self._announce_armed or not self.core.commit_unannounced():
            return
        self._announce_armed = True

        def announce() -> None:
            self._announce_armed = False
            self.core.announce_commit()

        asyncio.get_running_loop().call_later(COMMIT_ANNOUNCE_DELAY, self._submit, announce)

    async def _persist(self, rd: Ready) -> None:
        await self._persister.persist(rd, self.core.role is Role.LEADER, self.send, idle=not self._inbox)

    def drain_now(self) -> None:
        """Process queued inputs and Ready cycles synchronously (start-up, single server)."""
        while True:
            self._run_inbox()
            if not self.core.has_ready():
                return
            rd = self.core.ready()
            self.storage.save(rd.hard_state, rd.entries, rd.snapshot)
            self._after_persist(rd)

    def apply_now(self, data: bytes) -> object:
        """Propose and apply synchronously; only for a server that is its own majority."""
        if not self.is_leader():
            self.core.campaign()
            self.drain_now()
        results: list[object] = []
        index = self.core.propose(data)
        self.register_waiter(index, self.core.term, results.append)
        self.drain_now()
        if not results:
            raise NotLeader(self.core.leader)
        if isinstance(results[0], Exception):
            raise results[0]
        return results[0]

    def _run_inbox(self) -> None:
        inbox, self._inbox = self._inbox, []
        for fn in inbox:
            try:
                fn()
            except RaftError as exc:
                log.debug("raft input refused: %s", exc)

    def _after_persist(self, rd: Ready) -> None:
        started = time.perf_counter()
        for m in rd.messages:
            self.send(m)
        if rd.snapshot is not None:
            self.fsm.restore(rd.snapshot.data)
            self._fsm_applied = max(self._fsm_applied, rd.snapshot.index)
            log.info("raft: installed snapshot at index %d (term %d) from the leader", rd.snapshot.index,
                     rd.snapshot.term)
            self._apply_waiters.lost_in_snapshot(rd.snapshot.index)
        for entry in rd.committed:
            self._apply(entry)
        for rs in rd.read_states:
            future = self._read_waiters.get(rs.context)
            if future is not None and not future.done():
                future.set_result(rs.index)
        self.core.advance(rd)
        if rd.soft_state is not None:
            log.info("raft: %s in term %d, leader %s", rd.soft_state.role.value, self.core.term,
                     rd.soft_state.leader or "(none)")
            if self.on_leader_change is not None:
                self.on_leader_change(rd.soft_state.leader)
            if rd.soft_state.role is not Role.LEADER:
                self._fail_reads()
        if rd.committed or rd.snapshot is not None:
            self._applied_waiters.release(self._fsm_applied)
        if rd.committed and self.on_commit is not None:
            self.on_commit(len(rd.committed), time.perf_counter() - started)

    def _apply(self, entry: LogEntry) -> None:
        self._fsm_applied = entry.index
        result: object = None
        if entry.kind == EntryKind.COMMAND:
            try:
                result = self.fsm.apply(entry.index, entry.data)
            except Exception as exc:  # the FSM's own error classes travel back to the proposer
                result = exc
            self._since_snapshot += 1
        self._apply_waiters.applied(entry, result)

    def _fail_reads(self) -> None:
        for future in self._read_waiters.values():
            if not future.done():
                future.set_exception(NotLeader(self.core.leader))

    async def _maybe_snapshot(self) -> None:
        if self._since_snapshot < self.snapshot_every or not hasattr(self.storage, "save_snapshot"):
            return
        started = time.monotonic()
        if started < self._snapshot_not_before:
            return
        self._snapshot_not_before = started + self.snapshot_interval * (1 + self._rng.random())
        index = self._fsm_applied
        snap = self.core.snapshot_at(index, self.fsm.snapshot())
        self._since_snapshot = 0
        if self.durable:
            await asyncio.to_thread(self.storage.save_snapshot, snap)
        else:
            self.storage.save_snapshot(snap)
        self._submit(lambda: self.core.compact(index - self.trailing_logs))
        log.info("snapshot written at index %d (%d bytes) in %.0f ms", index, len(snap.data),
                 (time.monotonic() - started) * 1000)

    def close(self) -> None:
        close = getattr(self.storage, "close", None)
        if close is not None:
            with contextlib.suppress(OSError):
                close()
