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

from collections.abc import Callable

from aiohttp import web

from agent.catalog.watch import WatchHandle
from agent.http.app import CONTEXT
from agent.http.blocking import jittered
from agent.http.common import json_response, parse_blocking, parse_consistency, read_headers
from agent.server import wait_for_index

Watch = Callable[[Callable[[int], None]], WatchHandle]


async def table_read(request: web.Request, current: Callable[[], int], watch: Watch,
                     produce: Callable[[], tuple[int, object]]) -> web.StreamResponse:
    index, wait = parse_blocking(request)
    consistency = parse_consistency(request)
    await request.app[CONTEXT].server.read_barrier(consistency)
    if index > 0:
        await wait_for_index(current, watch, index, jittered(wait))
    answer_index, body = produce()
    headers = read_headers(request, answer_index, consistency)
    if isinstance(body, web.StreamResponse):
        body.headers.update(headers)
        return body
    return json_response(request, body, headers=headers)
