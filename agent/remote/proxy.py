"""The client agent's HTTP pass-through to a server (layer 4: aiohttp routes).

Contract:
- `register_proxy_routes(router, pool, session, *, node_name="", max_query_time=MAX_WAIT)` adds
  one catch-all route, `/v1/{tail}` for every method; register it after the client's own routes
  (more specific routes win in aiohttp's router). Paths under `LOCAL_PREFIXES` (`/v1/agent`,
  `/v1/operator/keyring`, `/v1/event` — user events stay agent-local —, `/v1/internal/dns`) are
  never forwarded: an unknown one is the usual 404, a wrong method the usual 405.
- Everything else goes to a server from `pool`: same method, raw path and query string, the body
  (at most the app's max body; `PUT /v1/snapshot` up to the snapshot limit) and every end-to-end
  header (Content-Type, X-Consul-Token, Accept-Encoding, ...; hop-by-hop headers and Host are
  dropped). The answer's status, headers (X-Consul-Index, X-Consul-KnownLeader, Content-Type,
  Content-Encoding, ...) and body are passed back, the body streamed as it arrives (blocking
  queries, `/v1/watch` streams, snapshots), never decompressed or re-encoded.
- `PUT /v1/session/create` without a `Node` gets this agent's `node_name` (Consul's default: a
  session belongs to the agent it was created on, not to the server that stored it).
- Retries: another server only when the request never reached one (connection refused,
  connect timeout; for GET/HEAD also a connection closed before any answer); never after a
  response started. No server → `NoServers` (500 "No known Consul servers"); a failure after the
  request reached a server → `ServerError` (500 with the reason).
- The upstream read timeout exceeds the longest blocking wait (`max_query_time` + its 1/16
  jitter + margin). A client that disconnects cancels the upstream request within
  `DISCONNECT_CHECK_SECONDS` (aiohttp does not cancel handlers; the transport is checked, as in
  `http.watch`). `Proxy.in_flight` counts forwarded requests in progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from agent.decode_fields import norm
from agent.http.app import MAX_BODY
from agent.http.blocking import JITTER_FRACTION, MAX_WAIT
from agent.http.common import read_body_limited
from agent.http.snapshot import MAX_ARCHIVE_BYTES
from agent.remote.client import CONNECT_SECONDS, ServerError, api_url
from agent.remote.servers import Server, ServerPool, Unreachable

LOCAL_PREFIXES = ("/v1/agent", "/v1/operator/keyring", "/v1/event", "/v1/internal/dns")
DISCONNECT_CHECK_SECONDS = 1.0
READ_MARGIN_SECONDS = 30.0  # beyond the longest blocking wait, for the server's own latency
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                        "trailer", "trailers", "transfer-encoding", "upgrade", "expect", "host",
                        "content-length"})
RESPONSE_DROPPED = HOP_BY_HOP - {"content-length"} | {"date", "server"}
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

log = logging.getLogger("waypost.remote")


def is_local(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in LOCAL_PREFIXES)


def _gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


class Proxy:
    def __init__(self, pool: ServerPool, session: aiohttp.ClientSession, *, node_name: str = "",
                 max_query_time: float = MAX_WAIT) -> None:
        self._pool = pool
        self._session = session
        self._node_name = node_name
        read = max_query_time + max_query_time / JITTER_FRACTION + READ_MARGIN_SECONDS
        self._timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_SECONDS, sock_read=read)
        self.resource: web.AbstractResource | None = None
        self.in_flight = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if is_local(request.path):
            await self._not_here(request)
        body = await self._body(request)
        self.in_flight += 1
        started: list[web.StreamResponse] = []
        forward = asyncio.ensure_future(self._forward(request, body, started))
        try:
            while True:
                done, _ = await asyncio.wait({forward}, timeout=DISCONNECT_CHECK_SECONDS)
                if done:
                    return forward.result()
                if _gone(request):
                    forward.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await forward
                    # nobody reads this answer: the connection is gone
                    return started[0] if started else web.Response(status=499, text="client closed request")
        finally:
            if not forward.done():
                forward.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await forward
            self.in_flight -= 1

    async def _not_here(self, request: web.Request) -> None:
        """A local path no local route took: 405 when another route has it with other methods."""
        allowed: set[str] = set()
        for resource in request.app.router.resources():
            if resource is self.resource:
                continue
            match, methods = await resource.resolve(request)
            if match is None:
                allowed |= methods
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    async def _body(self, request: web.Request) -> bytes:
        limit = MAX_ARCHIVE_BYTES if request.path == "/v1/snapshot" else request.app[MAX_BODY]
        body = await read_body_limited(request, limit, "Request body too large")
        if request.method == "PUT" and request.path == "/v1/session/create" and self._node_name:
            body = self._with_node(body)
        return body

    def _with_node(self, body: bytes) -> bytes:
        if not body.strip():
            return json.dumps({"Node": self._node_name}).encode()
        try:
            parsed = json.loads(body)
        except ValueError:
            return body  # the server answers the 400
        if isinstance(parsed, dict) and not any(isinstance(k, str) and norm(k) == "node" for k in parsed):
            parsed["Node"] = self._node_name
            return json.dumps(parsed).encode()
        return body

    def _headers(self, request: web.Request) -> CIMultiDict[str]:
        return CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)

    async def _open(self, request: web.Request, body: bytes) -> aiohttp.ClientResponse:
        headers = self._headers(request)
        raw_query = request.rel_url.raw_query_string

        async def attempt(server: Server) -> aiohttp.ClientResponse:
            url = api_url(server, request.rel_url.raw_path + (f"?{raw_query}" if raw_query else ""))
            try:
                return await self._session.request(
                    request.method, url, data=body or None, headers=headers, timeout=self._timeout,
                    allow_redirects=False, auto_decompress=False,
                    skip_auto_headers=("Accept-Encoding", "Accept", "User-Agent", "Content-Type"))
            except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
                raise Unreachable(str(exc) or type(exc).__name__) from exc
            except aiohttp.ServerDisconnectedError as exc:
                if request.method in SAFE_METHODS:
                    raise Unreachable("connection closed before an answer") from exc
                raise ServerError(f"rpc error: {server.name} closed the connection: {exc}") from exc
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                raise ServerError(f"rpc error: {server.name}: {exc or type(exc).__name__}") from exc

        return await self._pool.run(attempt)

    async def _forward(self, request: web.Request, body: bytes,
                       started: list[web.StreamResponse]) -> web.StreamResponse:
        upstream = await self._open(request, body)
        try:
            headers = CIMultiDict((k, v) for k, v in upstream.headers.items()
                                  if k.lower() not in RESPONSE_DROPPED)
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason, headers=headers)
            started.append(response)
            await response.prepare(request)
            if request.method != "HEAD":
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
                    # the answer already started (or its reader left): cut the connection short so
                    # the client never takes a truncated body for a whole one
                    log.info("proxied %s %s ended early: %s", request.method, request.path, exc)
                    if request.transport is not None:
                        request.transport.close()
                    return response
            await response.write_eof()
            return response
        finally:
            upstream.release()


def register_proxy_routes(router: web.UrlDispatcher, pool: ServerPool, session: aiohttp.ClientSession, *,
                          node_name: str = "", max_query_time: float = MAX_WAIT) -> Proxy:
    proxy = Proxy(pool, session, node_name=node_name, max_query_time=max_query_time)
    route = router.add_route("*", "/v1/{tail:.*}", proxy.handle)
    proxy.resource = route.resource
    return proxy
