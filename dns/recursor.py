"""Forwarding questions outside our zones to the configured recursors (layer 3, asyncio).

Contract:
- `Forwarder(config, rng, own_addresses)` is the handler's `forward(data, tcp) -> bytes | None`.
  It sends the client's query (with a fresh random ID) to each recursor in turn (`sequential`, or a
  shuffled order for `random`), over UDP — or TCP when the client used TCP, or when the UDP reply
  came back truncated — within `recursor_timeout` per recursor. A reply with NOERROR or NXDOMAIN is
  returned (its ID is the upstream one; the handler restores the client's); any other rcode, a
  timeout or a network error moves on to the next recursor; None when all failed (→ SERVFAIL).
- Loops: a recursor that is one of our own listening addresses is never used, and a question that
  is already being forwarded twice (it came back to us through the upstream) raises
  `ForwardLoop` (→ REFUSED), so a misconfigured resolver chain unwinds instead of amplifying.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import struct
from collections.abc import Callable

from dns.config import DnsConfig
from dns.wire import Drop, Reject, parse_request

log = logging.getLogger(__name__)

MAX_IN_FLIGHT_SAME_QUESTION = 2
_OK_RCODES = (0, 3)


class ForwardLoop(Exception):
    """The question came back to us while we were forwarding it."""


def _question_key(data: bytes) -> bytes:
    try:
        request = parse_request(data)
    except (Drop, Reject):
        return data[12:]
    return request.question.lower()


class _UdpExchange(asyncio.DatagramProtocol):
    def __init__(self, query_id: int):
        self.query_id = query_id
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        ours = len(data) >= 12 and int.from_bytes(data[:2]) == self.query_id and data[2] & 0x80
        if ours and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc or ConnectionError("closed"))


async def udp_exchange(host: str, port: int, data: bytes) -> bytes:
    loop = asyncio.get_running_loop()
    query_id = int.from_bytes(data[:2])
    transport, protocol = await loop.create_datagram_endpoint(
        lambda: _UdpExchange(query_id), remote_addr=(host, port)
    )
    try:
        transport.sendto(data)
        return await protocol.reply
    finally:
        transport.close()


async def tcp_exchange(host: str, port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(struct.pack("!H", len(data)) + data)
        await writer.drain()
        (length,) = struct.unpack("!H", await reader.readexactly(2))
        return await reader.readexactly(length)
    finally:
        writer.close()


def _is_local(host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host == "localhost"
    return address.is_loopback or address.is_unspecified


class Forwarder:
    def __init__(self, config: DnsConfig, rng: random.Random,
                 own_addresses: Callable[[], set[tuple[str, int]]] = set):
        self.config = config
        self.rng = rng
        self.own_addresses = own_addresses
        self._in_flight: dict[bytes, int] = {}

    def _is_self(self, host: str, port: int) -> bool:
        for own_host, own_port in self.own_addresses():
            if own_port != port:
                continue
            if own_host == host or (_is_local(host) and (_is_local(own_host) or own_host == "")):
                return True
        return False

    def _targets(self) -> list[tuple[str, int]]:
        targets = [t for t in self.config.recursor_addrs if not self._is_self(*t)]
        if len(targets) < len(self.config.recursor_addrs):
            log.warning("dns: ignoring recursors that point back at this agent")
        if self.config.recursor_strategy == "random":
            self.rng.shuffle(targets)
        return targets

    async def __call__(self, data: bytes, tcp: bool) -> bytes | None:
        key = _question_key(data)
        if self._in_flight.get(key, 0) >= MAX_IN_FLIGHT_SAME_QUESTION:
            raise ForwardLoop
        targets = self._targets()
        if not targets:
            raise ForwardLoop  # every recursor is this agent itself
        self._in_flight[key] = self._in_flight.get(key, 0) + 1
        try:
            for host, port in targets:
                reply = await self._ask(host, port, data, tcp)
                if reply is not None and (reply[3] & 0xF) in _OK_RCODES:
                    return reply
            return None
        finally:
            left = self._in_flight[key] - 1
            if left:
                self._in_flight[key] = left
            else:
                del self._in_flight[key]

    async def _ask(self, host: str, port: int, data: bytes, tcp: bool) -> bytes | None:
        query_id = self.rng.randrange(1 << 16)
        query = query_id.to_bytes(2) + data[2:]
        try:
            async with asyncio.timeout(self.config.recursor_timeout_s):
                reply = None if tcp else await udp_exchange(host, port, query)
                if reply is None or reply[2] & 0x02:
                    reply = await tcp_exchange(host, port, query)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
            log.info("dns: recursor %s:%d failed: %r", host, port, exc)
            return None
        if len(reply) < 12 or int.from_bytes(reply[:2]) != query_id:
            return None
        return reply
