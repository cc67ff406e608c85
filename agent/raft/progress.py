"""The leader's view of one follower: replication state and flow control (layer 1, pure).

Contract (after etcd-io/raft's tracker): a follower is in one of three states —
- PROBE: we do not know where its log matches; send one AppendEntries per heartbeat interval
  (or per response) and back off using the follower's conflict hint;
- REPLICATE: logs match up to `match`; send optimistically (`next` jumps past what was sent),
  at most `max_inflight` messages unacknowledged (pipelining with flow control);
- SNAPSHOT: a snapshot at `pending_snapshot` is on its way; send nothing else until it is
  acknowledged or `snapshot_ticks` pass without an answer (then probe again).
`match` never decreases; `next` > `match` always. `recent_active` feeds check-quorum;
`ack_tick` is the leader tick at which the latest acknowledged message was *sent* (lease);
`commit_sent` is the commit index it was last told.
"""

from __future__ import annotations

from collections import deque
from enum import Enum


class State(Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Progress:
    __slots__ = ("ack_tick", "commit_sent", "inflight", "match", "max_inflight", "next", "paused",
                 "pending_snapshot", "recent_active", "snapshot_ticks", "state")

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = State.PROBE
        self.paused = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.max_inflight = max_inflight
        self.inflight: deque[int] = deque()  # last index of each unacknowledged message, ascending
        self.recent_active = False
        self.ack_tick = -1
        self.commit_sent = 0  # the commit index the last AppendEntries or heartbeat to it carried

    def __repr__(self) -> str:
        return f"Progress({self.state.value} match={self.match} next={self.next} inflight={len(self.inflight)})"

    def is_paused(self) -> bool:
        if self.state is State.PROBE:
            return self.paused
        if self.state is State.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def become_probe(self) -> None:
        if self.state is State.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self._reset(State.PROBE)

    def become_replicate(self) -> None:
        self.next = self.match + 1
        self._reset(State.REPLICATE)

    def become_snapshot(self, index: int) -> None:
        self._reset(State.SNAPSHOT)
        self.pending_snapshot = index

    def _reset(self, state: State) -> None:
        self.state = state
        self.paused = False
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.inflight.clear()

    def sent(self, last_index: int, count: int) -> None:
        """An AppendEntries carrying entries up to `last_index` (`count` of them) left."""
        if self.state is State.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflight.append(last_index)
        elif self.state is State.PROBE:
            self.paused = True

    def maybe_update(self, index: int) -> bool:
        """The follower matches us up to `index`; False when that is old news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.paused = False
        self.next = max(self.next, index + 1)
        while self.inflight and self.inflight[0] <= index:
            self.inflight.popleft()
        return updated

    def maybe_decrease(self, rejected: int, hint_next: int) -> bool:
        """The follower rejected prev_index `rejected`; move `next` back to `hint_next` (clamped).
        False when the rejection is stale (reordered or duplicated)."""
        if self.state is State.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint_next), self.match + 1, 1)
        self.paused = False
        return True

    def free_one(self) -> None:
        """A heartbeat answer proves the follower is alive: let one more message through."""
        if self.inflight:
            self.inflight.popleft()
