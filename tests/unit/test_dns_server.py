"""dns/server.py over real UDP and TCP on 127.0.0.1 (ephemeral ports) with a fake Lookup:
UDP and TCP answers, several queries per TCP connection, idle timeout, client cap, truncated frames,
recursor forwarding (UDP, TCP fallback on TC, failover), loop refusal, and one test with real dig."""

from __future__ import annotations

import asyncio
import random
import shutil
import struct

import pytest
from dnslib import QTYPE, RCODE, RR, A, DNSRecord

from dns.config import DnsConfig
from dns.server import DnsServer
from tests.unit.test_dns_fakes import ep, sample_lookup


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.replies: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.replies.put_nowait(data)


async def udp_ask(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    loop = asyncio.get_running_loop()
    transport, client = await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", port))
    try:
        transport.sendto(data)
        async with asyncio.timeout(timeout):
            return await client.replies.get()
    finally:
        transport.close()


async def tcp_session(port: int, packets: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for data in packets:
            writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        out = []
        async with asyncio.timeout(3):
            for _ in packets:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
                out.append(await reader.readexactly(length))
        return out
    finally:
        writer.close()


def q(name: str, qtype: str = "A", qid: int = 7) -> bytes:
    record = DNSRecord.question(name, qtype)
    record.header.id = qid
    return bytes(record.pack())


@pytest.fixture
async def server():
    srv = DnsServer(DnsConfig(tcp_idle_timeout=0.3, max_tcp_clients=4), sample_lookup(), rng=random.Random(1))
    ports = await srv.start("127.0.0.1", 0)
    yield srv, ports
    await srv.stop()


async def test_udp_and_tcp_answers(server) -> None:
    _, (udp, tcp) = server
    r = DNSRecord.parse(await udp_ask(udp, q("web.service.consul")))
    assert r.header.id == 7 and sorted(str(x.rdata) for x in r.rr) == ["10.0.0.1", "10.0.0.2"]
    r = DNSRecord.parse(await udp_ask(udp, q("web.service.consul", qid=8)))  # cache hit path
    assert r.header.id == 8 and len(r.rr) == 2
    replies = await tcp_session(tcp, [q("db.service.consul", "SRV", 1), q("node1.node.consul", "A", 2),
                                      q("nope.service.consul", "A", 3)])
    parsed = [DNSRecord.parse(x) for x in replies]
    assert [p.header.id for p in parsed] == [1, 2, 3]
    assert [p.header.rcode for p in parsed] == [RCODE.NOERROR, RCODE.NOERROR, RCODE.NXDOMAIN]


async def test_garbage_never_breaks_the_listeners(server) -> None:
    _, (udp, tcp) = server
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Client, remote_addr=("127.0.0.1", udp))
    for data in (b"", b"\x00", b"\xff" * 11, b"\x12\x34" + b"\xff" * 40, q("web.service.consul")[:20]):
        transport.sendto(data)
    transport.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
    writer.write(b"\x00\x40abc")  # frame shorter than announced, then EOF
    writer.write_eof()
    assert await reader.read() == b""
    writer.close()
    assert DNSRecord.parse(await udp_ask(udp, q("db.service.consul"))).header.rcode == RCODE.NOERROR


async def test_idle_tcp_connection_is_closed(server) -> None:
    _, (_, tcp) = server
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # closed by the server after tcp_idle_timeout
    writer.close()


async def test_tcp_client_cap(server) -> None:
    srv, (_, tcp) = server
    held = [await asyncio.open_connection("127.0.0.1", tcp) for _ in range(4)]
    async with asyncio.timeout(3):
        while len(srv._tcp_clients) < 4:  # wait until the server has taken all four
            await asyncio.sleep(0)
    reader, writer = await asyncio.open_connection("127.0.0.1", tcp)
    async with asyncio.timeout(3):
        assert await reader.read() == b""
    writer.close()
    for _, w in held:
        w.close()


async def test_truncation_then_tcp_retry(server) -> None:
    srv, (udp, tcp) = server
    lookup = srv.handler.lookup
    lookup.set_service("many", [ep(f"node{i}", f"10.2.0.{i}", service="many") for i in range(1, 40)])
    r = DNSRecord.parse(await udp_ask(udp, q("many.service.consul")))
    assert r.header.tc == 1 and len(r.rr) == 3
    (full,) = await tcp_session(tcp, [q("many.service.consul")])
    assert len(DNSRecord.parse(full).rr) == 39


async def test_health_change_visible_to_next_query(server) -> None:
    srv, (udp, _) = server
    await udp_ask(udp, q("db.service.consul"))
    srv.handler.lookup.set_service("db", [ep("node1", "10.0.0.1", service="db", status="critical")])
    r = DNSRecord.parse(await udp_ask(udp, q("db.service.consul")))
    assert r.header.rcode == RCODE.NXDOMAIN


# ---------------------------------------------------------------- recursors


class _Upstream:
    """A tiny authoritative upstream: answers example.com A; UDP replies truncated when asked to."""

    def __init__(self, truncate_udp: bool = False, rcode: int = 0):
        self.truncate_udp = truncate_udp
        self.rcode = rcode
        self.udp_queries = 0
        self.tcp_queries = 0

    def reply(self, data: bytes, udp: bool) -> bytes:
        request = DNSRecord.parse(data)
        reply = request.reply()
        reply.header.rcode = self.rcode
        if udp and self.truncate_udp:
            reply.header.tc = 1
        else:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.1"), ttl=60))
        return bytes(reply.pack())

    async def start(self) -> int:
        upstream = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport):
                self.transport = transport

            def datagram_received(self, data, addr):
                upstream.udp_queries += 1
                self.transport.sendto(upstream.reply(data, True), addr)

        async def serve(reader, writer):
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            self.tcp_queries += 1
            out = self.reply(await reader.readexactly(length), False)
            writer.write(struct.pack("!H", len(out)) + out)
            await writer.drain()
            writer.close()

        loop = asyncio.get_running_loop()
        for _ in range(20):  # an ephemeral UDP port whose TCP twin is free too
            self.udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=("127.0.0.1", 0))
            port = self.udp.get_extra_info("sockname")[1]
            try:
                self.tcp = await asyncio.start_server(serve, "127.0.0.1", port)
                return port
            except OSError:
                self.udp.close()
        raise OSError("no free UDP/TCP port pair")

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


