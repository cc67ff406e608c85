"""Question name → typed query (pure, layer 0: stdlib only).

Contract:
- `Zones.make(domain, alt_domain)` holds our domains as label tuples (primary first).
- `parse_query(labels, qtype, zones)` takes the question's labels **lowercased** (bytes, as on the
  wire) and returns one of: `ServiceQuery`, `NodeQuery`, `AddrQuery`, `ApexQuery` (the domain
  itself), `InvalidQuery` (in our zone but names nothing: NXDOMAIN), `PtrQuery` (a full
  in-addr.arpa / ip6.arpa address) or `ExternalQuery` (outside our zones: recursors or REFUSED).
- Grammar (reference §8.2): labels left of the domain are scanned right-to-left for the first kind
  label (service, connect, virtual, ingress, node, query, addr); left of it are the query parts,
  right of it the locality: nothing, `<dc>` or `<dc>.dc`. Tags and node names may contain dots
  (labels re-joined). RFC 2782 `_<service>._<proto|tag>`: `_tcp` means no tag, any other protocol
  label is a tag; the `.service` label may be left out for SRV questions.
- `domain` in each query is the zone the question used (text, no trailing dot), so answers can
  name things in the same zone; PTR answers use the primary domain.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

Labels = tuple[bytes, ...]

QTYPE_SRV = 33
_KINDS = (b"service", b"connect", b"virtual", b"ingress", b"node", b"query", b"addr")
_VALID_LABEL = re.compile(rb"[a-z0-9_-]{1,63}\Z")
_HEX = re.compile(rb"[0-9a-f]+\Z")


@dataclass(frozen=True, slots=True)
class ServiceQuery:
    service: str
    tag: str | None
    datacenter: str | None
    domain: str
    rfc2782: bool = False


@dataclass(frozen=True, slots=True)
class NodeQuery:
    node: str
    datacenter: str | None
    domain: str


@dataclass(frozen=True, slots=True)
class AddrQuery:
    address: str  # canonical text form of an IPv4 or IPv6 address
    datacenter: str | None
    domain: str


@dataclass(frozen=True, slots=True)
class ApexQuery:
    domain: str


@dataclass(frozen=True, slots=True)
class InvalidQuery:
    domain: str


@dataclass(frozen=True, slots=True)
class PtrQuery:
    address: str


@dataclass(frozen=True, slots=True)
class ExternalQuery:
    pass


Query = ServiceQuery | NodeQuery | AddrQuery | ApexQuery | InvalidQuery | PtrQuery | ExternalQuery


@dataclass(frozen=True, slots=True)
class Zones:
    domains: tuple[Labels, ...]  # primary first

    @classmethod
    def make(cls, domain: str, alt_domain: str = "") -> Zones:
        zones = [_labels(domain)]
        if alt_domain.strip("."):
            zones.append(_labels(alt_domain))
        return cls(tuple(zones))

    @property
    def primary(self) -> str:
        return _text(self.domains[0])


def _labels(domain: str) -> Labels:
    return tuple(part.encode().lower() for part in domain.strip(".").split(".") if part)


def _text(labels: Labels) -> str:
    return ".".join(label.decode("ascii", "replace") for label in labels)


def parse_query(labels: Labels, qtype: int, zones: Zones) -> Query:
    # the longest matching zone wins, so an alt_domain below the primary one still works
    for zone in sorted(zones.domains, key=len, reverse=True):
        if len(labels) >= len(zone) and labels[len(labels) - len(zone) :] == zone:
            return _parse_in_zone(labels[: len(labels) - len(zone)], qtype, _text(zone))
    if labels[-2:] == (b"in-addr", b"arpa") or labels[-2:] == (b"ip6", b"arpa"):
        return _parse_ptr(labels)
    return ExternalQuery()


def _parse_in_zone(rest: Labels, qtype: int, domain: str) -> Query:
    if not rest:
        return ApexQuery(domain)
    if not all(_VALID_LABEL.match(label) for label in rest):
        return InvalidQuery(domain)
    for i in range(len(rest) - 1, -1, -1):
        if rest[i] in _KINDS:
            break
    else:
        # RFC 2782 without the `.service` label: _web._tcp[.dc].consul SRV
        if qtype == QTYPE_SRV and 2 <= len(rest) <= 3 and rest[0][:1] == rest[1][:1] == b"_":
            return _service(rest[:2], _decode(rest[2:3]), domain)
        return InvalidQuery(domain)
    parts, kind, suffix = rest[:i], rest[i], rest[i + 1 :]
    if len(suffix) == 0:
        datacenter = None
    elif len(suffix) == 1:
        datacenter = _decode(suffix)
    elif len(suffix) == 2 and suffix[1] == b"dc":
        datacenter = _decode(suffix[:1])
    else:
        return InvalidQuery(domain)
    if not parts:
        return InvalidQuery(domain)
    if kind == b"service":
        return _service(parts, datacenter, domain)
    if kind == b"node":
        return NodeQuery(_join(parts), datacenter, domain)
    if kind == b"addr":
        address = _decode_hex_address(parts)
        return AddrQuery(address, datacenter, domain) if address else InvalidQuery(domain)
    return InvalidQuery(domain)  # connect, virtual, ingress and prepared queries are not served


def _service(parts: Labels, datacenter: str | None, domain: str) -> Query:
    if len(parts) == 2 and parts[0][:1] == parts[1][:1] == b"_":
        service, proto = parts[0][1:], parts[1][1:]
        if not service or not proto:
            return InvalidQuery(domain)
        tag = None if proto == b"tcp" else proto.decode()
        return ServiceQuery(service.decode(), tag, datacenter, domain, rfc2782=True)
    tag = _join(parts[:-1]) or None
    return ServiceQuery(parts[-1].decode(), tag, datacenter, domain)


def _decode(parts: Labels) -> str | None:
    return parts[0].decode() if parts else None


def _join(parts: Labels) -> str:
    return b".".join(parts).decode()


def _decode_hex_address(parts: Labels) -> str | None:
    if len(parts) != 1 or not _HEX.match(parts[0]):
        return None
    raw = bytes.fromhex(parts[0].decode()) if len(parts[0]) % 2 == 0 else b""
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw))
    if len(raw) == 16:
        return str(ipaddress.IPv6Address(raw))
    return None


def _parse_ptr(labels: Labels) -> Query:
    body = labels[:-2]
    try:
        if labels[-2] == b"in-addr":
            if len(body) != 4 or not all(part.isdigit() and len(part) <= 3 for part in body):
                return ExternalQuery()
            return PtrQuery(str(ipaddress.IPv4Address(".".join(p.decode() for p in reversed(body)))))
        if len(body) != 32 or not all(len(p) == 1 and _HEX.match(p) for p in body):
            return ExternalQuery()
        return PtrQuery(str(ipaddress.IPv6Address(bytes.fromhex(b"".join(reversed(body)).decode()))))
    except ValueError:
        return ExternalQuery()


def hex_address(address: str) -> str:
    """The `<hex>` label of an `addr` name: 8 hex digits for IPv4, 32 for IPv6."""
    return ipaddress.ip_address(address).packed.hex()
