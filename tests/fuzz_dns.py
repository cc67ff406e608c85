"""DNS fuzzer: random and mutated packets through the real UDP and TCP listener code (issue 4).

    .venv/bin/python -m tests.fuzz_dns --count 1000000 [--seed N] [--socket-count 20000]

CI runs 100,000 packets (+ a sample over real sockets) from tests/unit/test_dns_fuzz.py; the
command above is the long run. Packets come from three generators — random bytes, mutations of
valid queries (bit flips, truncation, splices, header fields, label lengths, compression pointers,
EDNS versions/options/sizes) and grammar-built questions (every name form, random case, random
types and classes) — and are fed, without sockets, to `_UdpProtocol.datagram_received` (the inline
hot path, the caches, the spawned full path) and to `DnsServer._serve_tcp` (framed, several per
connection, a truncated frame at the end). The catalog changes now and then, so cache invalidation
is fuzzed too. Checked for every packet: nothing raises and nothing is logged
at ERROR; every reply is well-formed (a structural RFC 1035 walk, any octets in labels), has QR and
the query's ID, echoes the question when it could be parsed, and fits (UDP: 512 bytes without
EDNS, else min(EDNS size, 1232); TCP: its frame). A canary question is answered correctly every
5,000 packets and at the end. Failures print the seed and the packet.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import struct
import sys
import time
from dataclasses import dataclass, field

from dnslib import EDNS0, DNSRecord, EDNSOption

from dns.config import DnsConfig
from dns.server import DnsServer, _UdpProtocol
from dns.wire import Drop, Reject, parse_request
from tests.unit.test_dns_fakes import FakeLookup, ep

QTYPES = (1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 0, 251, 252, 255, 65535, 99)
NAMES = (
    "web.service.consul", "v1.web.service.consul", "_web._tcp.service.consul", "_web._v1.service.dc1.consul",
    "web.service.dc1.consul", "web.service.dc9.consul", "big.service.consul", "node1.node.consul",
    "node1.node.dc1.consul", "0a000001.addr.consul", "consul", "nope.service.consul", "a.b.c.consul",
    "1.0.0.10.in-addr.arpa", "9.9.9.9.in-addr.arpa", "example.com", "ext.service.consul", "web.query.consul",
    "x" * 63 + ".service.consul", "db.service.alt", "_db._tcp.consul",
)
CANARY = {"10.0.0.1", "10.0.0.2"}


def catalog() -> FakeLookup:
    lookup = FakeLookup()
    for i in (1, 2, 3):
        lookup.add_node(f"node{i}", f"10.0.0.{i}", {"rack": f"r{i}"})
    lookup.set_service("web", [ep("node1", "10.0.0.1", tags=("v1",)), ep("node2", "10.0.0.2", tags=("v2",)),
                               ep("node3", "10.0.0.3", status="critical")])
    lookup.set_service("big", [ep(f"n{i:03d}", f"10.1.{i // 250}.{i % 250 + 1}", service="big",
                                  meta={"zone": "z" * 30}) for i in range(60)])
    lookup.set_service("db", [ep("node2", "10.0.0.2", 5432, service_address="10.9.0.2", service="db")])
    lookup.set_service("ext", [ep("node1", "10.0.0.1", service_address="db.example.com", service="ext")])
    return lookup


def query(name: str, qtype: int, qid: int, edns: int | None = None, options: bool = False,
          version: int = 0, rd: bool = True) -> bytes:
    record = DNSRecord.question(name, "A")
    record.q.qtype = qtype
    record.header.id = qid
    record.header.rd = int(rd)
    if edns is not None:
        opts = [EDNSOption(10, b"\x01" * 8)] if options else []
        record.add_ar(EDNS0(udp_len=edns, version=version, opts=opts))
    return bytes(record.pack())


def random_case(rng: random.Random, name: str) -> str:
    return "".join(c.upper() if rng.random() < 0.3 else c for c in name)


def grammar(rng: random.Random) -> bytes:
    name = random_case(rng, rng.choice(NAMES))
    edns = rng.choice((None, None, 512, 1232, 4096, 0, 65535))
    return query(name, rng.choice(QTYPES), rng.randrange(1 << 16), edns, rng.random() < 0.2,
                 rng.choice((0, 0, 0, 1)), rng.random() < 0.5)


def mutate(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(9)
        pos = rng.randrange(len(data)) if data else 0
        if op == 0 and data:  # flip bits
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[pos] = rng.randrange(256)
        elif op == 2:
            del data[rng.randrange(len(data) + 1):]
        elif op == 3:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        elif op == 4 and len(data) >= 12:  # header counts, opcode, flags
            field_at = rng.choice((2, 3, 4, 6, 8, 10))
            data[field_at:field_at + 2] = rng.randrange(1 << 16).to_bytes(2)
        elif op == 5 and len(data) > 13:  # a compression pointer (often a loop) inside the name
            at = rng.randrange(12, len(data) - 1)
            data[at:at + 2] = (0xC000 | rng.choice((12, at, rng.randrange(len(data))))).to_bytes(2)
        elif op == 6 and len(data) > 12:  # a label length
            data[12] = rng.choice((0, 63, 64, 127, 192, 255, rng.randrange(256)))
        elif op == 7:  # splice with another seed
            other = rng.choice(seeds)
            data = data[:pos] + other[rng.randrange(len(other)):]
        else:  # a long name
            data = data[:12] + (b"\x3f" + b"a" * 63) * rng.randrange(1, 6) + b"\x00\x00\x01\x00\x01"
    return bytes(data)


def packet(rng: random.Random, seeds: list[bytes]) -> bytes:
    kind = rng.randrange(10)
    if kind < 2:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(rng.choice((14, 40, 600)))))
    if kind < 6:
        return mutate(rng, seeds)
    return grammar(rng)


@dataclass
class Stats:
    packets: int = 0
    replies: int = 0
    silent: int = 0
    rcodes: dict[int, int] = field(default_factory=dict)


class _Capture(asyncio.DatagramTransport):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def sendto(self, data, addr=None) -> None:  # type: ignore[override]
        self.sent.append(bytes(data))

    def is_closing(self) -> bool:
        return False


class _Writer:
    """Enough of a StreamWriter for `_serve_tcp`."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True


