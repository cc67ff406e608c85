"""The KV table: entries, tombstones, key/prefix watchers and the change history (layer 1, pure).

Contract:
- `KVEntry` is Consul's `DirEntry` (reference §4.1); rows are immutable and replaced whole.
- Written only by the FSM path with the Raft index: `put(key, entry)` / `remove(index, key)`
  stage a change; `commit(index)` makes the staged changes visible to watchers and history,
  `rollback()` undoes every staged change (an aborted transaction leaves nothing behind).
- A delete leaves a tombstone (key -> delete index) so a blocking query on a deleted key or a
  prefix sees the index move; re-creating the key drops it; `reap(up_to)` forgets old ones.
- Reads: `get(key) -> (index, entry|None)`; `list(prefix) -> (index, [entries sorted by key])`.
  The index is the entry's (or tombstone's) modify index, the highest under the prefix, or, when
  nothing is there, the table index (every committed KV change), as Consul does.
- `watch(keys=..., prefixes=..., callback)` is a one-shot watcher: it fires on the commit that
  changes one of `keys`, or any key starting with one of `prefixes`, and only then (a watcher on
  `config/app/` never wakes for `config/db`). The cost of a commit is O(changed keys x distinct
  watched prefix lengths), never a scan of all watchers.
- `events_since(index)` returns every change after `index` in order (`KVEvent`, entry None = deleted),
  or None when the bounded history no longer reaches back that far (`history_floor` is the
  oldest index a watcher can resume from).
"""

from __future__ import annotations

import base64
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from agent.catalog.watch import DEFAULT_HISTORY, Watchers, WatchHandle

_EXACT = "k:"
_PREFIX = "p:"


