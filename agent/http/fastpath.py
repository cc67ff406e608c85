"""The read cache, and the fast path in front of aiohttp for repeated reads and plain KV writes (layer 4).

Contract:
- `ReadCache` keeps, per (raw path, raw query without index/wait), the last serialised answer of a
  blocking read with its watch keys, its index and the `produce` function that computed it. An entry
  is current while the store's index of its keys is unchanged; a stale entry is recomputed by its
  own `produce` (the key determines the answer, so any request with that key may reuse it).
- `FastPathProtocol` owns each accepted connection first. A read it can answer without aiohttp
  — `GET` over HTTP/1.1, no body, no `Connection: close`, no `?consistent`, the key in the cache,
  not a blocking wait (no `index`, or an `index` the data has already passed), this server
  allowed to read locally (single server, or leader with a fresh lease) — is answered straight
  from the cache with the same headers `blocking_read` sends. A plain KV read
  (`fastkv.plain_kv_get`: one key; default, `?consistent` or `?stale`; `index`/`wait`) is
  answered from the KV table as `kv.get` answers it (a missing key: 404), after what
  `kvwait.table_read` waits for: `read_barrier` unless `read_ready`, then a blocking query parks
  on the key's watch until its index passes `index` or the jittered wait ends; a parked read is
  dropped when its client goes away. A plain KV write (`fastkv.plain_kv_put`) is
  proposed as the same `set` command the aiohttp handler proposes and answered `true`/`false`.
  A failed barrier or write is answered with the error's status and message
  (`statuses.status_of`). While one is in flight the requests behind it wait (replies stay in
  order); more than `PAUSE_BUFFERED` bytes behind it stop the socket being read.
  Anything else hands the connection, with every byte not yet answered, to aiohttp's protocol for
  the rest of its life, so every other behaviour (errors, blocking waits, other writes) stays
  aiohttp's.
- Idle fast connections (nothing in flight) are closed after `IDLE_SECONDS`, like aiohttp's
  keep-alive timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from agent.catalog.commands import KVCommand, KVOp
from agent.http.blocking import jittered
from agent.http.fastkv import HttpDate, PlainGet, http_reply, plain_kv_get, plain_kv_put, read_reply
from agent.http.statuses import status_of
from agent.server import wait_for_index

log = logging.getLogger("waypost.http")
IDLE_SECONDS = 75.0
MAX_HEAD = 16 * 1024
PAUSE_BUFFERED = 1 << 20  # bytes read ahead behind a pending write before the socket stops being read
JSON, TEXT = b"application/json", b"text/plain; charset=utf-8"
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


def build_response(entry: CachedRead, leader: bool, last_contact_ms: int) -> bytes:
    second, _ = HttpDate.now()
    if entry.response_date == second and entry.response:
        return entry.response
    entry.response = read_reply(entry.body, entry.index, leader, last_contact_ms, entry.consistency,
                                b"X-Consul-Query-Backend: blocking-query\r\n")
    entry.response_date = second
    return entry.response


def written(ok: object) -> bytes:
    """The answer to a KV write, as the aiohttp handler's `json_response(bool(ok))`."""
    return http_reply(200, b"true" if ok else b"false", JSON)


def failure_reply(done: asyncio.Future[object]) -> bytes | None:
    """The answer for a fast request whose work failed (None when it succeeded)."""
    if done.cancelled():
        return http_reply(503, b"Service unavailable: the agent is stopping", TEXT)
    error = done.exception()
    if error is None:
        return None
    status = status_of(error)
    if status is not None:
        return http_reply(status, str(error).encode(), TEXT)
    log.error("internal error serving a fast-path request", exc_info=error)
    return http_reply(500, b"Internal error", TEXT)


class Catalog(Protocol):
    """What the fast path uses of `agent.server.CatalogServer` (unit tests pass a fake)."""

    store: Any
    fsm: Any

    def reads_locally(self) -> bool: ...
    def read_ready(self, mode: str) -> bool: ...
    def read_barrier(self, mode: str) -> Coroutine[object, object, None]: ...
    def apply(self, command: Any) -> Coroutine[object, object, object]: ...
    def known_leader(self) -> bool: ...
    def last_contact_ms(self) -> int: ...


class FastPathServer:
    """Creates `FastPathProtocol`s and closes the idle ones."""

    def __init__(self, cache: ReadCache, catalog: Catalog, fallback: Callable[[], asyncio.Protocol],
                 max_body_bytes: int) -> None:
        self.cache = cache
        self.catalog = catalog
        self.fallback = fallback
        self.max_body_bytes = max_body_bytes  # aiohttp's client_max_size: larger bodies are its to refuse
        self.connections: set[FastPathProtocol] = set()
        self.pending: set[asyncio.Future[object]] = set()   # writes and read barriers in flight
        self.last_kv_reply: tuple[tuple[object, ...], bytes] | None = None
        self.served = 0

    def __call__(self) -> FastPathProtocol:
        return FastPathProtocol(self)

    async def sweep_idle(self) -> None:
        while True:
            await asyncio.sleep(IDLE_SECONDS / 3)
            self.close_idle(time.monotonic())

    def close_idle(self, now: float) -> None:
        """Close the connections silent for `IDLE_SECONDS` with nothing in flight (a parked
        blocking query may wait 10 minutes)."""
        cutoff = now - IDLE_SECONDS
        for conn in [c for c in self.connections if c.last_seen < cutoff and not c.busy]:
            conn.close()

    def close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()


