"""`GET /v1/watch?prefix=P&index=N`: every KV change under a prefix, in order, streamed (layer 4).

Contract:
- Streams each change with an index above N (`{"Index", "Op": "set"|"delete", "Key", "Entry"}`)
  as newline-delimited JSON (`application/x-ndjson`), or as Server-Sent Events (`id: <index>`,
  `event: kv`, `data: <json>`) when the request accepts `text/event-stream`; SSE clients may
  resume with `Last-Event-ID`. Without `index` the stream starts at the current KV index.
- Nothing is ever skipped: if N is older than the store's bounded change history, the answer is
  `410 Gone` with `{"Error": ..., "OldestIndex": floor}` (resume from `OldestIndex` after a
  fresh read). A stream that falls behind the history mid-way ends with an `error` event.
- Idle streams get a heartbeat every `HEARTBEAT_SECONDS` (an empty line / an SSE comment); a
  stream whose client disconnected ends within `DISCONNECT_CHECK_SECONDS`.
- `?service=NAME` streams that service's health answer (`/v1/health/service/NAME`'s body) as
  `{"Index", "Service", "Nodes"}` after every catalog write that touched it, and `?services` the
  catalog's service map as `{"Index", "Services"}` (SSE events `service` / `services`); see
  agent/http/watchcatalog.py. Each answer is captured when its write is applied, so none is lost
  between writes; the catalog's change log gives the same 410 rule for an `index` that is too old.
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from agent.errors import BadRequest
from agent.http.app import CONTEXT
from agent.http.common import json_response

HEARTBEAT_SECONDS = 15.0
DISCONNECT_CHECK_SECONDS = 1.0  # how soon a stream whose client went away is ended


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def _start_index(request: web.Request, current: int) -> int:
    raw = request.query.get("index") or request.headers.get("Last-Event-ID", "")
    if not raw:
        return current
    if not raw.isdigit() or len(raw) > 20:
        raise BadRequest("Invalid index")
    return int(raw)


def _frame(event: dict, sse: bool, kind: str = "kv") -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    if sse:
        name = "error" if "Error" in event else kind
        return f"id: {event.get('Index', '')}\nevent: {name}\ndata: {data}\n\n".encode()
    return (data + "\n").encode()


def _waker(future: asyncio.Future[int]):  # type: ignore[no-untyped-def]
    def wake(index: int) -> None:
        if not future.done():
            future.set_result(index)

    return wake


async def watch(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    if "service" in request.query or "services" in request.query:
        from agent.http.watchcatalog import watch_catalog

        return await watch_catalog(request)
    prefix = request.query.get("prefix", "")
    if any(not ch.isprintable() for ch in prefix):
        raise BadRequest("Invalid prefix: contains unprintable characters")
    sse = "text/event-stream" in request.headers.get("Accept", "")
    cursor = _start_index(request, ctx.server.fsm.kv.table_index)
    if ctx.server.fsm.kv.events_since(cursor, prefix) is None:
        floor = ctx.server.fsm.kv.history_floor
        return json_response(request, {"Error": f"index {cursor} is older than the change history; "
                                                f"resume from {floor} after a fresh read",
                                       "OldestIndex": floor}, status=410)
    response = web.StreamResponse(headers={
        "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
        "Cache-Control": "no-cache", "X-Consul-Index": str(max(1, cursor))})
    await response.prepare(request)
    loop = asyncio.get_running_loop()
    while True:
        kv = ctx.server.fsm.kv  # replaced on a snapshot restore
        events, upto = kv.events_since(cursor, prefix), kv.table_index
        if events is None:
            await response.write(_frame({"Error": "change history no longer reaches the stream's index",
                                         "OldestIndex": kv.history_floor}, sse))
            break
        if events:
            await response.write(b"".join(_frame(e.to_api(), sse) for e in events))
        cursor = max(cursor, upto)  # every change up to the table index has been seen
        woken: asyncio.Future[int] = loop.create_future()
        handle = kv.watch(_waker(woken), prefixes=[prefix])
        try:
            heartbeat_at = loop.time() + HEARTBEAT_SECONDS
            while not woken.done() and not _gone(request) and loop.time() < heartbeat_at:
                await asyncio.wait({woken}, timeout=min(DISCONNECT_CHECK_SECONDS, heartbeat_at - loop.time()))
        finally:
            handle.cancel()
        if _gone(request):
            return response
        if not woken.done():
            await response.write(b": heartbeat\n\n" if sse else b"\n")
    await response.write_eof()
    return response


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/watch", watch)
