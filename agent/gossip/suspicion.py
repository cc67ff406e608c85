"""Lifeguard suspicion timeouts and local health awareness (pure, layer 1).

Contract:
- `suspicion_timeout(mult, n, interval)`: the minimum time a member stays SUSPECT,
  mult × max(1, log10(max(1, n))) × interval (memberlist's suspicionTimeout).
- `Suspicion`: started by one suspector with `k` expected independent confirmations; its deadline
  falls from `max_timeout` toward `min_timeout` as log(c + 1) / log(k + 1) with c distinct
  confirmers (the original suspector does not count twice). k < 1 → the minimum at once. A
  suspicion learnt second-hand (push-pull) starts with no known suspector (`source=None`): the first
  accuser heard afterwards becomes the origin and is not counted as a confirmation.
- `Awareness`: the Lifeguard health score in [0, max_multiplier - 1]; `scale(d)` stretches a probe
  interval or timeout by (score + 1).
"""

from __future__ import annotations

import math


def suspicion_timeout(mult: int, n: int, interval: float) -> float:
    return mult * max(1.0, math.log10(max(1, n))) * interval


def lifeguard_timeout(confirmations: int, k: int, min_timeout: float, max_timeout: float) -> float:
    if k < 1:
        return min_timeout
    frac = math.log(confirmations + 1) / math.log(k + 1)
    return max(min_timeout, max_timeout - frac * (max_timeout - min_timeout))


class Suspicion:
    __slots__ = ("confirmers", "deadline", "incarnation", "k", "max_timeout", "min_timeout", "start")

    def __init__(self, source: str | None, incarnation: int, start: float, k: int,
                 min_timeout: float, max_timeout: float) -> None:
        self.incarnation = incarnation
        self.start = start
        self.k = k
        self.min_timeout = min_timeout
        self.max_timeout = max_timeout
        self.confirmers: dict[str, None] = {source: None} if source is not None else {}
        self.deadline = start + lifeguard_timeout(0, k, min_timeout, max_timeout)

    def confirm(self, source: str) -> bool:
        """A new independent suspector: True (and the deadline moves closer); False if already counted
        or enough confirmations are in. The first suspector of a second-hand suspicion is its origin:
        True (news worth relaying) but the deadline stays."""
        if source in self.confirmers or self.confirmations() >= self.k:
            return False
        self.confirmers[source] = None
        c = self.confirmations()
        self.deadline = self.start + lifeguard_timeout(c, self.k, self.min_timeout, self.max_timeout)
        return True

    def confirmations(self) -> int:
        return max(0, len(self.confirmers) - 1)


class Awareness:
    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int) -> None:
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(max(self.score + delta, 0), self.max_multiplier - 1)

    def scale(self, duration: float) -> float:
        return duration * (self.score + 1)
