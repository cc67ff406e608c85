"""agent.remote.proxy: a client agent's pass-through of non-agent /v1 requests to a server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from yarl import URL

from agent.http.app import MAX_BODY, error_middleware
from agent.http.common import text_response
from agent.remote.proxy import Proxy, register_proxy_routes
from agent.remote.servers import ServerPool
from tests.unit.remote_fixtures import client_session, dead_port, eventually, in_process_server, member, serve

MAX = 1024 * 1024


@contextlib.asynccontextmanager
async def client_agent(members: list) -> AsyncIterator[tuple[str, Proxy, ServerPool]]:  # type: ignore[type-arg]
    """A client agent's HTTP app: one local route (/v1/agent/self) plus the proxy."""
    async with client_session() as upstream:
        pool = ServerPool(lambda: members, "dc1", rng=random.Random(3))
        app = web.Application(middlewares=[error_middleware], client_max_size=MAX)
        app[MAX_BODY] = MAX

        async def agent_self(request: web.Request) -> web.Response:
            return text_response("local")

        app.router.add_get("/v1/agent/self", agent_self)
        proxy = register_proxy_routes(app.router, pool, upstream, node_name="client1", max_query_time=60.0)
        runner, port = await serve(app)
        try:
            yield f"http://127.0.0.1:{port}", proxy, pool
        finally:
            await runner.cleanup()


