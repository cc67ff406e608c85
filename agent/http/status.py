"""`/v1/status/*` routes (reference §6.2) (layer 4): the Raft leader and peers as `ip:port`."""

from __future__ import annotations

from aiohttp import web

from agent.http.app import CONTEXT
from agent.http.common import json_response


async def leader(request: web.Request) -> web.Response:
    return json_response(request, request.app[CONTEXT].server.leader_address())


async def peers(request: web.Request) -> web.Response:
    return json_response(request, request.app[CONTEXT].server.peers())


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/status/leader", leader)
    router.add_get("/v1/status/peers", peers)
