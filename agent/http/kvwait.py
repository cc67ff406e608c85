"""Blocking reads over the KV and sessions tables (layer 4 helper).

Contract: `table_read(request, current, watch, produce)` serves one KV/session read Consul's way:
with `?index=N` it waits (`wait`, default 5 min, max 10 min, + jitter) until `current()` passes N
or a watcher registered with `watch(callback)` fires, never polling; then `produce()` returns
`(index, body)` and the answer carries `X-Consul-Index` (max 1), `X-Consul-KnownLeader`,
`X-Consul-LastContact` and `X-Consul-Effective-Consistency`. `body` is JSON-able data, or a
`web.StreamResponse` returned as is (raw values, 404s) with the headers added. Consistency
params (`stale`, `consistent`, `cached`) are validated like every other read.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from aiohttp import web

from agent.catalog.watch import WatchHandle
from agent.http.app import CONTEXT
from agent.http.common import JITTER_FRACTION, json_response, parse_blocking, parse_consistency

Watch = Callable[[Callable[[int], None]], WatchHandle]


async def wait_for(current: Callable[[], int], watch: Watch, index: int, timeout: float) -> None:
    if index <= 0 or timeout <= 0 or current() > index:
        return
    changed: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    def wake(new_index: int) -> None:
        if not changed.done():
            changed.set_result(new_index)

    handle = watch(wake)
    try:
        await asyncio.wait_for(changed, timeout)
    except TimeoutError:
        pass
    finally:
        handle.cancel()


def read_headers(request: web.Request, index: int, consistency: str) -> dict[str, str]:
    server = request.app[CONTEXT].server
    return {
        "X-Consul-Index": str(max(1, index)),
        "X-Consul-KnownLeader": "true" if server.known_leader() else "false",
        "X-Consul-LastContact": str(server.last_contact_ms()),
        "X-Consul-Effective-Consistency": consistency,
    }


async def table_read(request: web.Request, current: Callable[[], int], watch: Watch,
                     produce: Callable[[], tuple[int, object]]) -> web.StreamResponse:
    index, wait = parse_blocking(request)
    consistency = parse_consistency(request)
    if index > 0:
        await wait_for(current, watch, index, wait + random.uniform(0, wait / JITTER_FRACTION))
    answer_index, body = produce()
    headers = read_headers(request, answer_index, consistency)
    if isinstance(body, web.StreamResponse):
        body.headers.update(headers)
        return body
    return json_response(request, body, headers=headers)
