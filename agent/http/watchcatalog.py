"""`GET /v1/watch?service=NAME` / `?services`: catalog answers streamed after every change (layer 4).

Contract (the stream framing, heartbeats, disconnect handling and the 410 rule are agent/http/watch.py's):
- `?service=NAME[&index=N]` sends `{"Index", "Service", "Nodes"}` — `Nodes` is exactly the body of
  `GET /v1/health/service/NAME` (no tag/passing filters) — and `?services` sends
  `{"Index", "Services"}` (the body of `GET /v1/catalog/services`). SSE event names: `service`,
  `services`.
- Start: with `index=N` below the answer's current index the current answer is sent first (the
  writes between N and now are coalesced into it: the catalog keeps which keys changed, not old
  answers); with N at or above it, or without `index`, the stream starts quiet at the current index.
  N older than the catalog's change history is `410` with `OldestIndex`.
- Then one frame per applied write that touched the service (or the service list), in apply order:
  the answer is captured synchronously when the write's watchers fire and the one-shot watcher is
  re-armed in the same call, so no write is missed however slow the client. A snapshot restore
  fires every watcher after swapping in the new store, so the capture re-arms on the new store.
  More than `MAX_PENDING` unsent frames ends the stream with an `error` frame (resume with a
  fresh read).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable

from aiohttp import web

from agent.catalog.watch import SERVICES, WatchHandle, service_key
from agent.errors import BadRequest
from agent.http.app import CONTEXT, HttpContext
from agent.http.common import json_response
from agent.http.watch import DISCONNECT_CHECK_SECONDS, HEARTBEAT_SECONDS, _frame, _gone, _start_index

MAX_PENDING = 10_000


def _producer(ctx: HttpContext, name: str | None) -> tuple[str, str, Callable[[], dict]]:
    """(watch key, SSE event name, produce-current-answer) for one service or the service list."""
    if name is None:
        def services() -> dict:
            index, data = ctx.server.store.services()
            return {"Index": index, "Services": data}

        return SERVICES, "services", services

    datacenter = ctx.config.datacenter  # type: ignore[attr-defined]

    def service() -> dict:
        index, rows = ctx.discovery.health_service(name)
        nodes = []
        for n, s, checks in rows:
            node = n.to_api()
            node["Datacenter"] = n.datacenter or datacenter
            nodes.append({"Node": node, "Service": s.to_api(), "Checks": [c.to_api() for c in checks]})
        return {"Index": index, "Service": name, "Nodes": nodes}

    return service_key(name), "service", service


class _Capture:
    """Captures the answer at every write touching `key`, re-arming its one-shot watcher each time."""

    def __init__(self, ctx: HttpContext, key: str, produce: Callable[[], dict]) -> None:
        self._ctx, self._key, self._produce = ctx, key, produce
        self.pending: deque[dict] = deque()
        self.overflow = False
        self.woken = asyncio.Event()
        self._handle: WatchHandle | None = None
        self._closed = False

    def arm(self) -> None:
        self._handle = self._ctx.server.store.watch([self._key], self._fired)

    def _fired(self, index: int) -> None:
        if self._closed:
            return
        if len(self.pending) >= MAX_PENDING:
            self.overflow = True
        else:
            self.pending.append(self._produce())
            self.arm()
        self.woken.set()

    def close(self) -> None:
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()


async def watch_catalog(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    name: str | None = None
    if "service" in request.query:
        name = request.query["service"]
        if not name or any(not ch.isprintable() for ch in name):
            raise BadRequest("Invalid service name")
    key, kind, produce = _producer(ctx, name)
    sse = "text/event-stream" in request.headers.get("Accept", "")
    store = ctx.server.store
    current = store.index_of(key)
    cursor = _start_index(request, current)
    if store.changes_since(cursor) is None:
        floor = store.history_floor
        return json_response(request, {"Error": f"index {cursor} is older than the change history; "
                                                f"resume from {floor} after a fresh read",
                                       "OldestIndex": floor}, status=410)
    capture = _Capture(ctx, key, produce)
    capture.arm()  # armed and the first answer taken with no await between: nothing slips in
    if current > cursor:
        capture.pending.append(produce())
    try:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream" if sse else "application/x-ndjson",
            "Cache-Control": "no-cache", "X-Consul-Index": str(max(1, cursor))})
        await response.prepare(request)
        await _pump(request, response, capture, sse, kind)
    finally:
        capture.close()
    return response


async def _pump(request: web.Request, response: web.StreamResponse, capture: _Capture,
                sse: bool, kind: str) -> None:
    loop = asyncio.get_running_loop()
    while True:
        if capture.pending:
            frames = [_frame(capture.pending.popleft(), sse, kind) for _ in range(len(capture.pending))]
            await response.write(b"".join(frames))
        if capture.overflow:
            await response.write(_frame({"Error": f"watcher fell more than {MAX_PENDING} changes behind"}, sse))
            await response.write_eof()
            return
        capture.woken.clear()
        if capture.pending:
            continue
        heartbeat_at = loop.time() + HEARTBEAT_SECONDS
        while not capture.woken.is_set() and not _gone(request) and loop.time() < heartbeat_at:
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout(min(DISCONNECT_CHECK_SECONDS, heartbeat_at - loop.time())):
                    await capture.woken.wait()
        if _gone(request):
            return
        if not capture.woken.is_set():
            await response.write(b": heartbeat\n\n" if sse else b"\n")
