"""Raft safety invariants, checked incrementally while a simulation runs.

Contract: every check raises `InvariantViolation` (message starts with the seed):
- election safety: at most one leader per term;
- log matching: an (index, term) pair names one entry and one predecessor term, across every
  node and every life (checked on each persisted Ready, so a log is checked as it is written);
- leader completeness: a new leader holds every entry known committed so far;
- committed entries are never lost or changed: every node's committed prefix agrees with the
  global committed map, also after a crash and restart;
- state machine safety: entries are applied in order with no gap, and index i is the same
  entry on every node;
- the commit index never decreases within a node's life (nor below its persisted value);
- reads are never stale: a read index (and a lease read) covers everything committed before.
"""

from __future__ import annotations

from agent.raft.core import RaftCore, Ready, Role
from agent.raft.messages import LogEntry


class InvariantViolation(AssertionError):
    pass


class Invariants:
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.leaders: dict[int, str] = {}
        self.entries: dict[tuple[int, int], tuple[int, bytes, int | None]] = {}  # → kind, data, prev term
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.max_committed = 0
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.commit_seen: dict[str, int] = {}
        self.checks = 0
        self.read_floor: dict[bytes, int] = {}

    def fail(self, what: str) -> None:
        raise InvariantViolation(f"seed={self.seed}: {what}")

    def on_start(self, sid: str, core: RaftCore) -> None:
        self.commit_seen[sid] = core.log.snap_index
        self.after_step(sid, core)

    def before_persist(self, sid: str, core: RaftCore, rd: Ready) -> None:
        self.checks += 1
        log = core.log
        for entry in rd.entries:
            prev = log.term(entry.index - 1)
            self._entry(sid, entry, prev)
        snap = rd.snapshot
        if snap is not None and snap.index in self.committed and self.committed[snap.index][0] != snap.term:
            self.fail(f"{sid} received a snapshot at {snap.index} that contradicts the committed log")

    def _entry(self, sid: str, entry: LogEntry, prev: int | None) -> None:
        key = (entry.index, entry.term)
        seen = self.entries.get(key)
        if seen is None:
            self.entries[key] = (entry.kind, entry.data, prev)
            return
        kind, data, seen_prev = seen
        if (kind, data) != (entry.kind, entry.data):
            self.fail(f"log matching: {sid} holds a different entry at index {entry.index} term {entry.term}")
        if prev is not None and seen_prev is not None and prev != seen_prev:
            self.fail(f"log matching: {sid} has prev term {prev} before ({entry.index}, {entry.term}), "
                      f"another node had {seen_prev}")
        if seen_prev is None:
            self.entries[key] = (kind, data, prev)

    def after_step(self, sid: str, core: RaftCore) -> None:
        self.checks += 1
        if core.role is Role.LEADER and self.leaders.get(core.term) != sid:
            other = self.leaders.setdefault(core.term, sid)
            if other != sid:
                self.fail(f"two leaders in term {core.term}: {other} and {sid}")
            # checked when it becomes leader: a deposed leader may legitimately lag later commits
            if core.log.last_index() < self.max_committed:
                self.fail(f"leader completeness: {sid} (term {core.term}) lacks committed index {self.max_committed}")
            self._check_committed_entry(sid, core, self.max_committed)
        seen = self.commit_seen.get(sid, 0)
        if core.committed < seen:
            self.fail(f"{sid} commit index went back from {seen} to {core.committed}")
        for index in range(max(seen, core.log.snap_index) + 1, core.committed + 1):
            entry = core.log.entry(index)
            known = self.committed.setdefault(index, (entry.term, entry.data))
            if known != (entry.term, entry.data):
                self.fail(f"committed entry {index} differs on {sid}: {known[0]} vs {entry.term}")
        self.commit_seen[sid] = core.committed
        self.max_committed = max(self.max_committed, core.committed)

    def _check_committed_entry(self, sid: str, core: RaftCore, index: int) -> None:
        if index <= core.log.snap_index or index not in self.committed:
            return
        term = core.log.term(index)
        if term != self.committed[index][0]:
            self.fail(f"leader completeness: {sid} has term {term} at committed index {index}, "
                      f"expected {self.committed[index][0]}")

    def on_apply(self, sid: str, last_applied: int, entry: LogEntry) -> None:
        self.checks += 1
        if entry.index != last_applied + 1:
            self.fail(f"{sid} applied {entry.index} after {last_applied}")
        known = self.applied.setdefault(entry.index, (entry.term, entry.data))
        if known != (entry.term, entry.data):
            self.fail(f"state machine safety: {sid} applied a different entry at {entry.index}")

    def on_read_start(self, context: bytes) -> None:
        self.read_floor[context] = self.max_committed

    def on_read_state(self, sid: str, context: bytes, index: int) -> None:
        """Linearizable read: the read index covers every entry committed before the read began."""
        floor = self.read_floor.get(context)
        if floor is not None and index < floor:
            self.fail(f"stale read-index on {sid}: {index} < {floor} committed when the read started")
