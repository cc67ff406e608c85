"""Wires the `dns/` package to the agent: config conversion, the Lookup, the listener (layer 3).

Contract: `dns_config_from(config)` turns the agent's parsed `dns_config` (plus domain,
recursors, datacenter, node) into `dns.config.DnsConfig`; `start_dns(stack, ...)` starts UDP and
TCP listeners on `client_addr:ports.dns` answering from the server's store (or from `lookup`:
a client agent's lookups through the servers), registers their shutdown on `stack`, and returns the
bound port (the UDP and TCP ports are equal when a fixed port is configured); `on_created(dns)`
is called with the `DnsServer` before it starts. Lookups honour `allow_stale`/`max_stale`
through `freshness_barrier`; answers cached from the store stay valid while its indexes stand.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Awaitable, Callable

from agent.config import AgentConfig
from agent.discovery import Discovery, DnsLookup
from agent.server import CatalogServer
from dns.config import DnsConfig
from dns.lookup import Lookup
from dns.server import DnsServer


def dns_config_from(config: AgentConfig) -> DnsConfig:
    section = dataclasses.asdict(config.dns_config)
    return DnsConfig(**section, domain=config.domain, alt_domain=config.alt_domain,
                     recursors=list(config.recursors), datacenter=config.datacenter,
                     node_name=config.node_name)


def freshness_barrier(config: AgentConfig, server: CatalogServer) -> Callable[[], Awaitable[None]]:
    """`dns_config.allow_stale` / `max_stale` (reference §8.8): a server answers DNS from its own
    store unless stale reads are off, or it has not heard from the leader for longer than
    `max_stale`; then a lookup first confirms freshness through the leader (a read-index round)."""
    allow_stale = config.dns_config.allow_stale
    max_stale_ms = config.dns_config.max_stale * 1000

    async def barrier() -> None:
        if server.single:
            return
        if not allow_stale or server.last_contact_ms() > max_stale_ms:
            await server.read_barrier("leader")

    return barrier


async def start_dns(stack: contextlib.AsyncExitStack, config: AgentConfig, discovery: Discovery | None,
                    server: CatalogServer | None, *, lookup: Lookup | None = None,
                    on_created: Callable[[DnsServer], None] | None = None) -> int:
    if lookup is None:  # a server answers from its own store; a client passes its remote lookup
        assert discovery is not None and server is not None
        lookup = DnsLookup(discovery, config.datacenter, freshness_barrier(config, server))
    dns = DnsServer(dns_config_from(config), lookup)
    if on_created is not None:
        on_created(dns)  # e.g. the agent wiring the server's counters into its metrics
    host = config.addresses.dns or config.client_addr
    udp_port, _tcp_port = await dns.start(host, config.ports.dns)
    stack.push_async_callback(dns.stop)
    return udp_port
