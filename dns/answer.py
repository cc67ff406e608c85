"""Records → wire answers (pure, layer 1: dnslib as the codec; no I/O, clock or global random).

Contract:
- Builders return a `Built` (rcode, answer `Item`s each with the glue it needs, authority records);
  `encode(question, built, shape)` packs it for one client: answers capped by `shape.answer_cap`,
  optional additional records (node-meta TXT) dropped first when the reply is too big, then answers
  removed together with their glue until it fits `shape.limit`; **TC is set whenever an answer was
  left out**. OPT (version 0, our UDP size) only when the query had one. `aa` on our zone's answers.
- `healthy(endpoints, tag, only_passing)` filters instances (critical and maintenance out, warning
  out only with only_passing, tag case-insensitive); callers shuffle before building.
- Record rules follow reference §8.4: service A/AAAA/ANY from the service address or else the node
  address (deduplicated, `a_record_limit` after the shuffle, CNAME when only hostnames exist); SRV
  priority 1, weight by status, target `<node>.node.<dc>.<domain>` or `<hex>.addr.<dc>.<domain>` with
  A/AAAA glue and node-meta TXT; node A/AAAA/ANY/TXT; NS/SOA at the apex; PTR with TTL 0.
- The serial of the SOA is passed in by the caller (no clock here).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dnslib import (
    AAAA,
    CNAME,
    EDNS0,
    NS,
    PTR,
    QTYPE,
    RCODE,
    RR,
    SOA,
    SRV,
    TXT,
    A,
    DNSHeader,
    DNSLabel,
    DNSQuestion,
    DNSRecord,
)
from dnslib.label import DNSBuffer

from dns.config import DnsConfig
from dns.lookup import NodeRecord, PtrOwner, ServiceEndpoint
from dns.query import AddrQuery, NodeQuery, ServiceQuery, hex_address

RCODE_NOERROR, RCODE_NXDOMAIN = RCODE.NOERROR, RCODE.NXDOMAIN
T_A, T_AAAA, T_ANY, T_TXT = QTYPE.A, QTYPE.AAAA, QTYPE.ANY, QTYPE.TXT
T_SRV, T_NS, T_SOA, T_PTR, T_CNAME = QTYPE.SRV, QTYPE.NS, QTYPE.SOA, QTYPE.PTR, QTYPE.CNAME


@dataclass(slots=True)
class Item:
    record: RR
    glue: tuple[RR, ...] = ()  # kept with the answer (A/AAAA for an SRV target)
    extra: tuple[RR, ...] = ()  # optional additional data (node-meta TXT), dropped first


@dataclass(slots=True)
class Built:
    rcode: int = RCODE_NOERROR
    items: list[Item] = field(default_factory=list)
    authority: list[RR] = field(default_factory=list)
    aa: bool = True


@dataclass(frozen=True, slots=True)
class Question:
    labels: tuple[bytes, ...]
    qtype: int
    qclass: int


@dataclass(frozen=True, slots=True)
class Shape:
    limit: int  # bytes the reply may take (512, the EDNS size, or 65535 on TCP)
    answer_cap: int = 0  # 0 = none; udp_answer_limit for plain UDP
    edns: bool = False
    udp_size: int = 1232  # advertised in our OPT
    ra: bool = False
    compress: bool = True


def healthy(
    endpoints: Iterable[ServiceEndpoint], tag: str | None, only_passing: bool
) -> list[ServiceEndpoint]:
    allowed = ("passing",) if only_passing else ("passing", "warning")
    wanted = tag.lower() if tag else None
    return [
        ep for ep in endpoints
        if ep.status in allowed and (wanted is None or any(t.lower() == wanted for t in ep.tags))
    ]


# ---------------------------------------------------------------- records


def _ip_version(address: str) -> int:
    """4, 6, or 0 for a hostname."""
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 0


def _label(name: str) -> DNSLabel:
    return DNSLabel(name.encode())


def _address_rr(owner: DNSLabel, address: str, ttl: int) -> RR | None:
    version = _ip_version(address)
    if version == 4:
        return RR(owner, T_A, ttl=ttl, rdata=A(address))
    if version == 6:
        return RR(owner, T_AAAA, ttl=ttl, rdata=AAAA(address))
    return None


def _cname(owner: DNSLabel, hostname: str, ttl: int) -> RR:
    return RR(owner, T_CNAME, ttl=ttl, rdata=CNAME(_label(hostname.rstrip(".") + ".")))


def _wants(qtype: int, version: int) -> bool:
    return qtype == T_ANY or (qtype == T_A and version == 4) or (qtype == T_AAAA and version == 6)


def meta_txt(meta: Mapping[str, str]) -> list[bytes]:
    """Node meta as RFC 1464 strings (`rfc1035-` keys give the bare value), sorted by key."""
    out = []
    for key in sorted(meta):
        value = str(meta[key])
        if key.startswith("rfc1035-"):
            out.append(value.encode())
            continue
        escaped = key.replace("`", "``").replace("=", "`=")
        if escaped != escaped.strip(" "):
            escaped = escaped.replace(" ", "` ")
        out.append(f"{escaped}={value}".encode())
    return out


def _txt_rrs(owner: DNSLabel, meta: Mapping[str, str], ttl: int) -> tuple[RR, ...]:
    return tuple(RR(owner, T_TXT, ttl=ttl, rdata=TXT([s[:255]])) for s in meta_txt(meta))


def soa_rr(domain: str, config: DnsConfig, serial: int) -> RR:
    soa = config.soa
    return RR(
        _label(domain + "."), T_SOA, ttl=soa.min_ttl,
        rdata=SOA(_label(f"ns.{domain}."), _label(f"hostmaster.{domain}."),
                  (serial & 0xFFFFFFFF, soa.refresh, soa.retry, soa.expire, soa.min_ttl)),
    )


# ---------------------------------------------------------------- builders


def negative(rcode: int, domain: str, config: DnsConfig, serial: int) -> Built:
    """NXDOMAIN (rcode 3) or NODATA (rcode 0, no answers), SOA in authority for negative caching."""
    return Built(rcode, [], [soa_rr(domain, config, serial)])


def service_answer(q: Question, query: ServiceQuery, endpoints: Sequence[ServiceEndpoint],
                   config: DnsConfig, serial: int) -> Built:
    """`endpoints` are healthy and already shuffled. Empty → NXDOMAIN; nothing of the type → NODATA."""
    if not endpoints:
        return negative(RCODE_NXDOMAIN, query.domain, config, serial)
    ttl = config.service_ttl_for(query.service)
    items = _srv_items(q, query, endpoints, config, ttl) if q.qtype == T_SRV else _address_items(
        q, endpoints, ttl, config.a_record_limit
    )
    return Built(items=items) if items else negative(RCODE_NOERROR, query.domain, config, serial)


def _address_items(q: Question, endpoints: Sequence[ServiceEndpoint], ttl: int, limit: int) -> list[Item]:
    owner = DNSLabel(q.labels)
    seen: set[tuple[str, str]] = set()
    items: list[Item] = []
    hostname = None
    for ep in endpoints:
        address = ep.service_address or ep.node_address
        if (ep.node, address) in seen:
            continue
        seen.add((ep.node, address))
        version = _ip_version(address)
        if version == 0:
            hostname = hostname or address
        elif _wants(q.qtype, version):
            record = _address_rr(owner, address, ttl)
            assert record is not None
            items.append(Item(record))
    if limit:
        items = items[:limit]
    if not items and hostname and q.qtype in (T_A, T_AAAA, T_ANY):
        items = [Item(_cname(owner, hostname, ttl))]
    return items


def _srv_items(q: Question, query: ServiceQuery, endpoints: Sequence[ServiceEndpoint], config: DnsConfig,
               ttl: int) -> list[Item]:
    seen: set[tuple[str, str, int]] = set()
    items: list[Item] = []
    for ep in endpoints:
        address = ep.service_address or ep.node_address
        key = (ep.node, address, ep.port)
        if key in seen:
            continue
        seen.add(key)
        dc = ep.datacenter or query.datacenter or config.datacenter
        version = _ip_version(address)
        if version == 0:
            target, glue = _label(address.rstrip(".") + "."), ()
        else:
            name = f"{hex_address(address)}.addr" if ep.service_address else f"{ep.node}.node"
            target = _label(f"{name}.{dc}.{query.domain}.")
            glue_rr = _address_rr(target, address, ttl)
            glue = (glue_rr,) if glue_rr else ()
        extra: tuple[RR, ...] = ()
        if config.enable_additional_node_meta_txt and ep.node_meta and not ep.service_address:
            extra = _txt_rrs(target, ep.node_meta, ttl)
        weight = {"passing": ep.weight_passing, "warning": ep.weight_warning}.get(ep.status, 1)
        record = RR(DNSLabel(q.labels), T_SRV, ttl=ttl,
                    rdata=SRV(priority=1, weight=weight, port=ep.port, target=target))
        items.append(Item(record, glue, extra))
    return items


def node_answer(q: Question, query: NodeQuery, node: NodeRecord | None, config: DnsConfig,
                serial: int) -> Built:
    if node is None:
        return negative(RCODE_NXDOMAIN, query.domain, config, serial)
    owner, ttl = DNSLabel(q.labels), config.node_ttl_s
    txt = _txt_rrs(owner, node.meta, ttl)
    version = _ip_version(node.address)
    items: list[Item] = []
    if q.qtype in (T_A, T_AAAA, T_ANY):
        if version == 0 and node.address:
            items.append(Item(_cname(owner, node.address, ttl)))
        elif _wants(q.qtype, version):
            record = _address_rr(owner, node.address, ttl)
            assert record is not None
            extra = txt if config.enable_additional_node_meta_txt and q.qtype != T_ANY else ()
            items.append(Item(record, (), extra))
    if q.qtype in (T_TXT, T_ANY):
        items.extend(Item(rr) for rr in txt)
    return Built(items=items) if items else negative(RCODE_NOERROR, query.domain, config, serial)


def addr_answer(q: Question, query: AddrQuery, config: DnsConfig, serial: int) -> Built:
    version = _ip_version(query.address)
    if not _wants(q.qtype, version):
        return negative(RCODE_NOERROR, query.domain, config, serial)
    record = _address_rr(DNSLabel(q.labels), query.address, config.node_ttl_s)
    assert record is not None
    return Built(items=[Item(record)])


def ptr_answer(q: Question, owner: PtrOwner, domain: str, config: DnsConfig) -> Built:
    dc = owner.datacenter or config.datacenter
    kind = "node" if owner.kind == "node" else "service"
    items = []
    if q.qtype in (T_PTR, T_ANY):
        target = _label(f"{owner.name}.{kind}.{dc}.{domain}.")
        items.append(Item(RR(DNSLabel(q.labels), T_PTR, ttl=0, rdata=PTR(target))))
    return Built(items=items)


def apex_answer(q: Question, domain: str, servers: Sequence[NodeRecord], config: DnsConfig,
                serial: int) -> Built:
    """SOA → SOA + NS in authority; NS → NS records with glue; ANY → both; else NODATA."""
    ttl = config.node_ttl_s
    owner = DNSLabel(q.labels)
    ns_items = []
    for server in servers[:3]:
        dc = server.datacenter or config.datacenter
        target = _label(f"{server.node}.node.{dc}.{domain}.")
        glue = _address_rr(target, server.address, ttl)
        ns_items.append(Item(RR(owner, T_NS, ttl=ttl, rdata=NS(target)), (glue,) if glue else ()))
    if not ns_items:
        ns_items.append(Item(RR(owner, T_NS, ttl=ttl, rdata=NS(_label(f"ns.{domain}.")))))
    soa = soa_rr(domain, config, serial)
    soa.rname = owner
    if q.qtype == T_SOA:
        return Built(items=[Item(soa, tuple(g for i in ns_items for g in i.glue))],
                     authority=[i.record for i in ns_items])
    if q.qtype == T_NS:
        return Built(items=ns_items)
    if q.qtype == T_ANY:
        return Built(items=[Item(soa), *ns_items])
    return negative(RCODE_NOERROR, domain, config, serial)


# ---------------------------------------------------------------- encoding


class _NoNames(dict):
    """A DNSBuffer name table that never remembers: disables compression."""

    def __setitem__(self, key, value) -> None:
        pass


def _pack(q: Question, built: Built, items: Sequence[Item], extras: bool, tc: bool, shape: Shape,
          authority: bool = True) -> bytes:
    header = DNSHeader(id=0, qr=1, aa=int(built.aa), tc=int(tc), rd=0, ra=int(shape.ra),
                       rcode=built.rcode & 0xF)
    record = DNSRecord(header, q=DNSQuestion(DNSLabel(q.labels), q.qtype, q.qclass))
    additional: list[RR] = []
    seen: set[tuple[tuple[bytes, ...], int, str]] = set()
    for item in items:
        record.add_answer(item.record)
        for rr in item.glue + (item.extra if extras else ()):
            key = (tuple(label.lower() for label in rr.rname.label), rr.rtype, repr(rr.rdata))
            if key not in seen:
                seen.add(key)
                additional.append(rr)
    if authority:
        for rr in built.authority:
            record.add_auth(rr)
    for rr in additional:
        record.add_ar(rr)
    if shape.edns:
        record.add_ar(EDNS0(udp_len=shape.udp_size, ext_rcode=built.rcode >> 4))
    record.set_header_qa()
    buffer = DNSBuffer()
    if not shape.compress:
        buffer.names = _NoNames()
    record.header.pack(buffer)
    for question in record.questions:
        question.pack(buffer)
    for rr in record.rr + record.auth + record.ar:
        rr.pack(buffer)
    return bytes(buffer.data)


def encode(q: Question, built: Built, shape: Shape) -> bytes:
    items = built.items
    cap = min(len(items), shape.answer_cap) if shape.answer_cap else len(items)
    capped = cap < len(items)
    data = _pack(q, built, items[:cap], True, capped, shape)
    if len(data) <= shape.limit:
        return data
    data = _pack(q, built, items[:cap], False, capped, shape)
    if len(data) <= shape.limit:
        return data
    # binary search the largest prefix of answers (with their glue) that fits; TC tells the client
    lo, hi = 0, cap - 1
    best = _pack(q, built, [], False, True, shape)
    if len(best) > shape.limit:
        best = _pack(q, built, [], False, True, shape, authority=False)
    while lo <= hi:
        mid = (lo + hi) // 2
        candidate = _pack(q, built, items[:mid], False, True, shape)
        if len(candidate) <= shape.limit:
            best, lo = candidate, mid + 1
        else:
            hi = mid - 1
    return best
