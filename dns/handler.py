"""One DNS message in, one reply out: rcode rules, lookups, answer building and the cache (layer 3).

Contract:
- `DnsHandler(config, lookup, rng=..., serial=..., forward=...)`; `answer_cached(data, tcp)` is the
  synchronous hot path (a patched cached answer, or None); `await handle(data, tcp)` answers
  anything and returns the reply bytes, or None when the packet deserves silence. It never raises
  for bad input: malformed → FORMERR, other opcodes → NOTIMP, AXFR/IXFR → NOTIMP, class other than
  IN/ANY → REFUSED, EDNS version ≠ 0 → BADVERS (with OPT), a lookup failure → SERVFAIL, an unknown
  datacenter → NXDOMAIN. Names outside our zones (and PTR for unknown addresses) go to `forward`
  when recursors are configured, else REFUSED.
- `forward(data, tcp) -> bytes | None` relays to upstream (dns/recursor.py); None → SERVFAIL.
- `serial()` gives the SOA serial (the server passes Unix time); `rng` shuffles answers. A service
  answer is encoded once per change; its other cached shuffles are permutations of that reply's
  answer blocks (wire.answer_blocks) when nothing was trimmed (no TC, no answer cap, no
  `a_record_limit` subset), else each shuffle is built and encoded (dnslib) as before.
- Two caches (dns/cache.py): `cache` (by parsed question, patched per request) and `hot` (by the
  exact query bytes after the ID, for UDP queries whose packet is `plain`): every UDP answer that
  can be cached, from either path, is also installed in `hot`, whose hits the UDP listener serves
  without calling the handler (`epoch()` is `lookup.change_index(None)`, the cheap "anything
  changed?" test; `hot_get(key)` is the full revalidating lookup).
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import random
from collections.abc import Awaitable, Callable, Sequence

from dns import answer as ans
from dns.cache import AnswerCache, CacheKey, HotCache
from dns.config import DnsConfig
from dns.lookup import Lookup, ServiceEndpoint, UnknownDatacenter
from dns.query import (
    AddrQuery,
    ApexQuery,
    ExternalQuery,
    InvalidQuery,
    NodeQuery,
    PtrQuery,
    Query,
    ServiceQuery,
    Zones,
    parse_query,
)
from dns.recursor import ForwardLoop
from dns.wire import (
    RCODE_BADVERS,
    RCODE_FORMERR,
    RCODE_NOERROR,
    RCODE_NOTIMP,
    RCODE_NXDOMAIN,
    RCODE_REFUSED,
    RCODE_SERVFAIL,
    Drop,
    Reject,
    Request,
    answer_blocks,
    error_response,
    parse_request,
    patch,
    truncated_reply,
)

log = logging.getLogger(__name__)

Forward = Callable[[bytes, bool], Awaitable[bytes | None]]
TCP_LIMIT = 65535
PLAIN_UDP_LIMIT = 512
CLASS_IN, CLASS_ANY = 1, 255
QTYPE_IXFR, QTYPE_AXFR, QTYPE_OPT = 251, 252, 41
MAX_UDP_ANSWERS = 8  # Consul's hard cap on udp_answer_limit


class _Shuffles:
    """Internal: the endpoint orders of a service answer's other variants, built on demand."""

    __slots__ = ("orders", "permutable", "query", "serial")

    def __init__(self, orders: list[Sequence[ServiceEndpoint]], query: ServiceQuery, serial: int,
                 permutable: bool):
        self.orders = orders
        self.query = query
        self.serial = serial
        self.permutable = permutable  # False when a_record_limit keeps an order-dependent subset


class _Forwarded(Exception):
    """Internal: the question is not ours to answer."""