class FastPathProtocol(asyncio.Protocol):
    def __init__(self, owner: FastPathServer) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._inflight: asyncio.Future[object] | None = None   # a write, barrier or parked read
        self._abandon_on_close = False   # a read: nothing is lost when its client goes away
        self._read_paused = False
        self.last_seen = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._owner.connections.add(self)

    @property
    def busy(self) -> bool:
        return self._inflight is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner.connections.discard(self)
        self._transport = None
        if self._inflight is not None and self._abandon_on_close:
            self._inflight.cancel()

    def pause_writing(self) -> None:
        if self._transport is not None:
            self._transport.pause_reading()  # a slow reader stops being read from

    def resume_writing(self) -> None:
        if self._transport is not None and not self._read_paused:
            self._transport.resume_reading()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_seen = time.monotonic()
        self._buffer = self._buffer + data if self._buffer else data
        if self._inflight is None:
            self._serve_buffered()
        elif len(self._buffer) > PAUSE_BUFFERED and self._transport is not None:
            self._transport.pause_reading()
            self._read_paused = True

    def _serve_buffered(self) -> None:
        buffer = self._buffer
        while buffer:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > MAX_HEAD:
                    self._hand_off(buffer)
                else:
                    self._buffer = buffer
                return
            head = buffer[:end]
            put = plain_kv_put(head, self._owner.max_body_bytes)
            if put is not None:
                body_end = end + 4 + put.length
                if len(buffer) < body_end:
                    self._buffer = buffer  # wait for the rest of the body
                    return
                self._buffer = buffer[body_end:]
                command = KVCommand(KVOp("set", put.key, buffer[end + 4:body_end], 0))
                self._after(self._owner.catalog.apply(command), written)
                return
            get = plain_kv_get(head)
            if get is not None and (get.index or not self._owner.catalog.read_ready(get.consistency)):
                self._buffer = buffer[end + 4:]
                self._after(self._kv_wait(get), lambda _, get=get: self._kv_read(get), read=True)
                return
            response = self._kv_read(get) if get is not None else self._answer(head)
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
        if not catalog.reads_locally():
            return None  # a follower, or a leader without a fresh lease: the barrier path answers
        current = catalog.store.index_of(*entry.keys)
        if raw_index and (not raw_index.isdigit() or int(raw_index) >= current):
            return None  # a real wait (or a bad index): aiohttp's blocking path answers
        if entry.index != current:
            try:
                entry.index, entry.body = entry.produce()
            except Exception:  # e.g. a filter type error: aiohttp renders the 400
                return None
            entry.response = b""
        return build_response(entry, True, 0)  # a local read here means leader, contact 0

    async def _kv_wait(self, get: PlainGet) -> None:
        """What `kvwait.table_read` waits for before it reads: the barrier, then the key's index."""
        catalog = self._owner.catalog
        await catalog.read_barrier(get.consistency)
        await wait_for_index(lambda: catalog.fsm.kv.get(get.key)[0],
                             lambda wake: catalog.fsm.kv.watch(wake, keys=[get.key]), get.index, jittered(get.wait))

    def _kv_read(self, get: PlainGet) -> bytes:
        """One KV entry (or its absence: 404, empty body) as aiohttp's handler answers it. The reply
        is shared by every reader of the same key, index, headers and second (a fan-out of
        watchers woken by one write encodes it once)."""
        catalog = self._owner.catalog
        table = catalog.fsm.kv   # replaced by a snapshot restore: part of the memo key
        index, entry = table.get(get.key)
        leader, contact = catalog.known_leader(), catalog.last_contact_ms()
        memo_key = (table, get.key, index, entry is None, leader, contact, get.consistency, HttpDate.now()[0])
        memo = self._owner.last_kv_reply
        if memo is not None and memo[0] == memo_key:
            return memo[1]
        body = b"" if entry is None else json.dumps([entry.to_api()], separators=(",", ":")).encode()
        reply = read_reply(body, index, leader, contact, get.consistency, status=200 if entry is not None else 404)
        self._owner.last_kv_reply = (memo_key, reply)
        return reply

    def _after(self, work: Coroutine[object, object, object], answer: Callable[[object], bytes], *,
               read: bool = False) -> None:
        """Reply `answer(result)` once `work` is done; the requests behind it wait, so replies stay
        in order. A `read` is abandoned when the client goes away (a parked blocking query holds
        nothing then); a write runs to its end all the same."""
        done = asyncio.ensure_future(work)
        self._inflight, self._abandon_on_close = done, read
        self._owner.pending.add(done)  # the loop keeps only weak references to tasks
        done.add_done_callback(lambda _: self._answer_after(done, answer))

    def _answer_after(self, done: asyncio.Future[object], answer: Callable[[object], bytes]) -> None:
        self._owner.pending.discard(done)
        self._inflight = None
        self.last_seen = time.monotonic()  # idle from the answer on, not from the request
        if self._transport is None:
            return  # the client went away; a write stands all the same
        if self._read_paused:
            self._read_paused = False
            self._transport.resume_reading()
        reply = failure_reply(done) or answer(done.result())
        self._transport.write(reply)
        self._owner.served += 1
        self._serve_buffered()

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
