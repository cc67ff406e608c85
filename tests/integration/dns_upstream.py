"""A tiny upstream DNS server for the recursor integration test (run as a script, asyncio + dnslib).

`python tests/integration/dns_upstream.py` binds UDP and TCP on the same ephemeral port of
127.0.0.1, prints `port <n>` and serves until killed: `<anything>.upstream.test A` → 192.0.2.7
(TTL 42); `big.upstream.test TXT` → 40 TXT records (too big for UDP: TC, then the full answer over
TCP); any other name → NXDOMAIN. It counts queries per transport in `stats.upstream.test TXT`.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from dnslib import QTYPE, RCODE, RR, TXT, A, DNSRecord

COUNTS = {"udp": 0, "tcp": 0}


def answer(data: bytes, tcp: bool) -> bytes | None:
    try:
        query = DNSRecord.parse(data)
    except Exception:
        return None
    COUNTS["tcp" if tcp else "udp"] += 1
    reply = query.reply()
    reply.header.aa = 0  # a recursive resolver's answer: not authoritative
    name = str(query.q.qname).lower()
    if name == "big.upstream.test." and query.q.qtype == QTYPE.TXT:
        for i in range(40):
            reply.add_answer(RR(query.q.qname, QTYPE.TXT, ttl=42, rdata=TXT(f"record {i:02d} " + "x" * 40)))
        wire = reply.pack()
        if not tcp and len(wire) > 512:
            reply = query.reply()
            reply.header.aa, reply.header.tc = 0, 1
        return reply.pack()
    if name == "stats.upstream.test.":
        reply.add_answer(RR(query.q.qname, QTYPE.TXT, ttl=0, rdata=TXT(f"udp={COUNTS['udp']} tcp={COUNTS['tcp']}")))
    elif name.endswith(".upstream.test.") and query.q.qtype == QTYPE.A:
        reply.add_answer(RR(query.q.qname, QTYPE.A, ttl=42, rdata=A("192.0.2.7")))
    elif not name.endswith(".upstream.test."):
        reply.header.rcode = RCODE.NXDOMAIN
    return reply.pack()


class Udp(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = answer(data, False)
        if reply is not None:
            self.transport.sendto(reply, addr)  # type: ignore[attr-defined]


async def serve_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
            reply = answer(await reader.readexactly(length), True)
            if reply is not None:
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(20):
        udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
        port = udp.get_extra_info("sockname")[1]
        try:
            server = await asyncio.start_server(serve_tcp, "127.0.0.1", port, family=socket.AF_INET)
            break
        except OSError:
            udp.close()
    else:
        raise SystemExit("no free port")
    print(f"port {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
