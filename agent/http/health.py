"""`/v1/health/*` routes (reference §3) (layer 4).

Contract: blocking reads; empty results are `[]`; `?passing` drops an instance when any of its
checks (service or node level) is not passing; bad `?passing` values and unknown states are 400.
"""

from __future__ import annotations

from aiohttp import web

from agent.errors import BadRequest
from agent.http.app import CONTEXT
from agent.http.catalog import _check_dc
from agent.http.common import apply_filter, blocking_read, node_meta_param, query_flag, tags_param

STATES = frozenset({"any", "passing", "warning", "critical"})


async def service(request: web.Request) -> web.Response:
    _check_dc(request)
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    tags = tags_param(request)
    meta = node_meta_param(request)
    passing = query_flag(request, "passing")
    datacenter = ctx.config.datacenter

    def produce() -> tuple[int, object]:
        index, rows = ctx.discovery.health_service(name, tags, passing, meta)
        items = [
            {"Node": n.to_api(), "Service": s.to_api(), "Checks": [c.to_api() for c in checks]}
            for n, s, checks in rows
        ]
        for item, (n, _, _) in zip(items, rows, strict=True):
            item["Node"]["Datacenter"] = n.datacenter or datacenter
        return index, apply_filter(request, items)

    return await blocking_read(request, [f"service.{name}"], produce)


async def node(request: web.Request) -> web.Response:
    _check_dc(request)
    server = request.app[CONTEXT].server
    name = request.match_info["name"]

    def produce() -> tuple[int, object]:
        store = server.store  # per answer: a snapshot restore swaps the store
        index, rows = store.node_checks(name)
        return index, apply_filter(request, [c.to_api() for c in rows])

    return await blocking_read(request, [f"node.{name}"], produce)


async def checks(request: web.Request) -> web.Response:
    _check_dc(request)
    server = request.app[CONTEXT].server
    name = request.match_info["name"]
    meta = node_meta_param(request)

    def produce() -> tuple[int, object]:
        store = server.store  # per answer: a snapshot restore swaps the store
        index, rows = store.service_checks(name)
        if meta:
            nodes = {n.node: n for n in store.nodes()[1]}
            rows = [c for c in rows
                    if c.node in nodes and all(nodes[c.node].meta.get(k) == v for k, v in meta.items())]
        return index, apply_filter(request, [c.to_api() for c in rows])

    return await blocking_read(request, [f"service.{name}"], produce)


async def state(request: web.Request) -> web.Response:
    _check_dc(request)
    server = request.app[CONTEXT].server
    wanted = request.match_info["state"]
    if wanted not in STATES:
        raise BadRequest(f'Invalid state "{wanted}": must be one of any, passing, warning, critical')

    def produce() -> tuple[int, object]:
        store = server.store  # per answer: a snapshot restore swaps the store
        index, rows = store.checks_in_state(wanted)
        return index, apply_filter(request, [c.to_api() for c in rows])

    return await blocking_read(request, ["checks"], produce)


async def missing(request: web.Request) -> web.Response:
    what = {"node": "node name", "checks": "service name", "service": "service name",
            "state": "check state"}[request.path.rstrip("/").rsplit("/", 1)[-1]]
    raise BadRequest(f"Missing {what}")


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/health/service/{name}", service)
    router.add_get("/v1/health/node/{name}", node)
    router.add_get("/v1/health/checks/{name}", checks)
    router.add_get("/v1/health/state/{state}", state)
    for kind in ("service", "node", "checks", "state"):
        router.add_get(f"/v1/health/{kind}/", missing)