class _ErrorCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def udp_limit(data: bytes) -> int:
    try:
        req = parse_request(data)
    except (Drop, Reject):
        return 512
    return min(max(req.edns_size, 512), 1232) if req.edns else 512


class Malformed(Exception):
    pass


def _skip_name(msg: bytes, pos: int) -> int:
    """Position after the name at `pos`; pointers must go backwards (no loops) and stay in bounds."""
    total, end, jumped, limit = 0, None, 0, pos
    while True:
        if pos >= len(msg):
            raise Malformed(f"name runs off the end at {pos}")
        length = msg[pos]
        if length & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise Malformed("cut pointer")
            target = ((length & 0x3F) << 8) | msg[pos + 1]
            if target >= limit or jumped > 127:
                raise Malformed(f"pointer forward or looping at {pos}")
            end = pos + 2 if end is None else end
            pos, limit, jumped = target, target, jumped + 1
            continue
        if length & 0xC0:
            raise Malformed(f"bad label type at {pos}")
        total += length + 1
        if total > 255:
            raise Malformed("name longer than 255")
        if length == 0:
            return pos + 1 if end is None else end
        pos += 1 + length


def wellformed(msg: bytes) -> int:
    """Structural RFC 1035 check of a whole message (any octets in labels); returns the rcode."""
    if len(msg) < 12:
        raise Malformed("short header")
    _, flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", msg)
    pos = 12
    for _ in range(qd):
        pos = _skip_name(msg, pos) + 4
    ext = 0
    for i in range(an + ns + ar):
        pos = _skip_name(msg, pos)
        if pos + 10 > len(msg):
            raise Malformed("cut record header")
        rtype, _, ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
        if rtype == 41:
            if i < an + ns or msg[pos - 1] != 0:
                raise Malformed("OPT outside the additional section or not at the root")
            ext = ttl >> 24
        pos += 10 + rdlen
    if pos != len(msg):
        raise Malformed(f"{len(msg) - pos} bytes after the records")
    return (ext << 4) | (flags & 0xF)


