"""Client-mode overhead benchmark, in one process (not run by CI).

Usage: .venv/bin/python tests/bench/bench_remote.py [--count 2000]

Method: an in-process single-node server (tests/unit/remote_fixtures.py: a real CatalogServer behind
the real build_app, on 127.0.0.1:0) holding `web` with 3 instances; a client side in the same
event loop with one keep-alive ClientSession. Sequentially, `--count` times each, it times:
  - direct:  GET /v1/health/service/web on the server;
  - proxied: the same request through a client agent's proxy (agent.remote.proxy);
  - remote lookup: RemoteDnsLookup.service_endpoints("web") (GET /v1/internal/dns/service/web);
  - local lookup: the server's own DnsLookup.service_endpoints("web") (no HTTP: the floor);
  - dns: `A web.service.consul` over UDP to a DnsServer whose Lookup is the RemoteDnsLookup.
Both sides share one event loop and one CPU, so each figure is the whole round trip's CPU cost.
Reported: p50 / p99 in ms and requests per second.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiohttp import web

from agent.catalog.commands import RegisterCommand
from agent.discovery import DnsLookup
from agent.http.app import MAX_BODY, error_middleware
from agent.remote.dns import RemoteDnsLookup
from agent.remote.proxy import register_proxy_routes
from agent.remote.servers import ServerPool
from agent.types import HealthCheck, Node, NodeService
from checks.definition import Status
from dns.config import DnsConfig
from dns.server import DnsServer
from tests.unit.remote_fixtures import client_session, dns_query, in_process_server, member, serve, udp_ask


async def timed(label: str, count: int, call: Callable[[], Awaitable[object]]) -> None:
    samples = []
    for _ in range(min(50, count)):
        await call()  # warm-up: connections, caches
    started = time.perf_counter()
    for _ in range(count):
        t0 = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - t0) * 1000)
    took = time.perf_counter() - started
    samples.sort()
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    print(f"{label:16s} p50 {statistics.median(samples):6.2f} ms   p99 {p99:6.2f} ms   {count / took:7.0f}/s")


async def main(count: int) -> None:
    async with in_process_server() as srv, client_session() as session:
        for i in range(1, 4):
            node = Node(node=f"host{i}", address=f"10.0.0.{i}", datacenter="dc1")
            check = HealthCheck(node=node.node, check_id="serfHealth", name="serf", status=Status.PASSING)
            await srv.server.apply(RegisterCommand(node=node, service=NodeService(id=f"web-{i}", service="web",
                                                                                 port=80), checks=[check]))
        pool = ServerPool(lambda: [member("srv1", srv.port)], "dc1", rng=random.Random(1))
        app = web.Application(middlewares=[error_middleware])
        app[MAX_BODY] = 1 << 20
        register_proxy_routes(app.router, pool, session, node_name="client1")
        runner, port = await serve(app)
        remote = RemoteDnsLookup(pool, session, "dc1")
        local = DnsLookup(srv.discovery, "dc1")
        dns = DnsServer(DnsConfig(datacenter="dc1", node_name="client1"), remote)
        dns_port, _ = await dns.start("127.0.0.1", 0)
        try:
            async def get(url: str) -> None:
                async with session.get(url) as r:
                    await r.read()

            await timed("direct", count, lambda: get(f"{srv.url}/v1/health/service/web"))
            await timed("proxied", count, lambda: get(f"http://127.0.0.1:{port}/v1/health/service/web"))
            await timed("remote lookup", count, lambda: remote.service_endpoints("web", None, None))
            await timed("local lookup", count, lambda: local.service_endpoints("web", None, None))
            query = dns_query("web.service.consul")
            await timed("dns via client", count, lambda: udp_ask(dns_port, query))
        finally:
            await dns.stop()
            await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    asyncio.run(main(parser.parse_args().count))