class DnsHandler:
    def __init__(self, config: DnsConfig, lookup: Lookup, *, rng: random.Random | None = None,
                 serial: Callable[[], int] = lambda: 1, forward: Forward | None = None):
        self.config = config
        self.lookup = lookup
        self.rng = rng or random.Random()
        self.serial = serial
        self.forward = forward if config.recursors else None
        self.zones = Zones.make(config.domain, config.alt_domain)
        self.cache = AnswerCache(config.cache_entries)
        self.hot = HotCache(config.cache_entries)
        self.epoch = functools.partial(lookup.change_index, None)
        self._compress = not config.disable_compression

    # ------------------------------------------------------------ hot path

    def _key(self, req: Request, tcp: bool) -> CacheKey:
        qname = req.qname.lower() if self._compress else req.qname
        return (qname, req.qtype, req.qclass, self._limit(req, tcp), tcp)

    def _limit(self, req: Request, tcp: bool) -> int:
        if tcp:
            return TCP_LIMIT
        if not req.edns:
            return PLAIN_UDP_LIMIT
        return min(max(req.edns_size, PLAIN_UDP_LIMIT), self.config.max_udp_size)

    def hot_get(self, key: bytes) -> bytes | None:
        """The reply tail (after the ID) for a UDP query whose bytes after the ID are `key`."""
        return self.hot.get(key, self.lookup.change_index)

    def answer_cached(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            req = parse_request(data)
        except (Drop, Reject):
            return None
        if req.edns_version:
            return None
        entry = self.cache.entry(self._key(req, tcp), self.lookup.change_index, self.epoch())
        if entry is None:
            return None
        if not tcp and req.plain:
            self._install_hot(req, entry.variants, entry.dep, entry.token, entry.epoch)
        return patch(entry.rotate(), data, req.qname)

    def _install_hot(self, req: Request, variants: Sequence[bytes], dep: str | None, token: int,
                     epoch: int) -> None:
        tails = [patch(wire, req.data, req.qname)[2:] for wire in variants]
        self.hot.put(req.data[2:], tails, dep, token, epoch)

    # ------------------------------------------------------------ full path

    async def handle(self, data: bytes, tcp: bool) -> bytes | None:
        try:
            req = parse_request(data)
        except Drop:
            return None
        except Reject as rej:
            return error_response(data, rej.rcode, rej.question)
        try:
            return await self._handle(req, tcp)
        except Exception:  # a bug must cost one SERVFAIL, never the listener
            log.exception("dns: failed to answer a query")
            return self._error(req, RCODE_SERVFAIL)

    def _error(self, req: Request, rcode: int, aa: bool = False) -> bytes:
        return error_response(req.data, rcode, req.question, req.edns, self.config.max_udp_size,
                              aa=aa, ra=self.forward is not None)

    async def _handle(self, req: Request, tcp: bool) -> bytes | None:
        if req.edns and req.edns_version != 0:
            return self._error(req, RCODE_BADVERS)
        if req.qclass not in (CLASS_IN, CLASS_ANY):
            return self._error(req, RCODE_REFUSED)
        if req.qtype in (QTYPE_AXFR, QTYPE_IXFR):
            return self._error(req, RCODE_NOTIMP)
        if req.qtype in (QTYPE_OPT, 0):
            return self._error(req, RCODE_FORMERR)
        key = self._key(req, tcp)
        cached = self.cache.get(key, self.lookup.change_index, self.epoch())
        if cached is not None:
            return patch(cached, req.data, req.qname)
        lowered = tuple(label.lower() for label in req.labels)
        query = parse_query(lowered, req.qtype, self.zones)
        labels = lowered if self._compress else req.labels
        question = ans.Question(labels, req.qtype, req.qclass)
        shape = self._shape(req, tcp)
        epoch = self.epoch()  # read before the lookup, like the token
        try:
            builts, dep, token = await self._resolve(question, query)
        except _Forwarded:
            return await self._forward(req, tcp)
        first, *more = builts
        assert isinstance(first, ans.Built)
        variants = [ans.encode(question, first, shape)]
        for extra in more:
            if isinstance(extra, _Shuffles):
                variants += self._shuffled(question, first, variants[0], extra, shape)
            else:
                variants.append(ans.encode(question, extra, shape))
        if token is not None:
            self.cache.put(key, variants, dep, token, epoch)
            if not tcp and req.plain:
                self._install_hot(req, variants[1:] + variants[:1], dep, token, epoch)
        return patch(variants[0], req.data, req.qname)

    def _shape(self, req: Request, tcp: bool) -> ans.Shape:
        limit = self._limit(req, tcp)
        cap = 0
        if not tcp and not req.edns and self.config.udp_answer_limit:
            cap = min(MAX_UDP_ANSWERS, self.config.udp_answer_limit)
        return ans.Shape(limit=limit, answer_cap=cap, edns=req.edns, udp_size=self.config.max_udp_size,
                         ra=self.forward is not None, compress=self._compress)

    async def _resolve(self, q: ans.Question,
                       query: Query) -> tuple[list[ans.Built | _Shuffles], str | None, int | None]:
        """Built answers (for services: the first shuffle, then the others as `_Shuffles`), the
        cache dependency and its token.

        A token of None means "do not cache" (lookup errors)."""
        cfg, serial = self.config, self.serial()
        if isinstance(query, ExternalQuery):
            raise _Forwarded
        domain = getattr(query, "domain", self.zones.primary)
        dep = query.service if isinstance(query, ServiceQuery) else None
        token = self.lookup.change_index(dep)
        try:
            if isinstance(query, ServiceQuery):
                found = await self.lookup.service_endpoints(query.service, query.tag, query.datacenter)
                endpoints = ans.healthy(found or (), query.tag, cfg.only_passing)
                orders = self._orders(endpoints)
                first = ans.service_answer(q, query, orders[0], cfg, serial)
                if len(orders) == 1:
                    return [first], dep, token
                # the other shuffles are cut from the first answer's bytes when they can be
                trimmed = bool(cfg.a_record_limit) and len(endpoints) > cfg.a_record_limit
                return [first, _Shuffles(orders[1:], query, serial, not trimmed)], dep, token
            if isinstance(query, NodeQuery):
                node = await self.lookup.node(query.node, query.datacenter)
                return [ans.node_answer(q, query, node, cfg, serial)], dep, token
            if isinstance(query, PtrQuery):
                owner = await self.lookup.ptr(query.address)
                if owner is None:
                    if self.forward is not None:
                        raise _Forwarded
                    return [ans.Built(rcode=RCODE_REFUSED, aa=False)], dep, None
                return [ans.ptr_answer(q, owner, self.zones.primary, cfg)], dep, token
            if isinstance(query, AddrQuery):
                return [ans.addr_answer(q, query, cfg, serial)], dep, token
            if isinstance(query, ApexQuery):
                servers = list(await self.lookup.name_servers())
                self.rng.shuffle(servers)
                return [ans.apex_answer(q, domain, servers, cfg, serial)], dep, token
            assert isinstance(query, InvalidQuery)
            return [ans.negative(RCODE_NXDOMAIN, domain, cfg, serial)], dep, token
        except UnknownDatacenter:
            return [ans.negative(RCODE_NXDOMAIN, domain, cfg, serial)], dep, token
        except _Forwarded:
            raise
        except Exception:
            log.warning("dns: lookup failed for %r", query, exc_info=True)
            return [ans.Built(rcode=RCODE_SERVFAIL, aa=False)], dep, None

    def _shuffled(self, question: ans.Question, first: ans.Built, wire: bytes, rest: _Shuffles,
                  shape: ans.Shape) -> list[bytes]:
        """The other cached shuffles of a service answer. When every record the lookup gave is in
        `wire` (nothing trimmed, no TC) any order of them is a valid shuffle, so the variants are
        permutations of its answer blocks: one dnslib encode per change instead of one per
        variant. Otherwise (or when a block layout does not allow it) each order is built."""
        count = len(first.items)
        split = None
        if (rest.permutable and count >= 2 and first.rcode == RCODE_NOERROR and not wire[2] & 0x02
                and int.from_bytes(wire[6:8]) == count):
            split = answer_blocks(wire)
        if split is None:
            return [ans.encode(question, ans.service_answer(question, rest.query, order, self.config, rest.serial),
                               shape) for order in rest.orders]
        head, blocks, tail = split
        return [head + b"".join([blocks[i] for i in perm]) + tail for perm in self._index_orders(count)]

    def _index_orders(self, count: int) -> list[tuple[int, ...]]:
        """Up to cache_variants - 1 orders of range(count) other than the identity (already served)."""
        wanted = max(1, self.config.cache_variants) - 1
        identity = tuple(range(count))
        if math.factorial(count) - 1 <= wanted:
            perms = [p for p in itertools.permutations(identity) if p != identity]
            self.rng.shuffle(perms)
            return perms
        perms = []
        for _ in range(wanted):
            order = list(identity)
            self.rng.shuffle(order)
            perms.append(tuple(order))
        return perms

    def _orders(self, endpoints: list[ServiceEndpoint]) -> list[Sequence[ServiceEndpoint]]:
        """Shuffles to cache and rotate: every order when there are few, else random ones."""
        count = max(1, self.config.cache_variants)
        if len(endpoints) <= 1:
            return [endpoints]
        if math.factorial(len(endpoints)) <= count:
            orders = [list(p) for p in itertools.permutations(endpoints)]
            self.rng.shuffle(orders)
            return orders
        orders = []
        for _ in range(count):
            order = list(endpoints)
            self.rng.shuffle(order)
            orders.append(order)
        return orders

    async def _forward(self, req: Request, tcp: bool) -> bytes:
        if self.forward is None:
            return self._error(req, RCODE_REFUSED)
        try:
            reply = await self.forward(req.data, tcp)
        except ForwardLoop:
            log.warning("dns: forwarding loop detected; refusing")
            return self._error(req, RCODE_REFUSED)
        if reply is None or len(reply) < 12:
            return self._error(req, RCODE_SERVFAIL)
        reply = req.data[:2] + reply[2:]
        if not tcp and len(reply) > self._limit(req, tcp):
            reply = truncated_reply(reply)
        return reply
