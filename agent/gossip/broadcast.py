"""Transmit-limited broadcast queue for piggybacked gossip (pure, layer 1).

Contract (memberlist's TransmitLimitedQueue): `retransmit_limit(mult, n)` is the per-member send budget
of one broadcast in an n-member cluster. Each broadcast is keyed by the member it is about;
queueing a new one for the same key replaces the older one (it is stale). `take(budget, limit)`
returns encoded payloads that fit `budget` bytes (each counted with its compound framing),
least-transmitted first and, among equals, newest first; every payload taken counts one transmit
and is dropped once it has been transmitted `limit` times. Payloads too large for any packet are
kept apart and returned by `take_oversized` (the caller sends them over a stream). No randomness,
no clock.
"""

from __future__ import annotations

import math

PART_OVERHEAD = 3      # msgpack bin16 header of one compound part
_MAX_MISSES = 16       # stop scanning after this many items in a row that did not fit


def retransmit_limit(mult: int, n: int) -> int:
    """How many times each broadcast is sent by each member that queues it: mult × ceil(log10(n + 1))."""
    return mult * math.ceil(math.log10(n + 1))


class BroadcastQueue:
    __slots__ = ("_max_part", "_oversized", "_tier_of", "_tiers")

    def __init__(self, max_part: int) -> None:
        self._max_part = max_part                    # payloads longer than this never fit a packet
        self._tiers: list[dict[str, bytes]] = []     # index = transmits so far; dict order = age
        self._tier_of: dict[str, int] = {}
        self._oversized: dict[str, tuple[bytes, int]] = {}   # key → (payload, transmits)

    def __len__(self) -> int:
        return len(self._tier_of) + len(self._oversized)

    def __contains__(self, key: str) -> bool:
        return key in self._tier_of or key in self._oversized

    def queue(self, key: str, payload: bytes) -> None:
        self.discard(key)
        if len(payload) > self._max_part:
            self._oversized[key] = (payload, 0)
            return
        if not self._tiers:
            self._tiers.append({})
        self._tiers[0][key] = payload
        self._tier_of[key] = 0

    def discard(self, key: str) -> None:
        self._oversized.pop(key, None)
        tier = self._tier_of.pop(key, None)
        if tier is not None:
            del self._tiers[tier][key]

    def clear(self) -> None:
        self._tiers.clear()
        self._tier_of.clear()
        self._oversized.clear()

    def take(self, budget: int, limit: int) -> list[bytes]:
        picked: list[tuple[str, int]] = []
        out: list[bytes] = []
        remaining = budget
        misses = 0
        for tier, items in enumerate(self._tiers):
            if misses >= _MAX_MISSES or remaining <= PART_OVERHEAD:
                break
            for key in reversed(items):
                cost = len(items[key]) + PART_OVERHEAD
                if cost <= remaining:
                    remaining -= cost
                    picked.append((key, tier))
                    out.append(items[key])
                    misses = 0
                else:
                    misses += 1
                    if misses >= _MAX_MISSES:
                        break
        self._advance(picked, limit)
        return out

    def take_oversized(self, limit: int) -> list[bytes]:
        """Payloads longer than max_part (to be sent alone over a stream), each counting one transmit."""
        out: list[bytes] = []
        for key, (payload, sent) in list(self._oversized.items()):
            out.append(payload)
            if sent + 1 >= limit:
                del self._oversized[key]
            else:
                self._oversized[key] = (payload, sent + 1)
        return out

    def _advance(self, picked: list[tuple[str, int]], limit: int) -> None:
        for key, tier in picked:
            payload = self._tiers[tier].pop(key)
            nxt = tier + 1
            if nxt >= limit:
                del self._tier_of[key]
                continue
            if nxt == len(self._tiers):
                self._tiers.append({})
            self._tiers[nxt][key] = payload
            self._tier_of[key] = nxt
        while self._tiers and not self._tiers[-1]:
            self._tiers.pop()
