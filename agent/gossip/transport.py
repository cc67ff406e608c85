"""GossipTransport: the UDP socket and TCP listener of one gossip node (layer 3).

Contract:
- `start(bind_host, port)` binds TCP then UDP on the same port (port 0: UDP takes the port TCP got,
  retried when UDP's bind collides) and returns the port.
- Every packet is enveloped and encrypted by `envelope.Sealer` (family byte, Consul's AES-GCM).
  Inbound datagrams with family SWIM go to `on_datagram(body, source)`; inbound TCP frames go to
  `on_frame(opened, source)`, which returns the sealed frames to answer on that connection.
  Packets that do not authenticate are dropped, counted in `counters["unauthenticated"]` and
  logged at most once per `WARN_EVERY` seconds; malformed ones are counted and dropped. Nothing a
  peer sends can raise out of here.
- `send_udp(payload, address)` seals and sends one datagram; `exchange(payload, address,
  expect_reply)` opens one TCP connection, writes one `>I`-framed packet and (expect_reply) reads
  one reply frame, returning `(reply, "")` or `(None, reason)`.
- Bounded: `MAX_FRAME` per frame, `MAX_TCP_HANDLERS` inbound connections (more are closed at
  once), `CONNECT_TIMEOUT` / `STREAM_TIMEOUT` outbound, `IDLE_TIMEOUT` / `CONNECTION_TIMEOUT`
  inbound.
- `drop(direction, packet)` is a fault-injection hook ("in"/"out", raw wire bytes): True drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any

from agent.gossip.envelope import MAX_FRAME, SWIM, MalformedEnvelope, Opened, Sealer, frame, read_frame
from agent.gossip.errors import Unauthenticated
from agent.gossip.messages import join_hostport, split_hostport

log = logging.getLogger("waypost.gossip")

BIND_ATTEMPTS = 8           # port 0: UDP may collide with another socket on TCP's port; try again
CONNECT_TIMEOUT = 1.0       # a gossip peer on a LAN answers a TCP connect well within a second
STREAM_TIMEOUT = 10.0       # memberlist's TCPTimeout (LAN): a whole push-pull exchange
IDLE_TIMEOUT = 10.0         # inbound connection: longest wait for the next frame
CONNECTION_TIMEOUT = 30.0   # inbound connection: longest life, whatever it sends
MAX_TCP_HANDLERS = 128      # inbound connections served at once; more are closed at once
UDP_BUFFER = 2 * 1024 * 1024  # socket buffers: absorb bursts of gossip without kernel drops
WARN_EVERY = 10.0           # at most one "unauthenticated packets" warning per this many seconds
COUNTERS = ("udp_in", "udp_out", "tcp_in", "tcp_out", "unauthenticated", "malformed_packets",
            "dropped_in", "dropped_out", "send_errors", "stream_errors", "handlers_rejected", "core_errors")

Drop = Callable[[str, bytes], bool]
OnDatagram = Callable[[bytes, str], None]
OnFrame = Callable[[Opened, str], list[bytes]]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, transport: GossipTransport) -> None:
        self.owner = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.owner._on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("gossip udp error: %s", exc)


class GossipTransport:
    def __init__(self, sealer: Sealer, on_datagram: OnDatagram, on_frame: OnFrame, drop: Drop | None = None) -> None:
        self.sealer = sealer
        self.counters = dict.fromkeys(COUNTERS, 0)
        self._on_datagram_cb = on_datagram
        self._on_frame_cb = on_frame
        self._drop = drop
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._inbound: set[asyncio.StreamWriter] = set()
        self._closed = False
        self._unauth_since_warn = 0
        self._last_warn = float("-inf")

    async def start(self, bind_host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        for attempt in range(BIND_ATTEMPTS):
            server = await asyncio.start_server(self._handle_tcp, bind_host, port, reuse_address=True)
            bound = server.sockets[0].getsockname()[1]
            try:
                udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(bind_host, bound))
            except OSError:
                server.close()
                if port != 0 or attempt == BIND_ATTEMPTS - 1:
                    raise
                continue
            break
        self._server, self._udp = server, udp
        sock = udp.get_extra_info("socket")
        if sock is not None:
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, opt, UDP_BUFFER)
        return bound

    @property
    def family(self) -> int | None:
        sock = self._udp.get_extra_info("socket") if self._udp is not None else None
        return sock.family if sock is not None else None

    def close(self) -> None:
        self._closed = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for writer in list(self._inbound):
            writer.close()
        self._inbound.clear()

    # --- sending ---
    def _dropped(self, direction: str, packet: bytes) -> bool:
        if self._drop is not None and self._drop(direction, packet):
            self.counters["dropped_in" if direction == "in" else "dropped_out"] += 1
            return True
        return False

    def send_udp(self, payload: bytes, address: str) -> None:
        if self._udp is None or self._closed:
            return
        packet = self.sealer.seal(SWIM, payload)
        if self._dropped("out", packet):
            return
        try:
            self._udp.sendto(packet, split_hostport(address))
            self.counters["udp_out"] += 1
        except (OSError, ValueError) as exc:
            self.counters["send_errors"] += 1
            log.debug("gossip udp send to %s failed: %s", address, exc)

    async def exchange(self, payload: bytes, address: str, expect_reply: bool) -> tuple[Opened | None, str]:
        """One outbound TCP exchange: (the opened reply or None, "" or why it failed)."""
        packet = self.sealer.seal(SWIM, payload)
        if self._dropped("out", packet):
            return None, "dropped by fault injection"
        writer: asyncio.StreamWriter | None = None
        try:
            host, port = split_hostport(address)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                reader, writer = await asyncio.open_connection(host, port)
            async with asyncio.timeout(STREAM_TIMEOUT):
                writer.write(frame(packet))
                self.counters["tcp_out"] += 1
                await writer.drain()
                if not expect_reply:
                    return None, ""
                data = await read_frame(reader)
            if self._dropped("in", data):
                return None, "reply dropped by fault injection"
            return self.sealer.open(data), ""
        except Unauthenticated:
            self.unauthenticated(address)
            return None, "the reply did not authenticate (wrong gossip encryption key?)"
        except asyncio.IncompleteReadError:
            self.counters["stream_errors"] += 1
            return None, "connection closed without a reply (the peer refused the frame: wrong encryption key?)"
        except TimeoutError:
            self.counters["stream_errors"] += 1
            return None, "timed out"
        except (OSError, ValueError, MalformedEnvelope) as exc:
            self.counters["stream_errors"] += 1
            return None, str(exc) or type(exc).__name__
        finally:
            if writer is not None:
                writer.close()

    # --- receiving ---
    def _on_datagram(self, data: bytes, addr: Any) -> None:
        if self._closed:
            return
        self.counters["udp_in"] += 1
        source = join_hostport(str(addr[0]), int(addr[1]))
        if self._dropped("in", data):
            return
        try:
            opened = self.sealer.open(data)
        except Unauthenticated:
            self.unauthenticated(source)
            return
        except MalformedEnvelope:
            self.counters["malformed_packets"] += 1
            return
        if opened.family != SWIM:
            self.counters["malformed_packets"] += 1
            return
        try:
            self._on_datagram_cb(opened.body, source)
        except Exception:
            self.counters["core_errors"] += 1
            log.exception("gossip datagram from %s failed", source)

    async def _handle_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closed or len(self._inbound) >= MAX_TCP_HANDLERS:
            self.counters["handlers_rejected"] += 1
            writer.close()
            return
        self._inbound.add(writer)
        peer = writer.get_extra_info("peername") or ("?", 0)
        source = join_hostport(str(peer[0]), int(peer[1]))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONNECTION_TIMEOUT
        try:
            while (remaining := deadline - loop.time()) > 0:
                async with asyncio.timeout(min(IDLE_TIMEOUT, remaining)):
                    data = await read_frame(reader, MAX_FRAME)
                self.counters["tcp_in"] += 1
                if self._dropped("in", data):
                    break
                for packet in self._on_frame_cb(self.sealer.open(data), source):
                    if not self._dropped("out", packet):
                        writer.write(frame(packet))
                async with asyncio.timeout(IDLE_TIMEOUT):
                    await writer.drain()
        except Unauthenticated:
            self.unauthenticated(source)
        except MalformedEnvelope:
            self.counters["malformed_packets"] += 1
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        except Exception:
            self.counters["core_errors"] += 1
            log.exception("gossip connection from %s failed", source)
        finally:
            self._inbound.discard(writer)
            writer.close()

    def unauthenticated(self, source: str) -> None:
        self.counters["unauthenticated"] += 1
        self._unauth_since_warn += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_warn >= WARN_EVERY:
            log.warning("dropped %d gossip packet(s) that did not authenticate, latest from %s "
                        "(wrong or missing encryption key?)", self._unauth_since_warn, source)
            self._unauth_since_warn = 0
            self._last_warn = now
