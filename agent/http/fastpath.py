"""The read cache and the fast path in front of aiohttp for repeated catalog/health reads (layer 4).

Contract:
- `ReadCache` keeps, per (raw path, raw query without index/wait), the last serialised answer of a
  blocking read with its watch keys, its index and the `produce` function that computed it. An entry
  is current while the store's index of its keys is unchanged; a stale entry is recomputed by its
  own `produce` (the key determines the answer, so any request with that key may reuse it).
- `FastReadProtocol` owns each accepted connection first. A request it can answer without aiohttp
  — `GET` over HTTP/1.1, no body, no `Connection: close`, no `?consistent`, the key in the cache,
  not a blocking wait (no `index`, or an `index` the data has already passed), this server
  allowed to read locally (single server, or leader with a fresh lease) — is answered straight
  from the cache with the same headers `blocking_read` sends.
  Anything else hands the connection, with every byte not yet answered, to aiohttp's protocol for
  the rest of its life, so every other behaviour (errors, blocking waits, writes) stays aiohttp's.
- Idle fast connections are closed after `IDLE_SECONDS`, like aiohttp's keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate

IDLE_SECONDS = 75.0
MAX_HEAD = 16 * 1024
BLOCKING_PREFIXES = ("index=", "wait=")
HANDOFF_HEADERS = (b"content-length", b"transfer-encoding", b"connection: close", b"upgrade", b"expect")


def read_key(raw_path: str, raw_query: str) -> tuple[tuple[str, str], str]:
    """(cache key, raw value of `index` or "") from a request's raw path and query string."""
    kept = []
    index = ""
    for part in raw_query.split("&"):
        if not part:
            continue
        if part.startswith(BLOCKING_PREFIXES) or part in ("index", "wait"):
            if part.startswith("index="):
                index = part[6:]
            continue
        kept.append(part)
    return (raw_path, "&".join(kept)), index


@dataclass(slots=True)
class CachedRead:
    keys: tuple[str, ...]
    index: int
    body: bytes
    consistency: str
    produce: Callable[[], tuple[int, bytes]]
    response: bytes = b""  # the full HTTP response, built lazily for the fast path
    response_date: int = -1


class ReadCache:
    def __init__(self, capacity: int = 2048) -> None:
        self._entries: OrderedDict[tuple[str, str], CachedRead] = OrderedDict()
        self._capacity = capacity

    def get(self, key: tuple[str, str]) -> CachedRead | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: tuple[str, str], entry: CachedRead) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class _Date:
    """The HTTP Date header value, formatted once per second."""

    second = -1
    text = b""

    @classmethod
    def now(cls) -> tuple[int, bytes]:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, formatdate(second, usegmt=True).encode()
        return cls.second, cls.text


def build_response(entry: CachedRead, leader: bool, last_contact_ms: int) -> bytes:
    second, date = _Date.now()
    if entry.response_date == second and entry.response:
        return entry.response
    head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"X-Consul-Index: %d\r\nX-Consul-KnownLeader: %s\r\nX-Consul-LastContact: %d\r\n"
        b"X-Consul-Effective-Consistency: %s\r\nX-Consul-Query-Backend: blocking-query\r\n"
        b"Date: %s\r\nServer: waypost\r\nContent-Length: %d\r\n\r\n"
    ) % (max(1, entry.index), b"true" if leader else b"false", last_contact_ms,
         entry.consistency.encode(), date, len(entry.body))
    entry.response, entry.response_date = head + entry.body, second
    return entry.response


class FastReadServer:
    """Creates `FastReadProtocol`s and closes the idle ones."""

    def __init__(self, cache: ReadCache, catalog: object, fallback: Callable[[], asyncio.Protocol]) -> None:
        self.cache = cache
        self.catalog = catalog  # CatalogServer: store, reads_locally()
        self.fallback = fallback
        self.connections: set[FastReadProtocol] = set()
        self.served = 0

    def __call__(self) -> FastReadProtocol:
        return FastReadProtocol(self)

    async def sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SECONDS / 3)
            cutoff = time.monotonic() - IDLE_SECONDS
            for conn in [c for c in self.connections if c.last_seen < cutoff]:
                conn.close()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()


class FastReadProtocol(asyncio.Protocol):
    def __init__(self, owner: FastReadServer) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self.last_seen = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._owner.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connections.discard(self)
        self._transport = None

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()  # a slow reader stops being read from

    def resume_writing(self) -> None:
        if self._transport is not None:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        buffer = self._buffer + data if self._buffer else data
        while buffer:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._hand_off(buffer)
                else:
                    self._buffer = buffer
                return
            response = self._answer(buffer[:end])
            if response is None:
                self._hand_off(buffer)
                return
            self._transport.write(response)  # type: ignore[union-attr]
            self._owner.served += 1
            buffer = buffer[end + 4:]
        self._buffer = b""

    def _answer(self, head: bytes) -> bytes | None:
        line_end = head.find(b"\r\n")
        request_line = head if line_end < 0 else head[:line_end]
        if not request_line.startswith(b"GET /v1/") or not request_line.endswith(b" HTTP/1.1"):
            return None
        if line_end >= 0:
            headers = head[line_end:].lower()
            if any(h in headers for h in HANDOFF_HEADERS):
                return None
        target = request_line[4:-9].decode("latin-1")
        raw_path, _, raw_query = target.partition("?")
        if "consistent" in raw_query:
            return None
        key, raw_index = read_key(raw_path, raw_query)
        entry = self._owner.cache.get(key)
        if entry is None:
            return None
        catalog = self._owner.catalog
        if not catalog.reads_locally():  # type: ignore[attr-defined]
            return None  # a follower, or a leader without a fresh lease: the barrier path answers
        current = catalog.store.index_of(*entry.keys)  # type: ignore[attr-defined]
        if raw_index and (not raw_index.isdigit() or int(raw_index) >= current):
            return None  # a real wait (or a bad index): aiohttp's blocking path answers
        if entry.index != current:
            try:
                entry.index, entry.body = entry.produce()
            except Exception:  # e.g. a filter type error: aiohttp renders the 400
                return None
            entry.response = b""
        return build_response(entry, True, 0)  # a local read here means leader, contact 0

    def _hand_off(self, pending: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        self._owner.connections.discard(self)
        self._buffer = b""
        protocol = self._owner.fallback()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(pending)
