"""RemoteDnsLookup: a client agent's DNS reads, answered by a server (layer 3).

Contract: implements `dns.lookup.Lookup` by calling a server's `/v1/internal/dns/*` endpoints
(`agent/http/internal_dns.py`, which run that server's own `DnsLookup`, freshness rules included),
through `ServerPool` with one shared keep-alive `ClientSession`:
- `service_endpoints` → `GET service/<name>?tag=&dc=`, `node` → `GET node/<name>?dc=`,
  `ptr` → `GET ptr/<address>`, `name_servers` → `GET ns`; a 404 with body `null` is None, a 404
  marked `UNKNOWN_DC_HEADER` re-raises `UnknownDatacenter` (NXDOMAIN); any other failure (no
  server, timeouts, 5xx, a malformed answer) raises `LookupUnavailable` (SERVFAIL).
- `change_index(service)` returns a counter that advances on every call, for any argument: the
  DNS answer cache (dns/cache.py) then never finds an entry current, so a client agent never
  serves a cached remote answer that may be stale (the server's answers are not cached here).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import aiohttp

from agent.remote.client import request_json, segment
from agent.remote.dns_json import UNKNOWN_DC_HEADER, endpoint_from_json, node_from_json, ptr_from_json
from agent.remote.servers import ServerPool
from dns.lookup import LookupUnavailable, NodeRecord, PtrOwner, ServiceEndpoint, UnknownDatacenter

DNS_SECONDS = 5.0  # a stub resolver gives up after about this long anyway
DNS_CONNECT_SECONDS = 2.0
PREFIX = "/v1/internal/dns"


def _unknown_dc(response: aiohttp.ClientResponse, text: str) -> Exception | None:
    datacenter = response.headers.get(UNKNOWN_DC_HEADER)
    return UnknownDatacenter(datacenter) if datacenter is not None else None


class RemoteDnsLookup:
    def __init__(self, pool: ServerPool, session: aiohttp.ClientSession, datacenter: str, *,
                 timeout: float = DNS_SECONDS) -> None:
        self._pool = pool
        self._session = session
        self.datacenter = datacenter
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=min(DNS_CONNECT_SECONDS, timeout))
        self._changes = itertools.count(1)

    async def _get(self, path: str, query: dict[str, str] | None = None) -> object:
        try:
            return await request_json(self._pool, self._session, "GET", PREFIX + path, query=query,
                                      timeout=self._timeout, none_on_404=True, on_404=_unknown_dc)
        except UnknownDatacenter:
            raise
        except Exception as exc:  # any remote failure is a SERVFAIL, never a wrong answer
            raise LookupUnavailable(str(exc) or type(exc).__name__) from exc

    @staticmethod
    def _dc_query(datacenter: str | None) -> dict[str, str]:
        return {"dc": datacenter} if datacenter else {}

    async def service_endpoints(self, service: str, tag: str | None,
                                datacenter: str | None) -> Sequence[ServiceEndpoint] | None:
        query = self._dc_query(datacenter)
        if tag:
            query["tag"] = tag
        data = await self._get(f"/service/{segment(service)}", query)
        if data is None:
            return None
        return self._parse_list(data, endpoint_from_json)

    async def node(self, name: str, datacenter: str | None) -> NodeRecord | None:
        data = await self._get(f"/node/{segment(name)}", self._dc_query(datacenter))
        return None if data is None else self._parse(data, node_from_json)

    async def ptr(self, address: str) -> PtrOwner | None:
        data = await self._get(f"/ptr/{segment(address)}")
        return None if data is None else self._parse(data, ptr_from_json)

    async def name_servers(self) -> Sequence[NodeRecord]:
        data = await self._get("/ns")
        return self._parse_list(data or [], node_from_json)

    def change_index(self, service: str | None) -> int:
        return next(self._changes)

    @staticmethod
    def _parse(data: object, parse):  # type: ignore[no-untyped-def]
        try:
            return parse(data)
        except Exception as exc:
            raise LookupUnavailable(str(exc)) from exc

    @classmethod
    def _parse_list(cls, data: object, parse):  # type: ignore[no-untyped-def]
        if not isinstance(data, list):
            raise LookupUnavailable("malformed answer: expected a list")
        return [cls._parse(item, parse) for item in data]
