"""The Raft core's in-memory view of the log (layer 1, pure).

Contract: the log is a snapshot point (`snap_index`, `snap_term`, `snap_membership`) followed by
entries `snap_index+1 .. last_index()` with no gaps. `stabled` is the last index the driver has
persisted (entries after it are handed out by `unstable()`); `committed` and `applied` only grow.
`append` truncates a conflicting suffix (never below `committed`) and appends; `compact(index)`
forgets entries up to `index` once the driver holds a snapshot there; `restore(snapshot)` replaces
the whole log. `membership()` is the latest CONFIG entry in the log (committed or not, as in the
Raft thesis' one-server changes) or the snapshot's membership.
"""

from __future__ import annotations

from bisect import bisect_right

from agent.raft.messages import EntryKind, LogEntry, Membership, Snapshot


class LogInvariantError(AssertionError):
    """The core was asked to do something Raft forbids (e.g. truncate committed entries)."""


class RaftLog:
    def __init__(self, snapshot: Snapshot | None = None, entries: list[LogEntry] | None = None,
                 committed: int = 0) -> None:
        snap = snapshot or Snapshot(0, 0, Membership())
        self.snap_index = snap.index
        self.snap_term = snap.term
        self.snap_membership = snap.membership
        self.entries: list[LogEntry] = [e for e in (entries or []) if e.index > snap.index]
        for offset, entry in enumerate(self.entries):
            if entry.index != snap.index + 1 + offset:
                raise LogInvariantError(f"log gap at {entry.index}")
        self.stabled = self.last_index()
        self.committed = min(max(committed, snap.index), self.last_index())
        self.applied = snap.index
        self._config_indexes = [e.index for e in self.entries if e.kind == EntryKind.CONFIG]

    # --- reading ---
    def first_index(self) -> int:
        return self.snap_index + 1

    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`; None when compacted away or beyond the end."""
        if index == self.snap_index:
            return self.snap_term
        if self.snap_index < index <= self.last_index():
            return self.entries[index - self.snap_index - 1].term
        return None

    def entry(self, index: int) -> LogEntry:
        return self.entries[index - self.snap_index - 1]

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Is a candidate's log (last_index, last_term) at least as up to date as ours?"""
        return last_term > self.last_term() or (last_term == self.last_term() and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_bytes: int) -> list[LogEntry]:
        """Entries lo..hi-1 (lo > snap_index), at least one, then up to `max_bytes` of payload."""
        out: list[LogEntry] = []
        size = 0
        for i in range(lo - self.snap_index - 1, min(hi, self.last_index() + 1) - self.snap_index - 1):
            entry = self.entries[i]
            size += len(entry.data)
            if out and size > max_bytes:
                break
            out.append(entry)
        return out

    def unstable(self) -> list[LogEntry]:
        return self.entries[self.stabled - self.snap_index:]

    def has_to_apply(self) -> bool:
        return min(self.committed, self.stabled) > self.applied

    def to_apply(self) -> list[LogEntry]:
        """Committed entries that are persisted locally and not yet applied."""
        if not self.has_to_apply():
            return []
        return self.entries[self.applied - self.snap_index:min(self.committed, self.stabled) - self.snap_index]

    def first_index_of_term(self, index: int) -> int:
        """The first index (above the snapshot) holding the same term as `index`."""
        term = self.term(index)
        while index - 1 > self.snap_index and self.term(index - 1) == term:
            index -= 1
        return index

    def last_index_of_term(self, term: int) -> int:
        """Our last index with exactly `term`, or 0 when we hold no entry of that term."""
        for entry in reversed(self.entries):
            if entry.term == term:
                return entry.index
            if entry.term < term:
                break
        return 0

    def membership(self) -> Membership:
        if self._config_indexes:
            return Membership.decode(self.entry(self._config_indexes[-1]).data)
        return self.snap_membership

    def membership_at(self, index: int) -> Membership:
        pos = bisect_right(self._config_indexes, index)
        if pos:
            return Membership.decode(self.entry(self._config_indexes[pos - 1]).data)
        return self.snap_membership

    def last_config_index(self) -> int:
        return self._config_indexes[-1] if self._config_indexes else self.snap_index

    # --- changing ---
    def append(self, entries: list[LogEntry] | tuple[LogEntry, ...]) -> None:
        """Append entries, replacing a conflicting suffix; entries[0].index ≤ last_index()+1."""
        if not entries:
            return
        first = entries[0].index
        if first > self.last_index() + 1 or first <= self.snap_index:
            raise LogInvariantError(f"append at {first} outside {self.snap_index + 1}..{self.last_index() + 1}")
        if first <= self.last_index():
            if first <= self.committed:
                raise LogInvariantError(f"truncating committed entry {first} (committed {self.committed})")
            del self.entries[first - self.snap_index - 1:]
            self.stabled = min(self.stabled, first - 1)
            self._config_indexes = [i for i in self._config_indexes if i < first]
        self.entries.extend(entries)
        self._config_indexes.extend(e.index for e in entries if e.kind == EntryKind.CONFIG)

    def append_new(self, prev_index: int, entries: tuple[LogEntry, ...]) -> int:
        """Follower side of AppendEntries after prev matched: skip entries we already hold, cut at
        the first conflict, append the rest. Returns the last index the leader's message proves."""
        for entry in entries:
            if entry.index <= self.snap_index:
                continue
            existing = self.term(entry.index)
            if existing != entry.term:
                self.append([e for e in entries if e.index >= entry.index])
                break
        return prev_index + len(entries)

    def commit_to(self, index: int) -> bool:
        index = min(index, self.last_index())
        if index > self.committed:
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        if self.term(index) == term and index > self.stabled:
            self.stabled = index

    def applied_to(self, index: int) -> None:
        if index > self.applied:
            self.applied = index

    def restore(self, snap: Snapshot) -> None:
        self.snap_index, self.snap_term, self.snap_membership = snap.index, snap.term, snap.membership
        self.entries = []
        self._config_indexes = []
        self.committed = self.stabled = self.applied = snap.index

    def compact(self, index: int) -> None:
        """Forget entries up to `index` (≤ applied): the driver now holds a snapshot there."""
        if index <= self.snap_index:
            return
        if index > self.applied:
            raise LogInvariantError(f"compacting past applied ({index} > {self.applied})")
        membership, term = self.membership_at(index), self.term(index)
        assert term is not None
        del self.entries[:index - self.snap_index]
        self.snap_index, self.snap_term, self.snap_membership = index, term, membership
        self._config_indexes = [i for i in self._config_indexes if i > index]