class Echo:
    """A fake server that records what reached it."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.release = asyncio.Event()
        self.cancelled = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/v1/echo", self.echo)
        app.router.add_get("/v1/slow", self.slow)
        app.router.add_get("/v1/stream", self.stream)
        app.router.add_put("/v1/session/create", self.echo)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "query": request.rel_url.raw_query_string,
                          "headers": dict(request.headers), "body": (await request.read()).decode()})
        return web.Response(status=201, text="echoed", headers={"X-Consul-Index": "42", "X-Custom": "yes"},
                            content_type="text/plain")

    async def slow(self, request: web.Request) -> web.Response:
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return web.Response(text="late")

    async def stream(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"first\n")
        await self.release.wait()
        await response.write(b"second\n")
        return response


async def test_reads_writes_and_blocking_queries_pass_through() -> None:
    async with in_process_server() as srv, client_agent([member("srv1", srv.port)]) as (url, _, _), \
            client_session() as http:
        async with http.put(f"{url}/v1/kv/app/port", data=b"8080") as r:
            assert r.status == 200 and await r.json() is True
        async with http.get(f"{url}/v1/kv/app/port?raw") as r:
            assert await r.read() == b"8080"
            index = int(r.headers["X-Consul-Index"])
            assert r.headers["X-Consul-KnownLeader"] == "true"
        async with http.get(f"{srv.url}/v1/catalog/nodes") as direct, http.get(f"{url}/v1/catalog/nodes") as proxied:
            assert await proxied.json() == await direct.json()

        async def blocking() -> tuple[float, bytes]:
            started = asyncio.get_running_loop().time()
            async with http.get(f"{url}/v1/kv/app/port?raw&index={index}&wait=20s") as r:
                body = await r.read()
            return asyncio.get_running_loop().time() - started, body

        waiter = asyncio.create_task(blocking())
        await asyncio.sleep(0.3)
        assert not waiter.done()  # blocked on the server
        async with http.put(f"{url}/v1/kv/app/port", data=b"9090") as r:
            assert r.status == 200
        took, body = await asyncio.wait_for(waiter, 10)
        assert body == b"9090" and took < 5

        async with http.get(f"{url}/v1/kv/missing") as r:
            assert r.status == 404
        async with http.get(f"{url}/v1/nonsense") as r:
            assert r.status == 404 and "Invalid URL path" in await r.text()
        async with http.get(f"{url}/v1/catalog/service/web?tag=bad&filter=(((") as r:
            assert r.status == 400  # the server's 400 with its message


async def test_request_and_response_headers_query_and_body() -> None:
    echo = Echo()
    runner, port = await serve(echo.app())
    try:
        async with client_agent([member("echo", port)]) as (url, _, _), client_session() as http:
            headers = {"X-Consul-Token": "secret", "Content-Type": "application/json", "Connection": "keep-alive"}
            raw = URL(f"{url}/v1/echo?a=1&b=%2F&flag", encoded=True)
            async with http.post(raw, data=b'{"x":1}', headers=headers) as r:
                assert r.status == 201 and await r.text() == "echoed"
                assert r.headers["X-Consul-Index"] == "42" and r.headers["X-Custom"] == "yes"
            seen = echo.seen[-1]
            assert seen["method"] == "POST" and seen["query"] == "a=1&b=%2F&flag" and seen["body"] == '{"x":1}'
            assert seen["headers"]["X-Consul-Token"] == "secret"
            assert seen["headers"]["Content-Type"] == "application/json"
            # a session belongs to the agent it is created on
            async with http.put(f"{url}/v1/session/create", data=b'{"Name":"lock"}') as r:
                assert r.status == 201
            assert json.loads(echo.seen[-1]["body"]) == {"Name": "lock", "Node": "client1"}
            async with http.put(f"{url}/v1/session/create", data=b'{"node":"other"}') as r:
                assert r.status == 201
            assert json.loads(echo.seen[-1]["body"]) == {"node": "other"}
            # local paths are never forwarded
            count = len(echo.seen)
            async with http.get(f"{url}/v1/agent/self") as r:
                assert await r.text() == "local"
            async with http.get(f"{url}/v1/agent/nope") as r:
                assert r.status == 404
            async with http.post(f"{url}/v1/agent/self") as r:
                assert r.status == 405 and "GET" in r.headers["Allow"]
            async with http.get(f"{url}/v1/internal/dns/ns") as r:
                assert r.status == 404
            assert len(echo.seen) == count
            async with http.put(f"{url}/v1/echo", data=b"x" * (MAX + 1)) as r:
                assert r.status == 413
    finally:
        await runner.cleanup()


async def test_responses_stream_and_a_client_disconnect_cancels_upstream(caplog) -> None:  # type: ignore[no-untyped-def]
    echo = Echo()
    runner, port = await serve(echo.app(), handler_cancellation=True)
    try:
        async with client_agent([member("echo", port)]) as (url, proxy, _), client_session() as http:
            async with http.get(f"{url}/v1/stream") as r:
                assert await asyncio.wait_for(r.content.readline(), 5) == b"first\n"  # before the rest exists
                echo.release.set()
                assert await r.content.readline() == b"second\n"
            echo.release.clear()

            request = asyncio.create_task(http.get(f"{url}/v1/slow").__aenter__())
            await eventually(lambda: proxy.in_flight == 1)
            request.cancel()  # the client goes away mid blocking query
            with contextlib.suppress(asyncio.CancelledError):
                await request
            await asyncio.wait_for(echo.cancelled.wait(), 5)
            await eventually(lambda: proxy.in_flight == 0)

            # a reader that leaves in the middle of a streamed answer
            async with client_session() as other:
                response = await other.get(f"{url}/v1/stream")
                assert await response.content.readline() == b"first\n"
                response.close()
            await eventually(lambda: proxy.in_flight == 0)
            echo.release.set()
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
    finally:
        await runner.cleanup()


async def test_failover_and_no_servers() -> None:
    async with in_process_server() as srv:
        members = [member("a-down", dead_port()), member("b-up", srv.port)]
        async with client_agent(members) as (url, _, pool), client_session() as http:
            for _ in range(3):
                async with http.get(f"{url}/v1/status/leader") as r:
                    assert r.status == 200
            assert pool.preferred().name == "b-up"  # type: ignore[union-attr]
            members.pop()  # only the dead one is left
            async with http.get(f"{url}/v1/catalog/nodes") as r:
                assert r.status == 500 and await r.text() == "No known Consul servers"
            members.clear()
            async with http.put(f"{url}/v1/kv/x", data=b"1") as r:
                assert r.status == 500 and await r.text() == "No known Consul servers"


async def test_stops_promptly_with_a_request_in_flight() -> None:
    echo = Echo()
    runner, port = await serve(echo.app())
    try:
        async with client_agent([member("echo", port)]) as (url, proxy, _):
            async with aiohttp.ClientSession() as http:
                task = asyncio.create_task(http.get(f"{url}/v1/slow").__aenter__())
                await eventually(lambda: proxy.in_flight == 1)
            # the client app was cleaned up with the request in flight (HTTP drain)
            with contextlib.suppress(BaseException):
                await task
    finally:
        echo.release.set()
        await runner.cleanup()


async def test_many_blocked_requests_do_not_starve_others() -> None:
    echo = Echo()
    runner, port = await serve(echo.app())
    try:
        async with client_agent([member("echo", port)]) as (url, proxy, _), client_session() as http:
            blocked = [asyncio.create_task(http.get(f"{url}/v1/slow").__aenter__()) for _ in range(120)]
            await eventually(lambda: proxy.in_flight == 120)
            async with http.get(f"{url}/v1/echo") as r:  # beyond aiohttp's default 100-connection cap
                assert r.status == 201
            echo.release.set()
            for response in await asyncio.gather(*blocked):
                assert await response.text() == "late"
                response.release()
    finally:
        await runner.cleanup()
