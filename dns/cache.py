"""Hot-path caches of wire answers (pure, layer 2 by the layer table: no I/O, no clock).

Contract:
- Validation is the same for both caches: every entry keeps the dependency it was built from (a
  service name, or None for "the whole catalog"), the `token` = `index_of(dep)` and the `epoch` =
  `index_of(None)` (an index that grows on any catalog change), both read **before** the lookup
  that built it. A hit whose epoch equals the current one is current without further work (nothing
  changed at all); otherwise it is current when `index_of(dep)` still equals its token (its epoch
  then moves forward), else it is dropped. So a catalog change is visible to the very next query.
- `AnswerCache`: keys built by the handler from the parsed question (question name as wire bytes —
  lowercased unless compression is off —, qtype, qclass, the size limit the answer was fitted to,
  transport). An entry holds several canonical variants (shuffles of the same records, ID 0) served
  in rotation; the handler patches ID, flags and the question's letter case per request.
- `HotCache`: keyed by the exact query bytes after the ID (flags, counts, question with its letter
  case, OPT). An entry holds the finished reply tails (everything after the ID) of every variant, so
  a hit is `query[:2] + next(entry.cycle)` with no parsing: the UDP listener does that inline.
- Both are bounded: beyond `max_entries` the oldest entries are evicted first (insertion order).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

CacheKey = tuple[bytes, int, int, int, bool]
IndexOf = Callable[[str | None], int]


class _Entry:
    __slots__ = ("dep", "epoch", "next", "token", "variants")

    def __init__(self, variants: tuple[bytes, ...], dep: str | None, token: int, epoch: int):
        self.variants = variants
        self.dep = dep
        self.token = token
        self.epoch = epoch
        self.next = 0

    def rotate(self) -> bytes:
        variants = self.variants
        if len(variants) == 1:
            return variants[0]
        i = self.next
        self.next = (i + 1) % len(variants)
        return variants[i]


def _current(entry: _Entry | HotEntry, epoch: int, index_of: IndexOf) -> bool:
    if entry.epoch == epoch:
        return True
    if index_of(entry.dep) != entry.token:
        return False
    entry.epoch = epoch
    return True


class AnswerCache:
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: dict[CacheKey, _Entry] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, key: CacheKey, index_of: IndexOf, epoch: int | None = None) -> _Entry | None:
        """The current entry for `key` (None on a miss); `epoch` defaults to `index_of(None)`."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if not _current(entry, index_of(None) if epoch is None else epoch, index_of):
            del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def get(self, key: CacheKey, index_of: IndexOf, epoch: int | None = None) -> bytes | None:
        entry = self.entry(key, index_of, epoch)
        return None if entry is None else entry.rotate()

    def put(self, key: CacheKey, variants: Sequence[bytes], dep: str | None, token: int,
            epoch: int | None = None) -> _Entry | None:
        """Store `variants` (the first was just served, rotation starts at the second). `epoch`
        defaults to `token` (right for dep None; merely conservative otherwise)."""
        if not variants or self.max_entries <= 0:
            return None
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        entry = _Entry(tuple(variants), dep, token, token if epoch is None else epoch)
        entry.next = 1 % len(entry.variants)
        self._entries[key] = entry
        return entry

    def clear(self) -> None:
        self._entries.clear()


class HotEntry:
    __slots__ = ("cycle", "dep", "epoch", "token")

    def __init__(self, tails: Sequence[bytes], dep: str | None, token: int, epoch: int):
        self.cycle = itertools.cycle(tails)
        self.dep = dep
        self.token = token
        self.epoch = epoch


class HotCache:
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self.entries: dict[bytes, HotEntry] = {}  # read directly by the UDP listener

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: bytes, tails: Sequence[bytes], dep: str | None, token: int, epoch: int) -> None:
        if not tails or self.max_entries <= 0:
            return
        entries = self.entries
        entries.pop(key, None)
        while len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[key] = HotEntry(tails, dep, token, epoch)

    def get(self, key: bytes, index_of: IndexOf) -> bytes | None:
        """The next reply tail for `key`, revalidated (the listener inlines the epoch-equal case)."""
        entry = self.entries.get(key)
        if entry is None:
            return None
        if not _current(entry, index_of(None), index_of):
            del self.entries[key]
            return None
        return next(entry.cycle)

    def clear(self) -> None:
        self.entries.clear()