@dataclass(frozen=True, slots=True)
class KVEntry:
    key: str
    value: bytes = b""
    flags: int = 0
    session: str = ""
    lock_index: int = 0
    create_index: int = 0
    modify_index: int = 0

    def to_api(self, with_value: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "LockIndex": self.lock_index,
            "Key": self.key,
            "Flags": self.flags,
            "Value": base64.b64encode(self.value).decode() if with_value and self.value else None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
        if self.session:
            out["Session"] = self.session
        return out

    def to_record(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> KVEntry:
        return cls(**record)


@dataclass(frozen=True, slots=True)
class KVEvent:
    """One committed change of one key: `entry` is the new row, or None when it was deleted."""

    index: int
    key: str
    entry: KVEntry | None

    def to_api(self) -> dict[str, object]:
        if self.entry is None:
            return {"Index": self.index, "Op": "delete", "Key": self.key}
        return {"Index": self.index, "Op": "set", "Key": self.key, "Entry": self.entry.to_api()}


class _PrefixWatchers(Watchers):
    """Watchers that also count the distinct lengths of watched prefixes (for the prefix walk)."""

    def __init__(self) -> None:
        super().__init__()
        self.lengths: dict[int, int] = {}

    def add(self, keys: Iterable[str], callback: Callable[[int], None]) -> WatchHandle:
        handle = super().add(keys, callback)
        for key in handle.keys:
            if key.startswith(_PREFIX):
                self.lengths[len(key)] = self.lengths.get(len(key), 0) + 1
        return handle

    def _detach(self, handle: WatchHandle) -> None:
        super()._detach(handle)
        for key in handle.keys:
            if key.startswith(_PREFIX):
                left = self.lengths[len(key)] - 1
                if left:
                    self.lengths[len(key)] = left
                else:
                    del self.lengths[len(key)]


class KVStore:
    def __init__(self, history: int = DEFAULT_HISTORY) -> None:
        self.table_index = 0  # index of the last committed KV change (entries and tombstones)
        self._entries: dict[str, KVEntry] = {}
        self._tombstones: dict[str, int] = {}
        self._sorted: list[str] = []  # keys of entries and tombstones, sorted
        self._locks: dict[str, set[str]] = {}  # session id -> keys it holds
        self._staged: dict[str, tuple[KVEntry | None, int | None]] = {}  # key -> (old entry, old tomb)
        self._watchers = _PrefixWatchers()
        self._history: deque[KVEvent] = deque()
        self._capacity = history
        self.history_floor = 0  # every event with index > floor is still held

    # ------------------------------------------------------------------ staged writes

    def _stage(self, key: str) -> None:
        if key not in self._staged:
            self._staged[key] = (self._entries.get(key), self._tombstones.get(key))

    def _track(self, key: str, present: bool) -> None:
        pos = bisect_left(self._sorted, key)
        known = pos < len(self._sorted) and self._sorted[pos] == key
        if present and not known:
            self._sorted.insert(pos, key)
        elif not present and known:
            del self._sorted[pos]

    def _set(self, key: str, entry: KVEntry | None, tomb: int | None) -> None:
        old = self._entries.get(key)
        if old is not None and old.session:
            held = self._locks[old.session]
            held.discard(key)
            if not held:
                del self._locks[old.session]
        if entry is None:
            self._entries.pop(key, None)
        else:
            self._entries[key] = entry
            if entry.session:
                self._locks.setdefault(entry.session, set()).add(key)
        if tomb is None:
            self._tombstones.pop(key, None)
        else:
            self._tombstones[key] = tomb
        self._track(key, entry is not None or tomb is not None)

    def put(self, entry: KVEntry) -> None:
        self._stage(entry.key)
        self._set(entry.key, entry, None)

    def remove(self, index: int, key: str) -> bool:
        """Delete one key, leaving a tombstone; False if it did not exist."""
        if key not in self._entries:
            return False
        self._stage(key)
        self._set(key, None, index)
        return True

    def rollback(self) -> None:
        for key, (entry, tomb) in self._staged.items():
            self._set(key, entry, tomb)
        self._staged = {}

    def commit(self, index: int) -> None:
        staged, self._staged = self._staged, {}
        changed = [k for k, (old, _) in staged.items() if self._entries.get(k) is not old]
        if not changed:
            return
        self.table_index = max(self.table_index, index)
        watch_keys: set[str] = set()
        lengths = [n - len(_PREFIX) for n in self._watchers.lengths]
        for key in changed:
            self._record(KVEvent(index, key, self._entries.get(key)))
            watch_keys.add(_EXACT + key)
            watch_keys.update(_PREFIX + key[:n] for n in lengths if n <= len(key))
        self._watchers.fire(watch_keys, index)

    def _record(self, event: KVEvent) -> None:
        if len(self._history) >= self._capacity:
            self.history_floor = self._history.popleft().index
        self._history.append(event)

    def reap(self, up_to: int) -> int:
        """Forget tombstones at or below `up_to`; returns how many were dropped."""
        old = [k for k, i in self._tombstones.items() if i <= up_to]
        for key in old:
            del self._tombstones[key]
            self._track(key, False)
        return len(old)

    # ------------------------------------------------------------------ reads

    def entry(self, key: str) -> KVEntry | None:
        return self._entries.get(key)

    def held_by(self, session: str) -> list[str]:
        """Keys locked by this session, sorted."""
        return sorted(self._locks.get(session, ()))

    def _under(self, prefix: str) -> Iterable[str]:
        keys = self._sorted
        for pos in range(bisect_left(keys, prefix), len(keys)):
            if not keys[pos].startswith(prefix):
                break
            yield keys[pos]

    def get(self, key: str) -> tuple[int, KVEntry | None]:
        entry = self._entries.get(key)
        if entry is not None:
            return entry.modify_index, entry
        return max(1, self._tombstones.get(key, self.table_index)), None

    def list(self, prefix: str) -> tuple[int, list[KVEntry]]:
        index, out = 0, []
        for key in self._under(prefix):
            entry = self._entries.get(key)
            if entry is None:
                index = max(index, self._tombstones[key])
            else:
                index = max(index, entry.modify_index)
                out.append(entry)
        return max(1, index or self.table_index), out

    def keys(self, prefix: str, separator: str = "") -> tuple[int, list[str]]:
        index, entries = self.list(prefix)
        if not separator:
            return index, [e.key for e in entries]
        out: list[str] = []
        for entry in entries:
            cut = entry.key.find(separator, len(prefix))
            name = entry.key if cut < 0 else entry.key[: cut + len(separator)]
            if not out or out[-1] != name:
                out.append(name)
        return index, out

    def index_of(self, keys: Iterable[str] = (), prefixes: Iterable[str] = ()) -> int:
        return max([self.get(k)[0] for k in keys] + [self.list(p)[0] for p in prefixes], default=0)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tombstone_count(self) -> int:
        return len(self._tombstones)

    # ------------------------------------------------------------------ watching and history

    def watch(self, callback: Callable[[int], None], *, keys: Iterable[str] = (),
              prefixes: Iterable[str] = ()) -> WatchHandle:
        return self._watchers.add([_EXACT + k for k in keys] + [_PREFIX + p for p in prefixes], callback)

    def abandon(self, index: int) -> None:
        self._watchers.fire_all(index)

    @property
    def watchers(self) -> Watchers:
        return self._watchers

    def events_since(self, index: int, prefix: str = "") -> list[KVEvent] | None:
        if index < self.history_floor:
            return None
        out: list[KVEvent] = []
        for event in reversed(self._history):
            if event.index <= index:
                break
            if event.key.startswith(prefix):
                out.append(event)
        out.reverse()
        return out

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict:
        return {"table_index": self.table_index,
                "entries": [self._entries[k].to_record() for k in sorted(self._entries)],
                "tombstones": dict(sorted(self._tombstones.items()))}

    @classmethod
    def restore(cls, data: dict | None, last_index: int, history: int = DEFAULT_HISTORY) -> KVStore:
        """A store holding a snapshot's KV rows (raises KeyError/TypeError/ValueError if corrupt)."""
        store = cls(history)
        if data:
            store.table_index = int(data["table_index"])
            for key, tomb in data["tombstones"].items():
                store._set(str(key), None, int(tomb))
            for record in data["entries"]:
                entry = KVEntry.from_record(record)
                store._set(entry.key, entry, None)
        store.history_floor = last_index
        return store

