"""`/v1/internal/dns/*` on servers: DNS lookups for client agents (layer 4).

Contract: each endpoint runs this server's own `DnsLookup` (the read path its DNS listener uses,
with the same `allow_stale` / `max_stale` freshness rule) and answers JSON (`remote.dns_json`):
- `GET /v1/internal/dns/service/{name}?tag=&dc=` → list of service endpoints (with status);
- `GET /v1/internal/dns/node/{name}?dc=` → node record; `GET /v1/internal/dns/ptr/{address}` →
  PTR owner; `GET /v1/internal/dns/ns` → list of name-server node records.
A lookup answering None is a 404 with the body `null`; an unknown datacenter is a 404 carrying
the `UNKNOWN_DC_HEADER` header (value: the datacenter); no leader when one is needed → 500.
Names are matched as DNS does (case-insensitively). One `DnsLookup` per application, made on first
use (its name maps are rebuilt only when the catalog changes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from agent.discovery import DnsLookup
from agent.dns_adapter import freshness_barrier
from agent.http.app import CONTEXT
from agent.http.common import json_response
from agent.remote.dns_json import UNKNOWN_DC_HEADER, endpoint_to_json, node_to_json, ptr_to_json
from dns.lookup import UnknownDatacenter

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _dc(request: web.Request) -> str | None:
    return request.query.get("dc") or None


class _Endpoints:
    def __init__(self) -> None:
        self._lookup: DnsLookup | None = None

    def lookup(self, request: web.Request) -> DnsLookup:
        if self._lookup is None:
            ctx = request.app[CONTEXT]
            self._lookup = DnsLookup(ctx.discovery, ctx.config.datacenter,
                                     freshness_barrier(ctx.config, ctx.server))  # type: ignore[arg-type]
        return self._lookup

    async def service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"].lower()
        found = await self.lookup(request).service_endpoints(name, request.query.get("tag") or None, _dc(request))
        if found is None:
            return json_response(request, None, status=404)
        return json_response(request, [endpoint_to_json(e) for e in found])

    async def node(self, request: web.Request) -> web.Response:
        found = await self.lookup(request).node(request.match_info["name"].lower(), _dc(request))
        if found is None:
            return json_response(request, None, status=404)
        return json_response(request, node_to_json(found))

    async def ptr(self, request: web.Request) -> web.Response:
        found = await self.lookup(request).ptr(request.match_info["address"])
        if found is None:
            return json_response(request, None, status=404)
        return json_response(request, ptr_to_json(found))

    async def ns(self, request: web.Request) -> web.Response:
        return json_response(request, [node_to_json(n) for n in await self.lookup(request).name_servers()])


def _unknown_dc(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except UnknownDatacenter as exc:
            datacenter = str(exc.args[0]) if exc.args else ""
            return json_response(request, {"Error": "No path to datacenter", "Datacenter": datacenter},
                                 status=404, headers={UNKNOWN_DC_HEADER: datacenter})

    return wrapped


def register_routes(router: web.UrlDispatcher) -> None:
    endpoints = _Endpoints()  # one per application (build_app calls this once per app)
    router.add_get("/v1/internal/dns/service/{name}", _unknown_dc(endpoints.service))
    router.add_get("/v1/internal/dns/node/{name}", _unknown_dc(endpoints.node))
    router.add_get("/v1/internal/dns/ptr/{address}", _unknown_dc(endpoints.ptr))
    router.add_get("/v1/internal/dns/ns", _unknown_dc(endpoints.ns))
