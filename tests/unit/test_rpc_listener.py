"""The server port multiplexer (agent.rpc): HTTP requests reach the HTTP app, Raft frames the Raft
handler, on one listener; a silent or odd connection never takes it down."""

from __future__ import annotations

import asyncio
import struct

import aiohttp
from aiohttp import web

from agent import rpc
from agent.rpc import ServerPortListener


async def _http_factory() -> tuple[web.AppRunner, object]:
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello {request.method} {request.query_string}")

    app = web.Application()
    app.router.add_route("*", "/v1/hello", hello)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    return runner, runner.server


async def test_http_and_raft_share_the_port() -> None:
    runner, factory = await _http_factory()
    received = bytearray()

    class RaftSide(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            received.extend(data)                      # the sniffed bytes arrive too
            if len(received) == 8:
                self.transport.write(b"ok")  # type: ignore[attr-defined]
                self.transport.close()

    listener = ServerPortListener(RaftSide, factory)  # type: ignore[arg-type]
    port = await listener.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            for method in ("GET", "PUT", "POST", "DELETE"):
                async with session.request(method, f"http://127.0.0.1:{port}/v1/hello?x=1") as resp:
                    assert resp.status == 200
                    assert await resp.text() == f"hello {method} x=1"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack(">IB", 3, 1) + b"abc")
        await writer.drain()
        assert await reader.read() == b"ok"
        writer.close()
        assert bytes(received) == struct.pack(">IB", 3, 1) + b"abc"
    finally:
        listener.close()
        await runner.cleanup()


async def test_raft_connections_are_refused_without_a_raft_handler() -> None:
    runner, factory = await _http_factory()
    listener = ServerPortListener(None, factory)  # type: ignore[arg-type]
    port = await listener.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(struct.pack(">IB", 3, 1) + b"abc")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed
        writer.close()
    finally:
        listener.close()
        await runner.cleanup()


async def test_a_silent_connection_is_closed_and_the_port_keeps_serving(monkeypatch) -> None:
    monkeypatch.setattr(rpc, "SNIFF_TIMEOUT", 0.2)
    runner, factory = await _http_factory()
    listener = ServerPortListener(None, factory)  # type: ignore[arg-type]
    port = await listener.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GE")  # not enough to decide, then silence
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/v1/hello") as resp:
            assert resp.status == 200
    finally:
        listener.close()
        await runner.cleanup()
