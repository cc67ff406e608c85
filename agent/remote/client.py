"""RemoteCatalog: anti-entropy's catalog access on a client agent, over a server's HTTP API (layer 3).

Contract:
- `RemoteCatalog(pool, session)` implements `agent.local.antientropy.CatalogAccess`:
  `read_node(node, scope)` reads `GET /v1/catalog/node/:node` and `GET /v1/health/node/:node`
  from one server (default consistency: the leader's view, as Consul's anti-entropy) into a
  `RemoteNode` (all of it, or only the rows in `scope`); `apply(cmd)` sends a `RegisterCommand`
  / `DeregisterCommand` as `PUT /v1/catalog/register|deregister` with Consul's JSON
  (`catalog_json`). Other commands raise `BadRequest` (a client agent writes nothing else).
  `alias_statuses(node, service_id)` is the alias-check source (`checks.probes.alias`).
- Errors: a server that cannot be reached (connection refused or reset, timeouts, 502/503/504)
  → the next server (`ServerPool.run`; these requests are idempotent); none → `NoServers`. A 4xx
  → `BadRequest` with the server's text (not retried); another 5xx (e.g. "No cluster leader") →
  `ServerError` with the server's text (not retried: anti-entropy retries with backoff).
- `make_session()` builds the shared ClientSession (keep-alive, no connection cap).
- `request_json(pool, session, method, path, ...)` is the shared one-request helper (also used by
  `remote.dns`): JSON in, JSON out, the errors above; `none_on_404=True` turns a 404 into None.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
from yarl import URL

from agent.catalog.commands import Command, DeregisterCommand, RegisterCommand
from agent.errors import BadRequest, NoLeader
from agent.local.state import RemoteNode, SyncScope
from agent.remote.catalog_json import (
    MalformedAnswer,
    check_from_api,
    deregister_body,
    node_from_api,
    register_body,
    service_from_api,
)
from agent.remote.servers import Server, ServerPool, Unreachable
from checks.definition import Status

CONNECT_SECONDS = 5.0  # a server that does not accept within this is tried no further for this request
REQUEST_SECONDS = 30.0  # a write waits for a leader up to the server's hold timeout (7 s) plus forwarding
GATEWAY_STATUSES = frozenset({502, 503, 504})  # answered by something in front of an unreachable server


def make_session() -> aiohttp.ClientSession:
    """The one ClientSession a client agent should share between anti-entropy, the proxy and DNS:
    keep-alive, and no cap on connections (aiohttp's default of 100 would let 100 proxied blocking
    queries, each holding a connection for up to 10 minutes, stall every other request)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                 timeout=aiohttp.ClientTimeout(total=None, connect=CONNECT_SECONDS))


class ServerError(NoLeader):
    """A server answered a 5xx (e.g. "No cluster leader"); HTTP maps it like `NoLeader`: 500 with
    the server's text."""


def api_url(server: Server, path: str, query: dict[str, str] | None = None) -> URL:
    """`path` must already be percent-encoded (see `segment`)."""
    url = URL(server.url + path, encoded=True)
    return url.with_query(query) if query else url


def segment(value: str) -> str:
    """One path segment, percent-encoded (node names may hold any character)."""
    return quote(value, safe="")


async def request_json(pool: ServerPool, session: aiohttp.ClientSession, method: str, path: str, *,
                       query: dict[str, str] | None = None, body: object = None,
                       timeout: aiohttp.ClientTimeout | None = None, none_on_404: bool = False,
                       on_404: Callable[[aiohttp.ClientResponse, str], Exception | None] | None = None) -> object:
    timeout = timeout or aiohttp.ClientTimeout(total=REQUEST_SECONDS, connect=CONNECT_SECONDS)

    async def attempt(server: Server) -> object:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else None
        try:
            async with session.request(method, api_url(server, path, query), data=data, headers=headers,
                                       timeout=timeout) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise Unreachable(str(exc) or type(exc).__name__) from exc
        if response.status in GATEWAY_STATUSES:
            raise Unreachable(f"HTTP {response.status}")
        if response.status == 404 and on_404 is not None:
            error = on_404(response, text)
            if error is not None:
                raise error
        if response.status == 404 and none_on_404:
            return None
        if 400 <= response.status < 500:
            raise BadRequest(text.strip() or f"HTTP {response.status}")
        if response.status >= 500:
            raise ServerError(text.strip() or f"HTTP {response.status}")
        try:
            return json.loads(text) if text.strip() else None
        except ValueError as exc:
            raise MalformedAnswer(f"{server.name} answered {method} {path} with invalid JSON") from exc

    return await pool.run(attempt)


class RemoteCatalog:
    def __init__(self, pool: ServerPool, session: aiohttp.ClientSession) -> None:
        self._pool = pool
        self._session = session

    async def read_node(self, node: str, scope: SyncScope | None = None) -> RemoteNode:
        name = segment(node)
        found = await request_json(self._pool, self._session, "GET", f"/v1/catalog/node/{name}")
        checks = await request_json(self._pool, self._session, "GET", f"/v1/health/node/{name}")
        if found is not None and not isinstance(found, dict):
            raise MalformedAnswer("catalog node answer is not an object")
        if not isinstance(checks, list):
            raise MalformedAnswer("health node answer is not a list")
        remote = RemoteNode(None)
        if found:
            remote.node = node_from_api(found.get("Node") or {})
            services = found.get("Services") or {}
            if not isinstance(services, dict):
                raise MalformedAnswer("catalog node services are not an object")
            for row in services.values():
                service = service_from_api(row)
                remote.services[service.id] = service
        for row in checks:
            check = check_from_api(row)
            remote.checks[check.check_id] = check
        if scope is not None:
            remote.node = remote.node if scope.node else None
            remote.services = {k: v for k, v in remote.services.items() if k in scope.services}
            remote.checks = {k: v for k, v in remote.checks.items() if k in scope.checks}
        return remote

    async def alias_statuses(self, node: str, service_id: str) -> list[Status] | None:
        """`checks.probes.alias.AliasSource` on a client agent (as `Discovery.alias_statuses` on a
        server): the statuses of the node's checks plus, with `service_id`, that service's own;
        None when the node (or that service on it) is not in the catalog."""
        remote = await self.read_node(node)
        if remote.node is None or (service_id and service_id not in remote.services):
            return None
        return [c.status for c in remote.checks.values() if not c.service_id or c.service_id == service_id]

    async def apply(self, command: Command) -> object:
        if isinstance(command, RegisterCommand):
            return await request_json(self._pool, self._session, "PUT", "/v1/catalog/register",
                                      body=register_body(command))
        if isinstance(command, DeregisterCommand):
            return await request_json(self._pool, self._session, "PUT", "/v1/catalog/deregister",
                                      body=deregister_body(command))
        raise BadRequest(f"a client agent does not write {type(command).__name__} to the catalog")
