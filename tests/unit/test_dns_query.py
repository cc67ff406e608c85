"""Table-driven tests of dns/query.py: every name form, locality suffixes, invalid names, PTR."""

from __future__ import annotations

import pytest

from dns.query import (
    AddrQuery,
    ApexQuery,
    ExternalQuery,
    InvalidQuery,
    NodeQuery,
    PtrQuery,
    ServiceQuery,
    Zones,
    hex_address,
    parse_query,
)

ZONES = Zones.make("consul.", "corp.example")
A, SRV = 1, 33


def parse(name: str, qtype: int = A):
    return parse_query(tuple(name.lower().encode().rstrip(b".").split(b".")), qtype, ZONES)


@pytest.mark.parametrize(
    ("name", "qtype", "expected"),
    [
        ("web.service.consul", A, ServiceQuery("web", None, None, "consul")),
        ("web.service.dc2.consul", A, ServiceQuery("web", None, "dc2", "consul")),
        ("web.service.dc2.dc.consul", A, ServiceQuery("web", None, "dc2", "consul")),
        ("v1.web.service.consul", A, ServiceQuery("web", "v1", None, "consul")),
        ("a.b.web.service.consul", A, ServiceQuery("web", "a.b", None, "consul")),
        ("WEB.Service.CONSUL", A, ServiceQuery("web", None, None, "consul")),
        ("_web._tcp.service.consul", SRV, ServiceQuery("web", None, None, "consul", rfc2782=True)),
        ("_web._v1.service.consul", SRV, ServiceQuery("web", "v1", None, "consul", rfc2782=True)),
        ("_web._udp.service.dc1.consul", SRV, ServiceQuery("web", "udp", "dc1", "consul", rfc2782=True)),
        ("_web._tcp.consul", SRV, ServiceQuery("web", None, None, "consul", rfc2782=True)),
        ("_web._tcp.dc3.consul", SRV, ServiceQuery("web", None, "dc3", "consul", rfc2782=True)),
        ("_web._tcp.consul", A, InvalidQuery("consul")),
        ("node.service.consul", A, ServiceQuery("node", None, None, "consul")),
        ("service.node.consul", A, NodeQuery("service", None, "consul")),
        ("node1.node.consul", A, NodeQuery("node1", None, "consul")),
        ("node1.node.dc1.consul", A, NodeQuery("node1", "dc1", "consul")),
        ("my.host.node.consul", A, NodeQuery("my.host", None, "consul")),
        ("0a000001.addr.consul", A, AddrQuery("10.0.0.1", None, "consul")),
        ("0a000001.addr.dc1.consul", A, AddrQuery("10.0.0.1", "dc1", "consul")),
        ("fd000000000000000000000000000001.addr.consul", A, AddrQuery("fd00::1", None, "consul")),
        ("0a0000.addr.consul", A, InvalidQuery("consul")),
        ("zz000001.addr.consul", A, InvalidQuery("consul")),
        ("consul", A, ApexQuery("consul")),
        ("web.service.corp.example", A, ServiceQuery("web", None, None, "corp.example")),
        ("corp.example", A, ApexQuery("corp.example")),
        ("service.consul", A, InvalidQuery("consul")),
        ("web.consul", A, InvalidQuery("consul")),
        ("web.service.a.b.consul", A, InvalidQuery("consul")),
        ("web.service.a.peer.consul", A, InvalidQuery("consul")),
        ("web.query.consul", A, InvalidQuery("consul")),
        ("web.connect.consul", A, InvalidQuery("consul")),
        ("we b.service.consul", A, InvalidQuery("consul")),
        ("example.com", A, ExternalQuery()),
        ("consul.example.com", A, ExternalQuery()),
        ("1.0.0.10.in-addr.arpa", 12, PtrQuery("10.0.0.1")),
        ("0.10.in-addr.arpa", 12, ExternalQuery()),
        ("300.0.0.10.in-addr.arpa", 12, ExternalQuery()),
        (".".join(reversed("fd000000000000000000000000000001")) + ".ip6.arpa", 12, PtrQuery("fd00::1")),
        ("1.0.ip6.arpa", 12, ExternalQuery()),
    ],
)
def test_parse(name: str, qtype: int, expected) -> None:
    assert parse(name, qtype) == expected


def test_alt_domain_below_primary_prefers_longest_zone() -> None:
    zones = Zones.make("consul", "dc.consul")
    query = parse_query((b"web", b"service", b"dc", b"consul"), A, zones)
    assert query == ServiceQuery("web", None, None, "dc.consul")


def test_hex_address_round_trip() -> None:
    assert hex_address("10.1.0.9") == "0a010009"
    assert hex_address("fd00::1") == "fd000000000000000000000000000001"
    assert parse(f"{hex_address('fd00::1')}.addr.consul") == AddrQuery("fd00::1", None, "consul")
