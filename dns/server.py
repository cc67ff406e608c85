"""UDP and TCP listeners for the DNS interface (layer 3, asyncio).

Contract:
- `DnsServer(config, lookup, rng=None)`; `await start(host, port) -> (udp_port, tcp_port)` binds
  both transports (port 0 → ephemeral; the UDP port is then reused for TCP when free);
  `await stop()` closes listeners, drops TCP clients and cancels in-flight work.
- UDP: the listener owns a non-blocking socket registered with `loop.add_reader`; each wake-up
  drains it, UDP_BATCH datagrams per `recvmmsg` with their hot answers sent back by one
  `sendmmsg` (dns/mmsg.py; plain `recvfrom`/`sendto` where unavailable or `batched_io` is False).
  A query whose exact bytes (after the ID) are in the handler's hot cache, with nothing in the
  catalog changed since the entry was checked, is answered right there (a dict lookup, the epoch
  test, the ID prepended: no parsing, no objects, no transport); next the revalidating hot lookup
  and the parsed-question cache; anything else runs as a task of the server, one per distinct
  query: identical ones arriving meanwhile get that task's answer (single flight). A reply the
  kernel cannot take at once is dropped (the client retries). `_UdpProtocol.datagram_received` is
  the same logic for one packet through a transport (tests, fuzzing).
  TCP: 2-byte length-prefixed messages, several per connection, answered in order; a connection
  idle for `tcp_idle_timeout` or sending a truncated frame is closed; beyond `max_tcp_clients`
  new connections are closed at once. Bad packets never raise out of a listener.
- Counters for metrics: `queries["udp"|"tcp"]` counts every query received, `cache_hits` those
  answered from a cache; `on_answered(seconds)`, when set, is called with the time spent on each
  query that missed the answer cache. (Plain int attributes on the hot path, summed on read.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections.abc import Callable

from dns.config import DnsConfig
from dns.handler import DnsHandler
from dns.lookup import Lookup
from dns.mmsg import Batch
from dns.recursor import Forwarder

EPHEMERAL_PAIR_ATTEMPTS = 20  # UDP ports tried (port 0) before giving up on a free TCP twin
log = logging.getLogger(__name__)

MAX_PENDING_UDP = 1024  # queries waiting on a lookup; beyond that, new misses are dropped
UDP_BATCH = 64  # datagrams read per system call (and per wake-up without recvmmsg)
UDP_BATCH_ROUNDS = 4  # recvmmsg calls per wake-up before yielding to the loop
MAX_UDP_QUERY = 4096  # bytes read per datagram (a longer query is cut and answered FORMERR)


class _SocketSender:
    """What `_UdpProtocol` sends through when it reads its own socket: a non-blocking `sendto`
    that drops a reply the kernel cannot take right now (UDP: the client retries)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.dropped = 0
        self.closed = False

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1
        except OSError as exc:
            log.debug("dns: udp send failed: %r", exc)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _UdpProtocol(asyncio.DatagramProtocol):
    """UDP queries in, replies out. Real listeners read the socket themselves (`on_readable`,
    registered with `loop.add_reader`); `datagram_received` is the same logic one packet at a time
    (tests and the fuzzer drive it with a fake transport)."""

    def __init__(self, server: DnsServer):
        self.server = server
        self.transport: asyncio.DatagramTransport | _SocketSender | None = None
        self._hot = server.handler.hot.entries  # the dict itself: the hot path reads it inline
        self._epoch = server.handler.epoch
        self.received = 0
        self.past_hot = 0  # received queries the inline hot path did not answer
        self._inflight: dict[bytes, list[tuple[bytes, tuple[str, int]]]] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def on_readable(self, sock: socket.socket) -> None:
        """Drain up to UDP_BATCH datagrams: exact-bytes hits are answered right here with
        `sock.sendto` (no transport, no per-packet callback); the rest go to `_past_hot`."""
        hot_get = self._hot.get
        epoch = self._epoch()  # only the slow path below can run other code: re-read after it
        recv = sock.recvfrom
        send = sock.sendto
        count = 0
        try:
            while count < UDP_BATCH:
                data, addr = recv(MAX_UDP_QUERY)
                count += 1
                entry = hot_get(data[2:])
                if entry is not None and entry.epoch == epoch:
                    send(data[:2] + next(entry.cycle), addr)
                else:
                    self._past_hot(data, addr)
                    epoch = self._epoch()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as exc:  # e.g. an ICMP error for an earlier reply, or a full send buffer
            log.debug("dns: udp socket error %r", exc)
        except Exception:
            log.exception("dns: udp read failed")
        finally:
            self.received += count

    def on_readable_batch(self, batch: Batch) -> None:
        """`on_readable` with recvmmsg/sendmmsg: one system call per batch each way."""
        hot_get = self._hot.get
        epoch = self._epoch()
        query, reply, sender = batch.query, batch.reply, batch.sender
        total = 0
        try:
            while total < UDP_BATCH * UDP_BATCH_ROUNDS:
                count = batch.recv()
                total += count
                for i in range(count):
                    data = query(i)
                    entry = hot_get(data[2:])
                    if entry is not None and entry.epoch == epoch:
                        reply(i, data[:2] + next(entry.cycle))
                    else:
                        self._past_hot(data, sender(i))
                        epoch = self._epoch()
                batch.flush()
                if count < batch.size:
                    break
        except OSError as exc:
            log.debug("dns: udp socket error %r", exc)
        except Exception:
            log.exception("dns: udp read failed")
        finally:
            if batch.staged:
                batch.flush()
            self.received += total

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received += 1
        try:
            entry = self._hot.get(data[2:])
            if entry is not None and entry.epoch == self._epoch():
                self.transport.sendto(data[:2] + next(entry.cycle), addr)  # type: ignore[union-attr]
                return
        except Exception:
            log.exception("dns: cache path failed")
            return
        self._past_hot(data, addr)

    def _past_hot(self, data: bytes, addr: tuple[str, int]) -> None:
        self.past_hot += 1
        try:
            handler = self.server.handler
            tail = handler.hot_get(data[2:])
            reply = data[:2] + tail if tail is not None else handler.answer_cached(data, False)
        except Exception:
            log.exception("dns: cache path failed")
            reply = None
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)
            return
        # single flight: identical queries (bytes after the ID) arriving while one is being answered
        # wait for that answer instead of each building it (after a catalog change, a busy server
        # would otherwise spawn a task per queued packet)
        waiters = self._inflight.get(data[2:])
        if waiters is not None:
            if len(waiters) < MAX_PENDING_UDP:
                waiters.append((data[:2], addr))
            return
        self._inflight[data[2:]] = []
        if not self.server._spawn(self._answer(data, addr)):
            del self._inflight[data[2:]]

    async def _answer(self, data: bytes, addr: tuple[str, int]) -> None:
        started = time.perf_counter()
        try:
            reply = await self.server.handler.handle(data, False)
        finally:
            waiters = self._inflight.pop(data[2:], ())
        if self.server.on_answered is not None:
            self.server.on_answered(time.perf_counter() - started)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)
            tail = reply[2:]
            for query_id, waiter in waiters:
                self.transport.sendto(query_id + tail, waiter)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns: udp error %r", exc)


