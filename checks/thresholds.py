"""Consul's status thresholds (its `StatusHandler`), as pure state (layer 1).

Contract: `Thresholds.observe(status)` takes one raw probe status and returns a `Verdict`:
`report` is the status to publish, or None to keep the current one (and its output) untouched.
- passing/warning count as successes: after `success_before_passing` consecutive ones the raw
  status is reported; each resets the failure counter.
- critical counts as a failure: after `failures_before_critical` consecutive ones → critical;
  after `failures_before_warning` (defaults to `failures_before_critical`, capped by it) → warning;
  each resets the success counter.
`reason` names the rule that fired (for the check history).
"""

from __future__ import annotations

from dataclasses import dataclass

from checks.definition import CheckDefinition, Status


@dataclass(frozen=True, slots=True)
class Verdict:
    report: Status | None
    reason: str


@dataclass(slots=True)
class Thresholds:
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    successes: int = 0
    failures: int = 0

    @classmethod
    def for_definition(cls, defn: CheckDefinition) -> Thresholds:
        critical = max(defn.failures_before_critical, 0)
        warning = max(defn.failures_before_warning, 0) or critical
        return cls(
            success_before_passing=max(defn.success_before_passing, 0),
            failures_before_warning=min(warning, critical),
            failures_before_critical=critical,
        )

    def observe(self, status: Status) -> Verdict:
        if status in (Status.PASSING, Status.WARNING):
            self.successes += 1
            self.failures = 0
            if self.successes >= self.success_before_passing:
                reason = "success_before_passing" if self.success_before_passing else "probe"
                return Verdict(status, reason)
            return Verdict(None, f"success {self.successes} of {self.success_before_passing}")
        self.failures += 1
        self.successes = 0
        if self.failures >= self.failures_before_critical:
            reason = "failures_before_critical" if self.failures_before_critical else "probe"
            return Verdict(Status.CRITICAL, reason)
        if self.failures >= self.failures_before_warning:
            return Verdict(Status.WARNING, "failures_before_warning")
        return Verdict(None, f"failure {self.failures} of {self.failures_before_critical}")
