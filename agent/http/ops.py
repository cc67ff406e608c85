"""Operator routes: `/v1/agent/metrics`, `/v1/agent/monitor`, and the request-metrics middleware (layer 4).

Contract:
- `install(app, metrics, hub)` gives the app the agent's `Metrics` and `MonitorHub` and puts
  `metrics_middleware` outermost, so every request routed through aiohttp is observed as the
  sample `api.http` (ms) labelled `method`, `path` (the route template, e.g.
  `/v1/catalog/service/{name}`; `unmatched` for unknown paths) and `code` (the final status;
  499 when the client went away first). Without `install` the routes still answer (empty
  metrics; monitor 404s).
- `GET /v1/agent/metrics` → Consul's JSON shape for the last completed 10 s interval (as Consul's
  inmem sink; see agent.metrics); `?format=prometheus` (or an `Accept` asking for
  `text/plain; version=0.0.4` or OpenMetrics) → Prometheus text, cumulative since start,
  `text/plain; version=0.0.4`.
- `GET /v1/agent/monitor?loglevel=info&logjson=true` streams log lines (one per line, JSON when
  `logjson`) until the client disconnects or the agent stops; an unknown level is a 400. A slow
  client loses lines (counted, and announced in its stream), never slows the agent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.errors import BadRequest, NotFound
from agent.http.common import json_response, query_flag
from agent.logs import MonitorHub, UnknownLogLevel, parse_level
from agent.metrics import Metrics

METRICS = web.AppKey("metrics", Metrics)
MONITOR = web.AppKey("monitor", MonitorHub)
PROMETHEUS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LIVENESS_CHECK = 2.0  # seconds between checks that an idle monitor client is still connected
CLIENT_GONE = "499"


def install(app: web.Application, metrics: Metrics, hub: MonitorHub | None) -> None:
    app[METRICS] = metrics
    if hub is not None:
        app[MONITOR] = hub
    app.middlewares.insert(0, metrics_middleware)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request,
                             handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    started = time.perf_counter()
    code = "500"
    try:
        response = await handler(request)
        code = str(response.status)
        return response
    except web.HTTPException as exc:
        code = str(exc.status)
        raise
    except asyncio.CancelledError:
        code = CLIENT_GONE
        raise
    finally:
        metrics = request.app.get(METRICS)
        if metrics is not None:
            metrics.observe("api.http", (time.perf_counter() - started) * 1000.0,
                            {"method": request.method, "path": _route(request), "code": code})


def wants_prometheus(request: web.Request) -> bool:
    if request.query.get("format", "") == "prometheus":
        return True
    accept = request.headers.get("Accept", "")
    return "application/openmetrics-text" in accept or "version=0.0.4" in accept


async def metrics(request: web.Request) -> web.Response:
    registry = request.app.get(METRICS) or Metrics()
    if wants_prometheus(request):
        return web.Response(body=registry.to_prometheus().encode(), headers={"Content-Type": PROMETHEUS_TYPE})
    return json_response(request, registry.to_json())


async def monitor(request: web.Request) -> web.StreamResponse:
    hub = request.app.get(MONITOR)
    if hub is None:
        raise NotFound("log monitoring is not available on this agent")
    try:
        level = parse_level(request.query.get("loglevel", "info") or "info")
    except UnknownLogLevel as exc:
        raise BadRequest(str(exc)) from None
    as_json = query_flag(request, "logjson")
    sub = hub.subscribe(level, as_json)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    try:
        await response.prepare(request)
        while True:
            try:
                line = await asyncio.wait_for(sub.next(), LIVENESS_CHECK)
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    break  # the client went away while the log was quiet
                continue
            if line is None:
                break
            await response.write(line.encode() + b"\n")
    except (ConnectionError, RuntimeError):
        pass  # the client disconnected mid-write
    finally:
        hub.unsubscribe(sub)
    return response


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/agent/metrics", metrics)
    router.add_get("/v1/agent/monitor", monitor)
