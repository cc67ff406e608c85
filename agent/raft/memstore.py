"""An in-memory Raft storage: the durable state of one server, kept in dicts (layer 1, pure).

Contract: implements the core's `Storage` read side (`initial_state`, `snapshot`) plus the write
side a driver needs: `save(hard_state, entries, snapshot)` in the order a `Ready` requires (a
received snapshot replaces the whole log; entries starting at or below the stored last index cut
the stored suffix first) and `save_snapshot(snapshot)` (then drops log entries it covers). Used by
the deterministic simulation — where it survives a simulated crash — and by tests; a dev-mode
server may use it for its in-memory Raft.
"""

from __future__ import annotations

from agent.raft.messages import HardState, LogEntry, Snapshot


class MemoryStorage:
    def __init__(self) -> None:
        self.hard = HardState()
        self.snap: Snapshot | None = None
        self.entries: list[LogEntry] = []  # contiguous, all after the snapshot

    def initial_state(self) -> tuple[HardState, Snapshot | None, list[LogEntry]]:
        return self.hard, self.snap, list(self.entries)

    def snapshot(self) -> Snapshot | None:
        return self.snap

    def last_index(self) -> int:
        if self.entries:
            return self.entries[-1].index
        return self.snap.index if self.snap else 0

    def save(self, hard_state: HardState | None, entries: list[LogEntry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self.snap = snapshot
            self.entries = []
        self._keep(entries)
        if hard_state is not None:
            self.hard = hard_state

    def _keep(self, entries: list[LogEntry]) -> list[LogEntry]:
        """Add `entries` to the log, cutting a conflicting suffix first; returns the ones kept
        (those after the snapshot). Raises ValueError on a gap."""
        if not entries:
            return []
        first = entries[0].index
        if first > self.last_index() + 1:
            raise ValueError(f"gap: appending {first} after {self.last_index()}")
        base = self.snap.index if self.snap else 0
        del self.entries[max(first - base - 1, 0):]
        kept = [e for e in entries if e.index > base]
        self.entries.extend(kept)
        return kept

    def save_snapshot(self, snapshot: Snapshot) -> None:
        if self.snap is not None and snapshot.index <= self.snap.index:
            return
        self.snap = snapshot
        self.entries = [e for e in self.entries if e.index > snapshot.index]
