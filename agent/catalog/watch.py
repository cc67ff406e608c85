"""Watch keys, one-shot watchers and the bounded change log of the catalog store (layer 1, pure).

Contract:
- Watch keys are plain strings: "nodes", "services", "checks", "node.<name>", "service.<name>";
  build them with `node_key()` / `service_key()` so the spelling lives in one place.
- `Watchers.add(keys, callback)` returns a `WatchHandle`. `Watchers.fire(keys, index)` calls each
  watcher of any of those keys exactly once (then forgets it), in registration order, and touches
  only the watchers of those keys (a dict key -> ordered set of handles, never a scan of all).
  `WatchHandle.cancel()` is idempotent. A callback that raises does not stop the others: the error is
  counted in `Watchers.errors` and kept in `Watchers.last_error` (callbacks should not raise).
  `fire_all(index)` wakes everyone (used when a store is abandoned for a restored one).
- `ChangeLog` keeps the newest `capacity` `Change(index, keys)` entries; `since(index)` returns the
  changes after `index`, or None when some of them have already been dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

NODES = "nodes"
SERVICES = "services"
CHECKS = "checks"
DEFAULT_HISTORY = 10_000  # change-log entries kept for resuming watches


def node_key(name: str) -> str:
    return f"node.{name}"


def service_key(name: str) -> str:
    return f"service.{name}"


@dataclass(frozen=True, slots=True)
class Change:
    """One applied write: its Raft index and the watch keys it changed."""

    index: int
    keys: frozenset[str]


class WatchHandle:
    """A one-shot registration; `cancel()` removes it (idempotent)."""

    __slots__ = ("_callback", "_keys", "_owner", "active")

    def __init__(self, owner: Watchers, keys: tuple[str, ...], callback: Callable[[int], None]):
        self._owner = owner
        self._keys = keys
        self._callback = callback
        self.active = True

    @property
    def keys(self) -> tuple[str, ...]:
        return self._keys

    def cancel(self) -> None:
        if self.active:
            self.active = False
            self._owner._detach(self)


class Watchers:
    """key -> watchers of that key (dicts used as insertion-ordered sets)."""

    def __init__(self) -> None:
        self._by_key: dict[str, dict[WatchHandle, None]] = {}
        self.errors = 0
        self.last_error: BaseException | None = None

    def add(self, keys: Iterable[str], callback: Callable[[int], None]) -> WatchHandle:
        handle = WatchHandle(self, tuple(dict.fromkeys(keys)), callback)
        for key in handle.keys:
            self._by_key.setdefault(key, {})[handle] = None
        return handle

    def _detach(self, handle: WatchHandle) -> None:
        for key in handle.keys:
            group = self._by_key.get(key)
            if group is not None:
                group.pop(handle, None)
                if not group:
                    del self._by_key[key]

    def count(self, key: str | None = None) -> int:
        """Number of active watchers (of one key, or of all keys)."""
        if key is not None:
            return len(self._by_key.get(key, ()))
        return len({h for group in self._by_key.values() for h in group})

    def fire(self, keys: Iterable[str], index: int) -> None:
        due: dict[WatchHandle, None] = {}
        for key in sorted(keys):
            group = self._by_key.get(key)
            if group:
                due.update(group)
        self._call(due, index)

    def fire_all(self, index: int) -> None:
        """Wake every watcher (the store is being abandoned, e.g. replaced by a snapshot restore)."""
        self.fire(list(self._by_key), index)

    def _call(self, due: dict[WatchHandle, None], index: int) -> None:
        for handle in due:
            handle.cancel()
        for handle in due:
            try:
                handle._callback(index)
            except Exception as exc:  # a broken watcher must not break the apply or the others
                self.errors += 1
                self.last_error = exc


class ChangeLog:
    """The newest `capacity` changes, oldest first."""

    def __init__(self, capacity: int = DEFAULT_HISTORY, floor: int = 0):
        if capacity < 1:
            raise ValueError("change log capacity must be at least 1")
        self._entries: deque[Change] = deque()
        self._capacity = capacity
        self.floor = floor  # every change with index > floor is still held

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, change: Change) -> None:
        if len(self._entries) >= self._capacity:
            self.floor = self._entries.popleft().index
        self._entries.append(change)

    def since(self, index: int) -> list[Change] | None:
        if index < self.floor:
            return None
        out: list[Change] = []
        for change in reversed(self._entries):
            if change.index <= index:
                break
            out.append(change)
        out.reverse()
        return out
