"""Hot-path cache of canonical wire answers (pure, layer 1: no I/O, no clock).

Contract:
- Keys are built by the handler from the raw question: (question name as wire bytes — lowercased
  unless compression is off —, qtype, qclass, the size limit the answer was fitted to, transport).
- An entry holds several wire variants (shuffles of the same records) served in rotation, the
  dependency it was built from (a service name, or None for "the whole catalog") and the
  `change_index` read before its lookup. `get` revalidates with `index_of(dep)` on every hit, so a
  catalog change is visible to the very next query; stale entries are dropped.
- Bounded: beyond `max_entries` the oldest entries are evicted first (insertion order).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

CacheKey = tuple[bytes, int, int, int, bool]


class _Entry:
    __slots__ = ("dep", "next", "token", "variants")

    def __init__(self, variants: tuple[bytes, ...], dep: str | None, token: int):
        self.variants = variants
        self.dep = dep
        self.token = token
        self.next = 0


class AnswerCache:
    def __init__(self, max_entries: int = 10_000):
        self.max_entries = max_entries
        self._entries: dict[CacheKey, _Entry] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, index_of: Callable[[str | None], int]) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        if index_of(entry.dep) != entry.token:
            del self._entries[key]
            self.misses += 1
            return None
        self.hits += 1
        variants = entry.variants
        if len(variants) == 1:
            return variants[0]
        i = entry.next
        entry.next = (i + 1) % len(variants)
        return variants[i]

    def put(self, key: CacheKey, variants: Sequence[bytes], dep: str | None, token: int) -> None:
        if not variants or self.max_entries <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self.max_entries:
            del self._entries[next(iter(self._entries))]
        entry = _Entry(tuple(variants), dep, token)
        entry.next = 1 % len(entry.variants)
        self._entries[key] = entry

    def clear(self) -> None:
        self._entries.clear()