class DnsServer:
    def __init__(self, config: DnsConfig, lookup: Lookup, rng: random.Random | None = None):
        self.config = config
        self.rng = rng or random.Random()
        self._addresses: set[tuple[str, int]] = set()
        forwarder = Forwarder(config, self.rng, lambda: self._addresses) if config.recursors else None
        self.handler = DnsHandler(config, lookup, rng=self.rng, serial=lambda: int(time.time()),
                                  forward=forwarder)
        self._udp: _SocketSender | None = None
        self._tcp: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._tcp_clients: set[asyncio.StreamWriter] = set()
        self._udp_protocol: _UdpProtocol | None = None
        self._tcp_queries = 0
        self._stopping = False
        self.on_answered: Callable[[float], None] | None = None  # metrics hook (slow path only)
        self.batched_io = True  # recvmmsg/sendmmsg where available (False: recvfrom/sendto)

    @property
    def queries(self) -> dict[str, int]:
        udp = self._udp_protocol.received if self._udp_protocol is not None else 0
        return {"udp": udp, "tcp": self._tcp_queries}

    @property
    def cache_hits(self) -> int:
        proto = self._udp_protocol
        return self.handler.cache.hits + (proto.received - proto.past_hot if proto is not None else 0)

    def _spawn(self, coro) -> bool:
        if len(self._tasks) >= MAX_PENDING_UDP:
            coro.close()
            return False
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        # with port 0, UDP and TCP should still share one number (clients try TCP on the UDP port
        # after a truncated answer): retry a few ephemeral ports whose TCP twin is taken
        for attempt in range(EPHEMERAL_PAIR_ATTEMPTS):
            sock = await self._udp_socket(host, port)
            udp_port = sock.getsockname()[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, port or udp_port, reuse_address=True)
                break
            except OSError:
                sock.close()
                if port or attempt == EPHEMERAL_PAIR_ATTEMPTS - 1:
                    raise
        protocol = _UdpProtocol(self)
        sender = _SocketSender(sock)
        protocol.connection_made(sender)  # type: ignore[arg-type]
        batch = Batch.create(sock, UDP_BATCH) if self.batched_io else None
        if batch is not None:
            loop.add_reader(sock.fileno(), protocol.on_readable_batch, batch)
        else:
            loop.add_reader(sock.fileno(), protocol.on_readable, sock)
        self._udp_protocol = protocol
        self._udp = sender
        tcp_port = self._tcp.sockets[0].getsockname()[1]
        self._addresses = {(host, udp_port), (host, tcp_port)}
        log.info("dns: listening on %s udp/%d tcp/%d", host, udp_port, tcp_port)
        return udp_port, tcp_port

    @staticmethod
    async def _udp_socket(host: str, port: int) -> socket.socket:
        """A bound non-blocking UDP socket (the first address `host` resolves to)."""
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM,
                                                             proto=socket.IPPROTO_UDP)
        if not infos:
            raise OSError(f"cannot resolve {host!r}")
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.bind(address)
        except OSError:
            sock.close()
            raise
        return sock

    async def stop(self) -> None:
        self._stopping = True
        if self._udp is not None:
            asyncio.get_running_loop().remove_reader(self._udp.sock.fileno())
            self._udp.close()
            self._udp.sock.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
        for writer in list(self._tcp_clients):
            writer.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if self._tcp is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(1):
                    await self._tcp.wait_closed()
            self._tcp = None

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._tcp_clients) >= self.config.max_tcp_clients:
            writer.close()
            return
        self._tcp_clients.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)  # type: ignore[arg-type]
        try:
            while True:
                async with asyncio.timeout(self.config.tcp_idle_timeout):
                    (length,) = struct.unpack("!H", await reader.readexactly(2))
                    data = await reader.readexactly(length)
                self._tcp_queries += 1
                reply = self.handler.answer_cached(data, True)
                if reply is None:
                    started = time.perf_counter()
                    reply = await self.handler.handle(data, True)
                    if self.on_answered is not None:
                        self.on_answered(time.perf_counter() - started)
                if reply is None:
                    continue
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            if not self._stopping:
                raise
            # stop() cancelled us: end normally, or Python 3.11's start_server callback logs an error
        except Exception:
            log.exception("dns: tcp client failed")
        finally:
            self._tcp_clients.discard(writer)
            if task is not None:
                self._tasks.discard(task)  # type: ignore[arg-type]
            writer.close()
