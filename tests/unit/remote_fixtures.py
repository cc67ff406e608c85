"""Shared pieces of the tests/unit/test_remote_*.py tests: an in-process single-node server
(a real CatalogServer behind the real `build_app`) on 127.0.0.1:0, gossip Members pointing at it,
and ports nothing listens on."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from agent.config import load_config
from agent.discovery import Discovery
from agent.gossip.messages import Member, MemberState
from agent.http.app import HttpContext, build_app
from agent.remote.client import make_session
from agent.server import CatalogServer
from agent.types import Node
from agent.version import VERSION


def member(name: str, port: int, *, role: str = "consul", dc: str = "dc1", state: MemberState = MemberState.ALIVE,
           address: str = "127.0.0.1") -> Member:
    tags = {"role": role, "dc": dc, "id": name, "build": f"{VERSION}:waypost"}
    if role == "consul":
        tags["port"] = str(port)
    return Member(name=name, address=address, port=8301, tags=tags, state=state, incarnation=1, state_changed=0.0)


def dead_port() -> int:
    """A loopback port nothing listens on (bound, then closed: connecting is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def serve(app: web.Application, **runner_kwargs: object) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None, handle_signals=False, **runner_kwargs)  # type: ignore[arg-type]
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port


@dataclass
class InProcessServer:
    server: CatalogServer
    discovery: Discovery
    config: object
    port: int
    node: Node

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.asynccontextmanager
async def in_process_server(name: str = "srv1") -> AsyncIterator[InProcessServer]:
    config = load_config(["-dev", "-node", name]).config
    server = CatalogServer("127.0.0.1:0")
    node = Node(node=name, address="127.0.0.1", id=f"id-{name}", datacenter=config.datacenter,
                meta={"consul-network-segment": "", "consul-version": VERSION})
    server.register_self(node, 8300, VERSION)
    task = asyncio.create_task(server.run(), name="raft")
    discovery = Discovery(server)

    async def nothing() -> None:
        return None

    async def no_reload() -> list[str]:
        return []

    ctx = HttpContext(config=config, server=server, discovery=discovery, local=None,  # type: ignore[arg-type]
                      reload=no_reload, leave=nothing, self_info=dict, members=list)
    runner, port = await serve(build_app(ctx, max_body_bytes=config.http_config.max_request_body_bytes))
    try:
        yield InProcessServer(server, discovery, config, port, node)
    finally:
        await runner.cleanup()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


@contextlib.asynccontextmanager
async def client_session() -> AsyncIterator[aiohttp.ClientSession]:
    session = make_session()
    try:
        yield session
    finally:
        await session.close()


async def eventually(predicate, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll `predicate()` until it is true, failing after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)




def dns_query(name: str, qtype: str = "A") -> bytes:
    from dnslib import DNSRecord

    return bytes(DNSRecord.question(name, qtype).pack())
