"""Who waits on what a RaftNode applies (layer 2, no I/O; used by `RaftNode` only).

Contract:
- `ApplyWaiters` holds callbacks waiting for the FSM result of one log entry (a local proposal,
  or a write this server forwarded to the leader). `register(index, term, waiter, applied)` calls
  the waiter at once when the entry is already applied (its result is kept for the last
  `history` entries; older or replaced entries get `LeadershipLost`), otherwise when `applied(
  entry, result)` reports it: the result if the entry has the expected term, else
  `LeadershipLost`. `lost_in_snapshot(index)` fails every waiter at or below a snapshot that
  replaced those entries wholesale.
- `AppliedIndexWaiters` resolves futures once the FSM's applied index reaches theirs (linearizable
  reads wait on it after their read-index round).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from agent.raft.errors import RaftError
from agent.raft.messages import LogEntry

Waiter = Callable[[object], None]


class LeadershipLost(RaftError):
    """The proposal's index was taken by another leader's entry: it was not applied."""


class ApplyWaiters:
    def __init__(self, history: int) -> None:
        self.history = history
        self._waiting: dict[int, list[tuple[int, Waiter]]] = {}
        self._results: OrderedDict[int, tuple[int, object]] = OrderedDict()

    def register(self, index: int, term: int, waiter: Waiter, applied: int) -> None:
        if index > applied:
            self._waiting.setdefault(index, []).append((term, waiter))
            return
        known = self._results.get(index)
        if known is None:
            waiter(LeadershipLost(f"entry {index} is no longer known here"))
        elif known[0] != term:
            waiter(LeadershipLost(f"entry {index} was replaced by a later leader"))
        else:
            waiter(known[1])

    def applied(self, entry: LogEntry, result: object) -> None:
        self._results[entry.index] = (entry.term, result)
        if len(self._results) > self.history:
            self._results.popitem(last=False)
        for term, waiter in self._waiting.pop(entry.index, ()):
            if term == entry.term:
                waiter(result)
            else:
                waiter(LeadershipLost(f"entry {entry.index} was replaced by a later leader"))

    def lost_in_snapshot(self, snapshot_index: int) -> None:
        for index in [i for i in self._waiting if i <= snapshot_index]:
            for _, waiter in self._waiting.pop(index):
                waiter(LeadershipLost(f"entry {index} arrived inside a snapshot"))


class AppliedIndexWaiters:
    def __init__(self) -> None:
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def future(self, index: int) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((index, future))
        return future

    def release(self, applied: int) -> None:
        keep: list[tuple[int, asyncio.Future[None]]] = []
        for index, future in self._waiting:
            if index <= applied:
                if not future.done():
                    future.set_result(None)
            else:
                keep.append((index, future))
        self._waiting = keep
