"""`/v1/catalog/*` routes (reference §2) (layer 4).

Contract: reads are blocking queries keyed on the store's watch keys; writes decode the body into
a catalog command and apply it through Raft, answering `true`. Unknown service → `[]`, unknown
node → `null` (node) or `{"Node":null,"Services":null}` (node-services), as Consul does.
"""

from __future__ import annotations

from aiohttp import web

from agent.decode import decode_catalog_deregister, decode_catalog_register
from agent.errors import BadRequest
from agent.http.app import CONTEXT
from agent.http.common import (
    apply_filter,
    blocking_read,
    json_response,
    node_meta_param,
    read_json_object,
    tags_param,
)
from agent.types import service_node_api


def _check_dc(request: web.Request) -> None:
    ctx = request.app[CONTEXT]
    dc = request.query.get("dc", "")
    if dc and dc != ctx.config.datacenter:
        raise web.HTTPInternalServerError(text="No path to datacenter", content_type="text/plain")


async def register(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    command = decode_catalog_register(await read_json_object(request), ctx.config.datacenter)
    await ctx.server.apply(command)
    return json_response(request, True)


async def deregister(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    command = decode_catalog_deregister(await read_json_object(request))
    await ctx.server.apply(command)
    return json_response(request, True)


async def datacenters(request: web.Request) -> web.Response:
    return json_response(request, [request.app[CONTEXT].config.datacenter])


async def nodes(request: web.Request) -> web.Response:
    _check_dc(request)
    server = request.app[CONTEXT].server
    meta = node_meta_param(request)

    def produce() -> tuple[int, object]:
        store = server.store  # per answer: a snapshot restore swaps the store
        index, rows = store.nodes()
        items = [n.to_api() for n in rows if all(n.meta.get(k) == v for k, v in meta.items())]
        return index, apply_filter(request, items)

    return await blocking_read(request, ["nodes"], produce)


async def services(request: web.Request) -> web.Response:
    _check_dc(request)
    ctx = request.app[CONTEXT]
    meta = node_meta_param(request)
    filtered = bool(meta) or "filter" in request.query

    def produce() -> tuple[int, object]:
        store = ctx.server.store
        index, names = store.services()
        if not filtered:
            return index, names
        # node-meta / filter apply per instance, then tags are merged per service name
        out: dict[str, list[str]] = {}
        for name in names:
            _, rows = ctx.discovery.catalog_service(name, node_meta=meta)
            items = apply_filter(request, [service_node_api(n, s) for n, s in rows])
            if items:
                out[name] = sorted({t for item in items for t in item["ServiceTags"]})
        return index, out

    return await blocking_read(request, ["services", "nodes"] if filtered else ["services"], produce)


async def service(request: web.Request) -> web.Response:
    _check_dc(request)
    ctx = request.app[CONTEXT]
    name = request.match_info["name"]
    tags = tags_param(request)
    meta = node_meta_param(request)

    def produce() -> tuple[int, object]:
        index, rows = ctx.discovery.catalog_service(name, tags, meta)
        return index, apply_filter(request, [service_node_api(n, s) for n, s in rows])

    return await blocking_read(request, [f"service.{name}"], produce)


async def node(request: web.Request) -> web.Response:
    _check_dc(request)
    server = request.app[CONTEXT].server
    name = request.match_info["name"]

    def produce() -> tuple[int, object]:
        store = server.store  # per answer: a snapshot restore swaps the store
        index, found, rows = store.node(name)
        if found is None:
            return index, None
        items = apply_filter(request, [s.to_api() for s in rows])
        return index, {"Node": found.to_api(), "Services": {item["ID"]: item for item in items}}

    return await blocking_read(request, [f"node.{name}"], produce)


async def node_services(request: web.Request) -> web.Response:
    _check_dc(request)
    server = request.app[CONTEXT].server
    name = request.match_info.get("name", "")
    if not name:
        raise BadRequest("Missing node name")

    def produce() -> tuple[int, object]:
        store = server.store  # per answer: a snapshot restore swaps the store
        index, found, rows = store.node(name)
        if found is None:
            return index, {"Node": None, "Services": None}
        return index, {"Node": found.to_api(), "Services": apply_filter(request, [s.to_api() for s in rows])}

    return await blocking_read(request, [f"node.{name}"], produce)


async def missing_name(request: web.Request) -> web.Response:
    kind = "node" if "node" in request.path else "service"
    raise BadRequest(f"Missing {kind} name")


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_put("/v1/catalog/register", register)
    router.add_put("/v1/catalog/deregister", deregister)
    router.add_get("/v1/catalog/datacenters", datacenters)
    router.add_get("/v1/catalog/nodes", nodes)
    router.add_get("/v1/catalog/services", services)
    router.add_get("/v1/catalog/service/{name}", service)
    router.add_get("/v1/catalog/service/", missing_name)
    router.add_get("/v1/catalog/node/{name}", node)
    router.add_get("/v1/catalog/node/", missing_name)
    router.add_get("/v1/catalog/node-services/{name}", node_services)
    router.add_get("/v1/catalog/node-services/", missing_name)



