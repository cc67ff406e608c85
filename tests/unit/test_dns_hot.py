"""The UDP listener's exact-bytes hot path (dns/cache.py HotCache + dns/server.py), without sockets:
what gets installed, that hits skip the handler, that any catalog change is seen by the very next
packet, rotation of shuffles, the bound, and the counters."""

from __future__ import annotations

import asyncio
import random
import socket

import pytest
from dnslib import EDNS0, DNSRecord, EDNSOption

from dns.cache import HotCache
from dns.config import DnsConfig
from dns.server import DnsServer, _UdpProtocol
from tests.unit.test_dns_fakes import ep, sample_lookup


class Capture(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def sendto(self, data, addr=None) -> None:  # type: ignore[override]
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def q(name: str, qid: int = 1, edns: int | None = None, cookie: bool = False) -> bytes:
    record = DNSRecord.question(name)
    record.header.id = qid
    if edns is not None:
        record.add_ar(EDNS0(udp_len=edns, opts=[EDNSOption(10, b"12345678")] if cookie else []))
    return bytes(record.pack())


async def listener(**cfg) -> tuple[DnsServer, _UdpProtocol, Capture]:
    server = DnsServer(DnsConfig(**cfg), sample_lookup(), rng=random.Random(3))
    proto = server._udp_protocol = _UdpProtocol(server)  # what start() does, minus the socket
    transport = Capture()
    proto.connection_made(transport)
    return server, proto, transport


async def send(server: DnsServer, proto: _UdpProtocol, transport: Capture, data: bytes) -> DNSRecord:
    transport.sent.clear()
    proto.datagram_received(data, ("127.0.0.1", 1))
    while server._tasks:
        await asyncio.gather(*list(server._tasks))
    (reply,) = transport.sent
    return DNSRecord.parse(reply)


def addresses(record: DNSRecord) -> set[str]:
    return {str(rr.rdata) for rr in record.rr}


async def test_second_identical_query_is_served_inline() -> None:
    server, proto, transport = await listener()
    first = await send(server, proto, transport, q("web.service.consul", 1))
    assert len(server.handler.hot) == 1 and proto.past_hot == 1
    calls = server.handler.lookup.calls
    second = await send(server, proto, transport, q("web.service.consul", 2))
    assert second.header.id == 2 and addresses(second) == addresses(first) == {"10.0.0.1", "10.0.0.2"}
    assert proto.past_hot == 1 and server.handler.lookup.calls == calls  # no handler, no lookup
    assert server.queries == {"udp": 2, "tcp": 0} and server.cache_hits == 1


async def test_rotation_serves_every_shuffle() -> None:
    server, proto, transport = await listener()
    orders = set()
    for i in range(8):
        reply = await send(server, proto, transport, q("web.service.consul", i))
        orders.add(tuple(str(rr.rdata) for rr in reply.rr))
    assert len(orders) == 2


async def test_catalog_change_is_seen_by_the_next_packet() -> None:
    server, proto, transport = await listener()
    lookup = server.handler.lookup
    data = q("web.service.consul", 5)
    await send(server, proto, transport, data)
    await send(server, proto, transport, data)
    lookup.set_service("web", [ep("node3", "10.0.0.3")])
    assert addresses(await send(server, proto, transport, data)) == {"10.0.0.3"}
    lookup.add_node("other", "10.5.5.5")  # an unrelated change: revalidated, still a hit
    calls = lookup.calls
    assert addresses(await send(server, proto, transport, data)) == {"10.0.0.3"}
    assert lookup.calls == calls
    lookup.set_service("web", None)
    assert (await send(server, proto, transport, data)).header.rcode == 3  # NXDOMAIN


async def test_case_and_flags_are_part_of_the_key() -> None:
    server, proto, transport = await listener()
    await send(server, proto, transport, q("web.service.consul"))
    reply = await send(server, proto, transport, q("WEB.service.consul"))
    assert str(reply.q.qname) == "WEB.service.consul." and str(reply.rr[0].rname) == "WEB.service.consul."
    assert len(server.handler.hot) == 2
    no_rd = bytearray(q("web.service.consul"))
    no_rd[2] &= 0xFE
    assert (await send(server, proto, transport, bytes(no_rd))).header.rd == 0


async def test_only_plain_packets_are_installed() -> None:
    server, proto, transport = await listener()
    await send(server, proto, transport, q("web.service.consul", edns=1232, cookie=True))
    await send(server, proto, transport, q("web.service.consul") + b"\x00trailing")
    assert len(server.handler.hot) == 0
    reply = await send(server, proto, transport, q("web.service.consul", edns=1232))
    assert reply.ar and len(server.handler.hot) == 1  # OPT without options: fine
    await send(server, proto, transport, q("example.com"))  # REFUSED (not cacheable: no recursor)
    assert len(server.handler.hot) == 1


def test_hot_cache_is_bounded_and_revalidates() -> None:
    index = {"web": 5, None: 10}
    cache = HotCache(max_entries=2)
    for key in (b"a", b"b", b"c"):
        cache.put(key, [b"x", b"y"], "web", 5, 10)
    assert list(cache.entries) == [b"b", b"c"]
    assert cache.get(b"b", index.get) == b"x" and cache.get(b"b", index.get) == b"y"
    index[None] = 11  # something else changed: still current, epoch moves on
    assert cache.get(b"b", index.get) == b"x" and cache.entries[b"b"].epoch == 11
    index["web"], index[None] = 6, 12
    assert cache.get(b"b", index.get) is None and b"b" not in cache.entries


async def test_identical_misses_share_one_lookup() -> None:
    server, proto, transport = await listener()
    lookup = server.handler.lookup
    calls = lookup.calls
    for qid in (11, 12, 13):  # all arrive before the first is answered
        proto.datagram_received(q("db.service.consul", qid), ("127.0.0.1", qid))
    assert len(server._tasks) == 1
    while server._tasks:
        await asyncio.gather(*list(server._tasks))
    replies = [DNSRecord.parse(r) for r in transport.sent]
    assert [r.header.id for r in replies] == [11, 12, 13] and lookup.calls == calls + 1
    assert all(addresses(r) == {"10.1.0.9"} for r in replies)


@pytest.mark.parametrize("batched", [True, False], ids=["recvmmsg", "recvfrom"])
async def test_socket_reader_drains_bursts_and_mixes_hits_with_misses(batched: bool) -> None:
    server = DnsServer(DnsConfig(), sample_lookup(), rng=random.Random(5))
    server.batched_io = batched
    udp_port, _ = await server.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.setblocking(False)
    names = ["web.service.consul", "db.service.consul", "nope.service.consul"]

    async def burst(first_id: int) -> None:
        sent = {}
        for i in range(150):  # more than one read batch, all sent before the loop runs
            sent[first_id + i] = names[i % 3]
            client.sendto(q(names[i % 3], qid=first_id + i), ("127.0.0.1", udp_port))
        client.sendto(b"\x00", ("127.0.0.1", udp_port))  # too short: silence, not a crash
        replies = {}
        async with asyncio.timeout(10):
            while len(replies) < len(sent):
                reply = DNSRecord.parse(await loop.sock_recv(client, 4096))
                replies[reply.header.id] = reply
        assert all(str(r.q.qname).rstrip(".") == sent[i] for i, r in replies.items())
        assert all(addresses(r) == {"10.0.0.1", "10.0.0.2"} for i, r in replies.items() if sent[i] == names[0])
        assert all(r.header.rcode == 3 for i, r in replies.items() if sent[i] == names[2])

    try:
        await burst(1000)
        hits = server.cache_hits
        await burst(2000)  # now every query is a hot hit
        assert server.queries["udp"] == 302 and server.cache_hits - hits >= 150
    finally:
        client.close()
        await server.stop()


async def test_socket_reader_over_ipv6() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    server = DnsServer(DnsConfig(), sample_lookup(), rng=random.Random(5))
    try:
        udp_port, _ = await server.start("::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback")
    loop = asyncio.get_running_loop()
    client = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    client.setblocking(False)
    try:
        for qid in (1, 2, 3):  # a miss (answered by the slow path to the parsed sender), then hits
            client.sendto(q("web.service.consul", qid=qid), ("::1", udp_port))
            async with asyncio.timeout(10):
                reply = DNSRecord.parse(await loop.sock_recv(client, 4096))
            assert reply.header.id == qid and addresses(reply) == {"10.0.0.1", "10.0.0.2"}
    finally:
        client.close()
        await server.stop()