async def start_forwarding(recursors: list[str]) -> tuple[DnsServer, int, int]:
    srv = DnsServer(DnsConfig(recursors=recursors, recursor_timeout="1s"), sample_lookup())
    udp, tcp = await srv.start("127.0.0.1", 0)
    return srv, udp, tcp


async def test_forwarding_relays_upstream_answer_and_sets_ra() -> None:
    upstream = _Upstream()
    port = await upstream.start()
    srv, udp, _ = await start_forwarding([f"127.0.0.1:{port}"])
    try:
        r = DNSRecord.parse(await udp_ask(udp, q("example.com", qid=99)))
        assert r.header.id == 99 and [str(x.rdata) for x in r.rr] == ["192.0.2.1"]
        r = DNSRecord.parse(await udp_ask(udp, q("web.service.consul")))
        assert r.header.ra == 1 and r.header.aa == 1
    finally:
        await srv.stop()
        upstream.close()


async def test_forwarding_retries_over_tcp_when_truncated_and_fails_over() -> None:
    bad, good = _Upstream(rcode=RCODE.SERVFAIL), _Upstream(truncate_udp=True)
    bad_port, good_port = await bad.start(), await good.start()
    srv, udp, _ = await start_forwarding([f"127.0.0.1:{bad_port}", f"127.0.0.1:{good_port}"])
    try:
        r = DNSRecord.parse(await udp_ask(udp, q("example.com")))
        assert [str(x.rdata) for x in r.rr] == ["192.0.2.1"]
        assert bad.udp_queries == 1 and good.udp_queries == 1 and good.tcp_queries == 1
    finally:
        await srv.stop()
        bad.close()
        good.close()


async def test_all_recursors_failing_gives_servfail() -> None:
    bad = _Upstream(rcode=RCODE.REFUSED)
    port = await bad.start()
    srv, udp, _ = await start_forwarding([f"127.0.0.1:{port}"])
    try:
        assert DNSRecord.parse(await udp_ask(udp, q("example.com"))).header.rcode == RCODE.SERVFAIL
    finally:
        await srv.stop()
        bad.close()


async def test_recursor_pointing_at_ourselves_is_refused() -> None:
    srv, udp, _ = await start_forwarding(["127.0.0.1:9"])
    srv.config.recursor_addrs = (("127.0.0.1", udp),)
    try:
        r = DNSRecord.parse(await udp_ask(udp, q("example.com")))
        assert r.header.rcode == RCODE.REFUSED
    finally:
        await srv.stop()


async def test_forwarding_loop_between_two_agents_unwinds() -> None:
    a, a_udp, _ = await start_forwarding(["127.0.0.1:9"])
    b, b_udp, _ = await start_forwarding(["127.0.0.1:9"])
    a.config.recursor_addrs = (("127.0.0.1", b_udp),)
    b.config.recursor_addrs = (("127.0.0.1", a_udp),)
    try:
        r = DNSRecord.parse(await udp_ask(a_udp, q("loop.example.com"), timeout=5))
        assert r.header.rcode in (RCODE.SERVFAIL, RCODE.REFUSED)
    finally:
        await a.stop()
        await b.stop()


# ---------------------------------------------------------------- real dig


@pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed")
async def test_real_dig(server) -> None:
    _, (udp, _) = server

    async def dig(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "dig", "@127.0.0.1", "-p", str(udp), "+time=2", "+tries=1", *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.decode()

    out = await dig("+short", "_web._tcp.service.consul", "SRV")
    assert "node1.node.dc1.consul." in out and "1 10 8080" in out
    out = await dig("web.service.consul", "AAAA")
    assert "status: NOERROR" in out and "ANSWER: 0" in out and "SOA" in out and "flags: qr aa" in out
    out = await dig("nope.service.consul")
    assert "status: NXDOMAIN" in out
    out = await dig("+tcp", "+short", "-x", "10.0.0.1")
    assert out.strip() == "node1.node.dc1.consul."
    out = await dig("+edns=1", "web.service.consul")
    assert "BADVERS" in out and "status: NOERROR" in out  # dig retries with version 0
