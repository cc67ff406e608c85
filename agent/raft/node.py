"""A one-voter Raft driver: the log-and-apply path a cluster will use (layer 3).

Contract: `propose(data)` appends an entry to the log, "commits" it (a single voter is its own
majority), applies it to the FSM in log order and returns the FSM's result (or raises the FSM's
error). With a `FileLog`, the entry is fsynced before it is applied or acknowledged, and
`recover()` rebuilds the FSM from the last snapshot plus the log. Concurrent proposals are
batched: every proposal waiting when the applier wakes shares one append and one fsync. Applies
run synchronously in the event loop, so readers never see half a write. The Raft issue replaces
this class with the replicated `RaftNode` behind the same interface (`propose`, `is_leader`,
`leader_address`, `last_contact_ms`, `applied_index`). `on_commit(entries, seconds)`, when set,
is called after each batch is durable and applied (metrics: apply count and commit time).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from agent.raft.filelog import FileLog
from agent.raft.log import Entry

SNAPSHOT_EVERY = 10_000  # entries between automatic snapshots (and log truncation)
log = logging.getLogger("waypost.raft")


class StateMachine(Protocol):
    def apply(self, index: int, data: bytes) -> object: ...
    def snapshot(self) -> bytes: ...
    def restore(self, data: bytes) -> None: ...


class SingleVoterRaft:
    def __init__(self, fsm: StateMachine, address: str, storage: FileLog | None = None, *,
                 term: int = 1, snapshot_every: int = SNAPSHOT_EVERY) -> None:
        self._fsm = fsm
        self._storage = storage
        self._term = term
        self._snapshot_every = snapshot_every
        self._last_index = 0
        self.address = address
        self._pending: list[tuple[bytes, asyncio.Future[object]]] = []
        self._wakeup = asyncio.Event()
        self.on_commit: Callable[[int, float], None] | None = None  # metrics hook

    # --- the interface the server uses ---
    def is_leader(self) -> bool:
        return True

    def leader_address(self) -> str:
        return self.address

    def last_contact_ms(self) -> int:
        return 0

    def applied_index(self) -> int:
        return self._last_index

    def recover(self) -> int:
        """Rebuild the FSM from durable storage; returns the number of log entries replayed."""
        if self._storage is None:
            return 0
        snapshot_index, snapshot, entries = self._storage.open()
        if snapshot is not None:
            self._fsm.restore(snapshot)
        self._last_index = snapshot_index
        for entry in entries:
            self._apply(entry)
        log.info("recovered catalog: snapshot at %d, %d log entries", snapshot_index, len(entries))
        return len(entries)

    async def propose(self, data: bytes) -> object:
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._pending.append((data, future))
        self._wakeup.set()
        return await future

    def apply_now(self, data: bytes) -> object:
        """Append and apply one entry synchronously (bootstrap writes before the loop serves)."""
        entries = self._next_entries([data])
        if self._storage is not None:
            self._storage.append(entries)
        result = self._apply(entries[0])
        if isinstance(result, Exception):
            raise result
        return result

    async def run(self) -> None:
        """Apply loop: drains every pending proposal per wake-up (one append, one fsync)."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            entries = self._next_entries([data for data, _ in batch])
            started = time.perf_counter()
            try:
                if self._storage is not None:
                    await asyncio.to_thread(self._storage.append, entries)
            except OSError as exc:
                self._last_index -= len(entries)
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for entry, (_, future) in zip(entries, batch, strict=True):
                result = self._apply(entry)
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
            if self.on_commit is not None:
                self.on_commit(len(entries), time.perf_counter() - started)
            await self._maybe_snapshot()

    def _next_entries(self, payloads: list[bytes]) -> list[Entry]:
        first = self._last_index + 1
        self._last_index += len(payloads)
        return [Entry(first + i, self._term, data) for i, data in enumerate(payloads)]

    def _apply(self, entry: Entry) -> object:
        self._last_index = max(self._last_index, entry.index)
        try:
            return self._fsm.apply(entry.index, entry.data)
        except Exception as exc:  # the FSM's own error classes travel back to the proposer
            return exc

    async def _maybe_snapshot(self) -> None:
        storage = self._storage
        if storage is None or storage.entries_since_snapshot < self._snapshot_every:
            return
        data = self._fsm.snapshot()
        await asyncio.to_thread(storage.save_snapshot, self._last_index, data)
        log.info("snapshot written at index %d", self._last_index)