def check_reply(data: bytes, reply: bytes, limit: int, seed: int) -> int:
    """Assert `reply` is a well-formed answer to `data` within `limit`; returns its rcode."""
    where = f"seed={seed} packet={data.hex()} reply={reply.hex()}"
    assert len(reply) <= limit, f"reply of {len(reply)} > {limit} bytes: {where}"
    assert len(reply) >= 12 and reply[2] & 0x80 and reply[:2] == data[:2], f"bad header: {where}"
    try:
        rcode = wellformed(reply)
    except Malformed as exc:
        raise AssertionError(f"malformed reply ({exc}): {where}") from exc
    try:
        req = parse_request(data)
    except (Drop, Reject):
        req = None
    if req is not None and rcode != 1:
        assert reply[12:12 + len(req.question)] == req.question, f"question not echoed: {where}"
    return rcode


async def run(count: int, seed: int, socket_count: int = 0, report: bool = False) -> Stats:
    rng = random.Random(seed)
    lookup = catalog()
    server = DnsServer(DnsConfig(alt_domain="alt.", tcp_idle_timeout=5), lookup, rng=random.Random(seed))
    errors = _ErrorCounter()
    logging.getLogger("dns").addHandler(errors)
    seeds = [query(n, t, 1234, e) for n in NAMES for t, e in ((1, None), (33, 1232), (255, 4096))]
    stats = Stats()
    udp = _UdpProtocol(server)
    transport = _Capture()
    udp.connection_made(transport)
    started = time.monotonic()
    try:
        done = 0
        while done < count:
            if rng.random() < 0.01:  # the catalog changes: cached answers must follow
                lookup.set_service("big", lookup.services["big"][1:] + lookup.services["big"][:1])
            batch = [packet(rng, seeds) for _ in range(min(200, count - done))]
            if rng.random() < 0.5:
                await _fuzz_udp(udp, server, transport, batch, seed, stats)
            else:
                await _fuzz_tcp(server, batch, seed, stats)
            done += len(batch)
            if done % 5000 < len(batch):
                await _canary(udp, server, transport, seed)
                if report:
                    print(f"{done} packets, {time.monotonic() - started:.1f} s", file=sys.stderr)
        await _canary(udp, server, transport, seed)
        if socket_count:
            await _over_sockets(server, rng, seeds, socket_count, seed, stats)
    finally:
        logging.getLogger("dns").removeHandler(errors)
        await server.stop()
    assert not errors.records, f"seed={seed}: errors logged: {[r.getMessage() for r in errors.records[:3]]}"
    return stats


async def _drain(server: DnsServer) -> None:
    while server._tasks:
        await asyncio.gather(*list(server._tasks))


async def _fuzz_udp(udp: _UdpProtocol, server: DnsServer, transport: _Capture, batch: list[bytes], seed: int,
                    stats: Stats) -> None:
    for data in batch:
        transport.sent.clear()
        try:
            udp.datagram_received(data, ("127.0.0.1", 5353))
            await _drain(server)
        except Exception as exc:
            raise AssertionError(f"seed={seed} packet={data.hex()}: {exc!r}") from exc
        stats.packets += 1
        assert len(transport.sent) <= 1, f"seed={seed} packet={data.hex()}: several replies"
        if not transport.sent:
            stats.silent += 1
            continue
        rcode = check_reply(data, transport.sent[0], udp_limit(data), seed)
        stats.replies += 1
        stats.rcodes[rcode] = stats.rcodes.get(rcode, 0) + 1


