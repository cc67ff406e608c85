"""Blocking-query parameters, one definition for aiohttp's handlers and the fast path (layer 4).

Contract: `blocking_params(raw_index, raw_wait)` → (index, wait seconds) from the raw `index` and
`wait` query values (None when absent): index 0 when absent; wait `DEFAULT_WAIT` (5 min) when
absent, at most `MAX_WAIT` (10 min). Bad values raise `BadRequest` with Consul's messages
(`Invalid index`, `Invalid wait time`). `jittered(wait)` adds up to wait/`JITTER_FRACTION` at
random, as Consul does, so watchers woken together do not come back together.
"""

from __future__ import annotations

import random

from agent.errors import BadRequest
from checks.definition import DurationError, parse_duration

DEFAULT_WAIT = 300.0
MAX_WAIT = 600.0
JITTER_FRACTION = 16


def blocking_params(raw_index: str | None, raw_wait: str | None) -> tuple[int, float]:
    index = 0
    if raw_index:
        if not raw_index.isdigit() or len(raw_index) > 20:
            raise BadRequest("Invalid index")
        index = int(raw_index)
    wait = DEFAULT_WAIT
    if raw_wait is not None:
        try:
            wait = parse_duration(raw_wait)
        except DurationError as exc:
            raise BadRequest("Invalid wait time") from exc
        if wait < 0:
            raise BadRequest("Invalid wait time")
        wait = min(wait, MAX_WAIT)
    return index, wait


def jittered(wait: float) -> float:
    return wait + random.uniform(0, wait / JITTER_FRACTION)
