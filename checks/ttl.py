"""TTL check state as pure data + deadlines (layer 1: no clock reads; callers pass `now`).

Contract:
- `TTLState(ttl)`; `update(status, output, now)` sets the status and moves the deadline to
  `now + ttl` (an update after expiry revives the check).
- `due(now)` is True when the deadline has passed; `expire()` then returns the critical result
  Consul reports: output `TTL expired`, or `TTL expired (last output before timeout follows): <out>`.
  After expiry `deadline` is None until the next update.
- `remaining(now)` and `deadline` let the driver sleep exactly until expiry; `restore()` rebuilds
  the state from a persisted record (status, output, seconds left).
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.definition import Status
from checks.result import CheckResult

TTL_EXPIRED = "TTL expired"


@dataclass(slots=True)
class TTLState:
    ttl: float
    status: Status = Status.CRITICAL
    output: str = ""
    deadline: float | None = None

    def start(self, now: float) -> None:
        """Arm the timer for a newly added check (Consul starts the TTL at registration)."""
        self.deadline = now + self.ttl

    def update(self, status: Status, output: str, now: float) -> CheckResult:
        self.status = status
        self.output = output
        self.deadline = now + self.ttl
        return CheckResult(status, output)

    def restore(self, status: Status, output: str, remaining: float, now: float) -> CheckResult:
        self.status = status
        self.output = output
        self.deadline = now + min(max(remaining, 0.0), self.ttl)
        return CheckResult(status, output)

    def due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def remaining(self, now: float) -> float | None:
        return None if self.deadline is None else max(self.deadline - now, 0.0)

    def expire(self) -> CheckResult:
        last = self.output
        self.deadline = None
        self.status = Status.CRITICAL
        self.output = (
            TTL_EXPIRED if not last else f"{TTL_EXPIRED} (last output before timeout follows): {last}"
        )
        return CheckResult(self.status, self.output)
