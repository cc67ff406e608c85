"""The fast path's plain KV write (agent.http.fastkv): which requests it may take, and that the
key it takes is exactly the key aiohttp's route would give the KV handler."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from agent.http.fastkv import KV_MAX_VALUE_SIZE, PlainPut, http_reply, key_problem, plain_kv_put

MAX_BODY = 1 << 20


def head(target: str, *headers: str) -> bytes:
    return "\r\n".join([f"PUT {target} HTTP/1.1", "Host: x", *headers]).encode()


def test_a_plain_put_is_taken_with_its_length() -> None:
    assert plain_kv_put(head("/v1/kv/bench/1", "Content-Length: 256"), MAX_BODY) == PlainPut("bench/1", 256)
    assert plain_kv_put(head("/v1/kv/a", "content-length:7"), MAX_BODY) == PlainPut("a", 7)
    assert plain_kv_put(head("/v1/kv/folder/"), MAX_BODY) == PlainPut("folder/", 0)   # no body: empty value
    assert plain_kv_put(head("/v1/kv/x", f"Content-Length: {KV_MAX_VALUE_SIZE}"), MAX_BODY) == PlainPut(
        "x", KV_MAX_VALUE_SIZE)


@pytest.mark.parametrize("request_head", [
    head("/v1/kv/a?cas=0", "Content-Length: 1"),             # any query string: flags, cas, acquire, pretty
    head("/v1/kv/a%2Fb", "Content-Length: 1"),               # escapes: aiohttp decodes
    head("/v1/kv/", "Content-Length: 1"),                    # missing key: aiohttp's 400
    head("/v1/kv/a/../b", "Content-Length: 1"),              # dot segments: kv's 400
    head("/v1/kv/./a", "Content-Length: 1"),
    head("/v1/kv/a b", "Content-Length: 1"),
    head("/v1/kv/a", "Content-Length: 1", "Content-Length: 2"),
    head("/v1/kv/a", "Content-Length: -1"),
    head("/v1/kv/a", f"Content-Length: {KV_MAX_VALUE_SIZE + 1}"),   # aiohttp's 413
    head("/v1/kv/a", "Transfer-Encoding: chunked"),
    head("/v1/kv/a", "Content-Length: 1", "Expect: 100-continue"),
    head("/v1/kv/a", "Content-Length: 1", "Connection: close"),
    head("/v1/kv/a", "Upgrade: h2c"),
    b"PUT /v1/kv/a HTTP/1.0\r\nContent-Length: 1",
    b"POST /v1/kv/a HTTP/1.1\r\nContent-Length: 1",
    b"PUT /v1/kvx HTTP/1.1",
])
def test_anything_else_is_left_to_aiohttp(request_head: bytes) -> None:
    assert plain_kv_put(request_head, MAX_BODY) is None


def test_a_smaller_http_body_limit_is_aiohttps_to_enforce() -> None:
    assert plain_kv_put(head("/v1/kv/a", "Content-Length: 2000"), 1024) is None


def test_key_problems() -> None:
    assert key_problem("a/b", "a/b") == ""
    assert "unprintable" in key_problem("a\x00", "a\x00")
    assert "'..'" in key_problem("b", "/v1/kv/a/../b")


async def test_the_fast_key_is_the_key_aiohttps_route_gives() -> None:
    keys: list[str] = []

    async def put(request: web.Request) -> web.Response:
        keys.append(request.match_info["key"])
        return web.Response(text="true")

    app = web.Application()
    app.router.add_put("/v1/kv/{key:.*}", put)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    raw_keys = ["a", "a/b/c", "a//b", "trailing/", "-._~!$&'()*+,;=:@", "UPPER/lower/123", "a/.b/c.", "..a"]
    try:
        for raw in raw_keys:
            request = head(f"/v1/kv/{raw}", "Content-Length: 0")
            taken = plain_kv_put(request, MAX_BODY)
            assert taken is not None, raw
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request + b"\r\n\r\n")
            await reader.readuntil(b"true")
            writer.close()
            assert keys[-1] == taken.key, raw
    finally:
        await runner.cleanup()


def test_http_reply_is_a_complete_response() -> None:
    reply = http_reply(500, b"No cluster leader", b"text/plain; charset=utf-8")
    head_part, _, body = reply.partition(b"\r\n\r\n")
    assert head_part.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"\r\nContent-Length: 17" in head_part and body == b"No cluster leader"
