"""The HTTP API application: context, error mapping, limits, route registration (layer 4).

Contract: `build_app(ctx)` returns an aiohttp application serving Consul's `/v1` API. Every
response has a Content-Type. Errors map by class (`agent.http.statuses`: `BadRequest`,
`ProblemsError` and check errors → 400, `NotFound` → 404, `PayloadTooLarge` → 413, `NoLeader` →
500 `No cluster leader`); oversized bodies → 413; a wrong method
is 405 with `Allow`; an unknown `/v1` path is 404 `Invalid URL path: not a recognized HTTP API
endpoint`. Anything unexpected is logged with its traceback and answered 500 without one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from agent.discovery import Discovery
from agent.events import EventRing
from agent.http.common import text_response
from agent.http.fastpath import ReadCache
from agent.http.statuses import ERROR_STATUS, status_of
from agent.local.manager import LocalAgent
from agent.server import CatalogServer
from agent.sessions_driver import SessionDriver

if TYPE_CHECKING:
    import aiohttp

    from agent.http.members import GossipAccess
    from agent.remote.servers import ServerPool

log = logging.getLogger("waypost.http")
KNOWN_ERRORS = tuple(cls for cls, _ in ERROR_STATUS)


@dataclass(slots=True)
class HttpContext:
    """What route handlers may use; built by the agent (composition root)."""

    config: object  # agent.config.AgentConfig (kept loose: http never reaches into config loading)
    server: CatalogServer
    discovery: Discovery
    local: LocalAgent
    reload: Callable[[], Awaitable[list[str]]]
    leave: Callable[[], Awaitable[None]]
    self_info: Callable[[], dict]
    members: Callable[[], list[dict]]
    responses: ReadCache = field(default_factory=ReadCache)
    sessions: SessionDriver | None = None  # session TTL timers and lock-delay (KV/session routes)
    events: EventRing = field(default_factory=EventRing)  # user events this agent received
    gossip: GossipAccess | None = None  # the LAN gossip node (members, join, force-leave, keyring)
    pool: ServerPool | None = None  # client agents: the servers requests are forwarded to
    http_session: aiohttp.ClientSession | None = None  # client agents: shared with anti-entropy and DNS


CONTEXT = web.AppKey("context", HttpContext)
MAX_BODY = web.AppKey("max_body", int)


@web.middleware
async def error_middleware(request: web.Request,
                           handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    try:
        return await handler(request)
    except KNOWN_ERRORS as exc:
        return text_response(str(exc), status_of(exc) or 500)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[MAX_BODY]
        return text_response(f"Request body too large: the limit is {limit} bytes", 413)
    except web.HTTPMethodNotAllowed as exc:
        allow = ",".join(["OPTIONS", *sorted(exc.allowed_methods)])
        if request.method == "OPTIONS":
            return web.Response(status=200, headers={"Allow": allow}, content_type="text/plain")
        response = text_response(f"method {request.method} not allowed", 405)
        response.headers["Allow"] = allow
        return response
    except web.HTTPNotFound:
        if request.path.startswith("/v1/"):
            return text_response("Invalid URL path: not a recognized HTTP API endpoint", 404)
        return text_response("Not found", 404)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("internal error serving %s %s", request.method, request.path)
        return text_response("Internal error", 500)


async def root(request: web.Request) -> web.Response:
    return text_response("Waypost Agent: UI disabled. The HTTP API is under /v1/.\n")


def build_app(ctx: HttpContext, *, max_body_bytes: int, scope: str = "full") -> web.Application:
    """`scope`: "full" (a server's client address: the whole API), "cluster" (a server's server
    port: what client agents forward — catalog, health, KV, sessions, ... — never this server's own
    agent endpoints) or "client" (a client agent: its own agent endpoints, the rest forwarded to a
    server through `ctx.pool`)."""
    from agent.http import (
        agent_api,
        catalog,
        event,
        health,
        internal_dns,
        kv,
        members,
        operator,
        ops,
        session,
        snapshot,
        status,
        txn,
        watch,
    )

    app = web.Application(middlewares=[error_middleware], client_max_size=max_body_bytes)
    app[CONTEXT] = ctx
    app[MAX_BODY] = max_body_bytes
    app.router.add_get("/", root)
    own = (agent_api, members, ops, event)
    catalog_api = (catalog, health, status, kv, session, txn, watch, operator, snapshot, internal_dns)
    modules = {"full": own + catalog_api, "cluster": catalog_api, "client": own}[scope]
    for module in modules:
        module.register_routes(app.router)
    if scope == "client":
        from agent.remote.proxy import register_proxy_routes

        assert ctx.pool is not None and ctx.http_session is not None
        register_proxy_routes(app.router, ctx.pool, ctx.http_session, node_name=ctx.local.state.node.node,
                              max_query_time=ctx.config.max_query_time)  # type: ignore[attr-defined]
    return app
