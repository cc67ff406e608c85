"""`GET /v1/watch?prefix=P&index=N`: every KV change under a prefix, in order, streamed (layer 4).

Contract:
- Streams each change with an index above N (`{"Index", "Op": "set"|"delete", "Key", "Entry"}`)
  as newline-delimited JSON (`application/x-ndjson`), or as Server-Sent Events (`id: <index>`,
  `event: kv`, `data: <json>`) when the request accepts `text/event-stream`; SSE clients may
  resume with `Last-Event-ID`. Without `index` the stream starts at the current KV index.
- Nothing is ever skipped: if N is older than the store's bounded change history, the answer is
  `410 Gone` with `{"Error": ..., "OldestIndex": floor}` (resume from `OldestIndex` after a
  fresh read). A stream that falls behind the history mid-way ends with an `error` event.
- Idle streams get a heartbeat every `HEARTBEAT_SECONDS` (an empty line / an SSE comment).
"""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from agent.errors import BadRequest
from agent.http.app import CONTEXT
from agent.http.common import json_response

HEARTBEAT_SECONDS = 15.0


def _start_index(request: web.Request, current: int) -> int:
    raw = request.query.get("index") or request.headers.get("Last-Event-ID", "")
    if not raw:
        return current
    if not raw.isdigit() or len(raw) > 20:
        raise BadRequest("Invalid index")
    return int(raw)


def _frame(event: dict, sse: bool) -> bytes:
    data = json.dumps(event, separators=(",", ":"))
    if sse:
        return f"id: {event.get('Index', '')}\nevent: {'kv' if 'Op' in event else 'error'}\ndata: {data}\n\n".encode()
    return (data + "\n").encode()


def _waker(future: asyncio.Future[int]):  # type: ignore[no-untyped-def]
    def wake(index: int) -> None:
        if not future.done():
            future.set_result(index)

    return wake


async def watch(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
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
            await asyncio.wait_for(woken, HEARTBEAT_SECONDS)
        except TimeoutError:
            await response.write(b": heartbeat\n\n" if sse else b"\n")
        finally:
            handle.cancel()
    await response.write_eof()
    return response


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/watch", watch)
