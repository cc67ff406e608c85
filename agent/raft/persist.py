"""How a RaftNode makes one `Ready` durable before acting on it (layer 2; used by `RaftNode`).

Contract:
- `ReadyPersister(storage, durable).persist(rd, leading, send, idle)` writes the Ready's hard
  state, entries and received snapshot with an fsync; a Ready whose only change is the commit
  index is not written at all (Raft needs no durable commit index: a restarted server learns it
  again from the leader, and the stored one is never ahead of the truth). `MemoryStorage`
  (`durable` False) keeps everything, without I/O.
- A leader's AppendEntries, heartbeats and snapshots leave (through `send`) before its own fsync
  (Raft thesis §10.2.1: its own match index only counts after `advance`) and are removed from
  `rd.messages`; every other message waits for the fsync.
- The fsync runs on the event loop when the Ready is one small entry and `idle` (no input
  waits): a thread hand-off costs more than the ~0.2 ms fsync it would overlap. Batches
  (concurrent clients), snapshots and large entries fsync in a thread (`asyncio.to_thread`) so
  requests keep being parsed meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from agent.raft.core import Ready
from agent.raft.messages import AppendEntries, Heartbeat, InstallSnapshot, LogEntry, Message

INLINE_FSYNC_MAX_BYTES = 64 * 1024  # a Ready of one entry up to this size is fsynced on the loop


class RaftStorage(Protocol):
    def initial_state(self) -> Any: ...
    def snapshot(self) -> Any: ...
    def save(self, hard_state: Any, entries: list[LogEntry], snapshot: Any) -> None: ...
    def save_snapshot(self, snapshot: Any) -> None: ...


class ReadyPersister:
    def __init__(self, storage: RaftStorage, durable: bool) -> None:
        self.storage = storage
        self.durable = durable
        self._synced = storage.initial_state()[0]  # its term and vote are the durable ones

    async def persist(self, rd: Ready, leading: bool, send: Callable[[Message], None], idle: bool) -> None:
        if not rd.must_sync:
            return
        hard = rd.hard_state
        vote_changed = hard is not None and (hard.term, hard.vote) != (self._synced.term, self._synced.vote)
        if not self.durable:
            self.storage.save(hard, rd.entries, rd.snapshot)
        elif rd.entries or rd.snapshot or vote_changed:  # otherwise only the commit index moved: no write
            if leading:
                early = [m for m in rd.messages if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot)]
                if early:
                    rd.messages = [m for m in rd.messages if not isinstance(m, AppendEntries | Heartbeat
                                                                            | InstallSnapshot)]
                    for m in early:
                        send(m)
            if self.fsync_inline(rd, idle):
                self.storage.save(hard, rd.entries, rd.snapshot)
            else:
                await asyncio.to_thread(self.storage.save, hard, rd.entries, rd.snapshot)
        if hard is not None:
            self._synced = hard

    @staticmethod
    def fsync_inline(rd: Ready, idle: bool) -> bool:
        return (idle and rd.snapshot is None and len(rd.entries) <= 1
                and sum(len(e.data) for e in rd.entries) <= INLINE_FSYNC_MAX_BYTES)
