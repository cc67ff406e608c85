"""Internal settings for tests, read from the environment (layer 2).

Contract: `internal_check_timing(environ)` → `CheckSet` keyword overrides from
`WAYPOST_TEST_CHECK_REAP_INTERVAL` (how often critical services are reaped, default 30 s) and
`WAYPOST_TEST_CHECK_DEREGISTER_MIN` (the floor of `deregister_critical_service_after`, default
1 min), both Go durations. They are not Consul keys. A bad value raises `ConfigError` naming the
variable, so the agent stops at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.config import ConfigError
from agent.errors import Problem
from checks.definition import DurationError, parse_duration

INTERNAL_CHECK_TIMING = {"WAYPOST_TEST_CHECK_REAP_INTERVAL": "reap_interval",
                         "WAYPOST_TEST_CHECK_DEREGISTER_MIN": "min_deregister_after"}


def internal_check_timing(environ: Mapping[str, str]) -> dict[str, float]:
    """CheckSet keyword overrides from the internal test settings (see the module docstring)."""
    out: dict[str, float] = {}
    for variable, keyword in INTERNAL_CHECK_TIMING.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        try:
            seconds = parse_duration(raw)
        except DurationError:
            seconds = -1.0
        if seconds <= 0:
            raise ConfigError([Problem(variable, 0, f"must be a positive duration such as 1s, got {raw!r}")])
        out[keyword] = seconds
    return out
