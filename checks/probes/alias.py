"""Alias probe: mirror the health of another service instance or node (layer 2).

Contract: the agent implements `AliasSource` — `await source(node, service_id)` returns the
statuses of the target's checks (node checks included, as Consul's alias does) or None when the
target does not exist. The result mirrors the worst of them:
no checks → passing `No checks found.`; all passing → `All checks passing.`;
otherwise the worst status with `Aggregate status: <status>`; unknown target → critical.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from checks.definition import Status
from checks.result import CheckResult


class AliasSource(Protocol):
    async def __call__(self, node: str, service_id: str) -> Sequence[Status] | None: ...


def mirror(statuses: Sequence[Status] | None, node: str, service_id: str) -> CheckResult:
    """Pure: the alias result for the target's check statuses."""
    if statuses is None:
        what = f'service "{service_id}"' if service_id else f'node "{node}"'
        return CheckResult.critical(f"Alias target {what} not found")
    if not statuses:
        return CheckResult.passing("No checks found.")
    if Status.CRITICAL in statuses:
        return CheckResult.critical("Aggregate status: critical")
    if Status.WARNING in statuses:
        return CheckResult.warning("Aggregate status: warning")
    return CheckResult.passing("All checks passing.")


async def probe_alias(source: AliasSource, node: str, service_id: str) -> CheckResult:
    return mirror(await source(node, service_id), node, service_id)
