"""What one check run produces (layer 0: stdlib + checks.definition).

Contract: `CheckResult(status, output)` is immutable; `Transition` is one entry of a check's
bounded history (wall-clock time, old → new status, output excerpt, the rule that fired).
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.definition import Status

HISTORY_OUTPUT_EXCERPT = 256  # characters of output kept per history entry


@dataclass(frozen=True, slots=True)
class CheckResult:
    status: Status
    output: str = ""

    @classmethod
    def passing(cls, output: str = "") -> CheckResult:
        return cls(Status.PASSING, output)

    @classmethod
    def warning(cls, output: str = "") -> CheckResult:
        return cls(Status.WARNING, output)

    @classmethod
    def critical(cls, output: str = "") -> CheckResult:
        return cls(Status.CRITICAL, output)


@dataclass(frozen=True, slots=True)
class Transition:
    """One status change of a check, as shown by the check history API."""

    at: float  # unix time
    old: Status | None  # None for the first status a check ever had
    new: Status
    output: str
    reason: str  # "initial", "restored", "probe", "failures_before_critical", "ttl_expired", ...

    def to_api(self) -> dict[str, object]:
        return {
            "Time": self.at,
            "Old": str(self.old) if self.old is not None else "",
            "New": str(self.new),
            "Output": self.output,
            "Reason": self.reason,
        }