async def _fuzz_tcp(server: DnsServer, batch: list[bytes], seed: int, stats: Stats) -> None:
    reader = asyncio.StreamReader()
    stream = b"".join(struct.pack("!H", len(d)) + d for d in batch)
    reader.feed_data(stream + b"\x00\x30\x12")  # and a truncated frame at the end
    reader.feed_eof()
    writer = _Writer()
    try:
        await server._serve_tcp(reader, writer)  # type: ignore[arg-type]
    except Exception as exc:
        raise AssertionError(f"seed={seed} tcp batch={stream.hex()}: {exc!r}") from exc
    assert writer.closed, f"seed={seed}: connection left open"
    out, pos, replies = bytes(writer.data), 0, []
    while pos < len(out):
        (length,) = struct.unpack_from("!H", out, pos)
        replies.append(out[pos + 2:pos + 2 + length])
        pos += 2 + length
    assert pos == len(out), f"seed={seed}: torn TCP frame"
    answered = iter(replies)
    for data in batch:  # replies come in order; silence only for packets without a readable header
        stats.packets += 1
        if len(data) < 12 or data[2] & 0x80:
            stats.silent += 1
            continue
        reply = next(answered, None)
        assert reply is not None, f"seed={seed} packet={data.hex()}: no TCP reply"
        rcode = check_reply(data, reply, 65535, seed)
        stats.replies += 1
        stats.rcodes[rcode] = stats.rcodes.get(rcode, 0) + 1
    assert next(answered, None) is None, f"seed={seed}: more TCP replies than queries"


async def _canary(udp: _UdpProtocol, server: DnsServer, transport: _Capture, seed: int) -> None:
    for flags_rd in (True, False):
        transport.sent.clear()
        data = query("web.service.consul", 1, 777, rd=flags_rd)
        udp.datagram_received(data, ("127.0.0.1", 5353))
        await _drain(server)
        assert len(transport.sent) == 1, f"seed={seed}: canary unanswered"
        reply = DNSRecord.parse(transport.sent[0])
        assert reply.header.id == 777 and {str(r.rdata) for r in reply.rr} == CANARY, f"seed={seed}: {reply}"


async def _over_sockets(server: DnsServer, rng: random.Random, seeds: list[bytes], count: int, seed: int,
                        stats: Stats) -> None:
    """A sample through real sockets: UDP fire-and-collect, TCP frames on a few connections."""
    from tests.unit.test_dns_server import tcp_session, udp_ask

    udp_port, tcp_port = await server.start("127.0.0.1", 0)
    loop = asyncio.get_running_loop()
    received: list[bytes] = []

    class Collect(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.append(data)

    transport, _ = await loop.create_datagram_endpoint(Collect, remote_addr=("127.0.0.1", udp_port))
    try:
        for i in range(count // 2):
            transport.sendto(packet(rng, seeds))
            if i % 20 == 19:
                await asyncio.sleep(0.002)  # pace the flood: the socket buffers are finite
        for attempt in range(3):  # UDP: a canary lost in a full socket buffer is asked again
            try:
                reply = DNSRecord.parse(await udp_ask(udp_port, query("web.service.consul", 1, 778), 1.0))
                break
            except TimeoutError:
                assert attempt < 2, f"seed={seed}: socket canary unanswered"
        assert {str(r.rdata) for r in reply.rr} == CANARY, f"seed={seed}: socket canary"
    finally:
        transport.close()
    for data in received:
        assert len(data) >= 12 and data[2] & 0x80 and len(data) <= 1232, f"seed={seed}: {data.hex()}"
        wellformed(data)
    stats.packets += count // 2
    stats.replies += len(received)
    for start in range(0, count - count // 2, 500):
        batch = [packet(rng, seeds) for _ in range(min(500, count - count // 2 - start))]
        answerable = [d for d in batch if len(d) >= 12 and not d[2] & 0x80]
        replies = await tcp_session(tcp_port, answerable) if answerable else []
        for data, reply in zip(answerable, replies, strict=True):
            check_reply(data, reply, 65535, seed)
        stats.packets += len(batch)
        stats.replies += len(replies)
    (reply_bytes,) = await tcp_session(tcp_port, [query("web.service.consul", 1, 779)])
    assert {str(r.rdata) for r in DNSRecord.parse(reply_bytes).rr} == CANARY, f"seed={seed}: tcp canary"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--socket-count", type=int, default=20_000)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    print(f"fuzz_dns: seed={seed} count={args.count}", flush=True)
    started = time.monotonic()
    stats = asyncio.run(run(args.count, seed, args.socket_count, report=True))
    print(f"fuzz_dns: ok in {time.monotonic() - started:.1f} s: {stats}")


if __name__ == "__main__":
    main()
