"""Scheduling rules and the checks package's defaults (layer 1: pure, no clock reads).

Contract:
- Every default the checks package uses lives here (`DEFAULTS`-style module constants).
- `effective_interval`: the interval raised to `MIN_INTERVAL` (1 s, like Consul).
- `effective_timeout`: the kind's default (10 s; script 30 s) when unset, never longer than the interval.
- `first_run_at(now, interval, rng)`: a random stagger in [0, interval) from an injected `random.Random`.
- `next_run_at(planned, interval, now)`: the next tick on the grid `planned + k·interval` strictly
  after `now` — no drift, and a slow probe skips the ticks it missed instead of piling up.
- `deregister_due(...)`: which services have had a critical check for longer than allowed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass

from checks.definition import CheckDefinition, CheckKind

MIN_INTERVAL = 1.0  # Consul raises smaller intervals to 1 s
DEFAULT_TIMEOUT = 10.0  # http, tcp, udp, grpc, h2ping, os_service
SCRIPT_TIMEOUT = 30.0  # script and docker
ALIAS_INTERVAL = 1.0  # alias checks poll their source this often (Consul watches; we poll locally)
REAP_INTERVAL = 30.0  # Consul's check_reap_interval
MIN_DEREGISTER_AFTER = 60.0  # Consul's check_deregister_interval_min
OUTPUT_MAX_SIZE = 4096  # bytes of probe output kept (Consul's check_output_max_size)
HISTORY_SIZE = 32  # status transitions remembered per check
PROBE_GUARD = 5.0  # extra seconds the runner allows a probe past its own timeout

INTERVAL_KINDS = frozenset(
    {
        CheckKind.SCRIPT,
        CheckKind.HTTP,
        CheckKind.TCP,
        CheckKind.UDP,
        CheckKind.DOCKER,
        CheckKind.GRPC,
        CheckKind.H2PING,
        CheckKind.OS_SERVICE,
    }
)
SCRIPT_KINDS = frozenset({CheckKind.SCRIPT, CheckKind.DOCKER})


def effective_interval(defn: CheckDefinition, min_interval: float = MIN_INTERVAL) -> float:
    if defn.kind == CheckKind.ALIAS:
        return max(defn.interval or ALIAS_INTERVAL, min_interval)
    return max(defn.interval, min_interval)


def effective_timeout(defn: CheckDefinition, min_interval: float = MIN_INTERVAL) -> float:
    default = SCRIPT_TIMEOUT if defn.kind in SCRIPT_KINDS else DEFAULT_TIMEOUT
    timeout = defn.timeout if defn.timeout > 0 else default
    return min(timeout, effective_interval(defn, min_interval))


def output_limit(defn: CheckDefinition, agent_max: int = OUTPUT_MAX_SIZE) -> int:
    """Bytes of output to keep: the definition's `output_max_size`, capped by the agent-wide limit."""
    size = defn.output_max_size if defn.output_max_size > 0 else agent_max
    return min(size, agent_max)


def first_run_at(now: float, interval: float, rng: random.Random) -> float:
    return now + rng.random() * interval


def next_run_at(planned: float, interval: float, now: float) -> float:
    if now < planned:
        return planned + interval
    missed = math.floor((now - planned) / interval) + 1
    nxt = planned + missed * interval
    while nxt <= now:  # float rounding
        missed += 1
        nxt = planned + missed * interval
    return nxt


def deregister_after(defn: CheckDefinition, minimum: float = MIN_DEREGISTER_AFTER) -> float:
    """0 when the check never deregisters its service, else the (floored) delay in seconds."""
    if not defn.service_id or defn.deregister_critical_service_after <= 0:
        return 0.0
    return max(defn.deregister_critical_service_after, minimum)


@dataclass(frozen=True, slots=True)
class CriticalSpan:
    """A service check that is critical now: since when, and how long it may stay so."""

    service_id: str
    critical_since: float
    allowed: float


def deregister_due(spans: Iterable[CriticalSpan], now: float) -> list[str]:
    """Service ids (sorted, unique) with a check critical for longer than it allows."""
    due = {s.service_id for s in spans if s.allowed > 0 and now - s.critical_since > s.allowed}
    return sorted(due)
