"""dns/answer.py and dns/handler.py without sockets: rcodes, NODATA/SOA, TC and EDNS, SRV glue,
weights, 0x20 case, health filtering, TTLs, cache invalidation and malformed packets."""

from __future__ import annotations

import random
import struct

import pytest
from dnslib import EDNS0, QTYPE, RCODE, DNSRecord

from dns.config import DnsConfig, DnsConfigError
from dns.handler import DnsHandler
from dns.wire import RCODE_BADVERS
from tests.unit.test_dns_fakes import FakeLookup, ep, sample_lookup


def make(lookup: FakeLookup | None = None, seed: int = 7, **cfg) -> DnsHandler:
    return DnsHandler(DnsConfig(**cfg), lookup or sample_lookup(), rng=random.Random(seed), serial=lambda: 42)


def query(name: str, qtype: str = "A", *, edns: int | None = None, qid: int = 4321) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = qid
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns))
    return q.pack()


async def ask(handler: DnsHandler, name: str, qtype: str = "A", *, edns: int | None = None,
              tcp: bool = False) -> DNSRecord:
    data = query(name, qtype, edns=edns)
    reply = await handler.handle(data, tcp)
    assert reply is not None
    record = DNSRecord.parse(reply)
    assert record.header.id == 4321
    return record


def rdatas(record: DNSRecord, section: str = "rr") -> list[str]:
    return sorted(str(rr.rdata) for rr in getattr(record, section))


def soa_in_authority(record: DNSRecord) -> bool:
    return [rr.rtype for rr in record.auth] == [QTYPE.SOA]


# ---------------------------------------------------------------- rcodes


async def test_service_a_skips_critical_and_is_authoritative() -> None:
    r = await ask(make(), "web.service.consul")
    assert r.header.rcode == RCODE.NOERROR and r.header.aa == 1 and r.header.tc == 0
    assert rdatas(r) == ["10.0.0.1", "10.0.0.2"]
    assert not r.auth and not r.ar  # no OPT for a non-EDNS query


async def test_only_passing_drops_warning() -> None:
    r = await ask(make(only_passing=True), "web.service.consul")
    assert rdatas(r) == ["10.0.0.1"]


async def test_all_critical_is_nxdomain_with_soa() -> None:
    r = await ask(make(), "down.service.consul")
    assert r.header.rcode == RCODE.NXDOMAIN and soa_in_authority(r)


async def test_unknown_service_and_invalid_names_are_nxdomain() -> None:
    h = make()
    for name in ("nope.service.consul", "web.service.a.b.consul", "x.consul", "nope.node.consul",
                 "zz.addr.consul", "v9.web.service.consul"):
        r = await ask(h, name)
        assert r.header.rcode == RCODE.NXDOMAIN, name
        assert soa_in_authority(r) and r.header.aa == 1, name


async def test_aaaa_of_ipv4_service_is_nodata_with_soa_minimum() -> None:
    r = await ask(make(soa={"min_ttl": 30}), "web.service.consul", "AAAA")
    assert r.header.rcode == RCODE.NOERROR and not r.rr and soa_in_authority(r)
    soa = r.auth[0]
    assert soa.ttl == 30 and soa.rdata.times[4] == 30 and str(soa.rdata.mname) == "ns.consul."


async def test_default_negative_ttl_is_not_zero() -> None:
    r = await ask(make(), "nope.service.consul")
    assert r.auth[0].rdata.times[4] > 0


async def test_outside_domain_refused_without_recursors() -> None:
    r = await ask(make(), "example.com")
    assert r.header.rcode == RCODE.REFUSED and r.header.aa == 0 and r.header.ra == 0


async def test_unknown_datacenter_nxdomain_and_lookup_failure_servfail() -> None:
    lookup = sample_lookup()
    h = make(lookup)
    assert (await ask(h, "web.service.dc9.consul")).header.rcode == RCODE.NXDOMAIN
    lookup.failing = True
    r = await ask(h, "db.service.consul")
    assert r.header.rcode == RCODE.SERVFAIL
    lookup.failing = False
    assert (await ask(h, "db.service.consul")).header.rcode == RCODE.NOERROR  # SERVFAIL not cached


async def test_axfr_notimp_chaos_refused() -> None:
    h = make()
    assert (await ask(h, "consul", "AXFR")).header.rcode == RCODE.NOTIMP
    q = DNSRecord.question("version.bind", "TXT", "CH")
    r = DNSRecord.parse(await h.handle(q.pack(), False))
    assert r.header.rcode == RCODE.REFUSED


async def test_edns_version_1_gets_badvers_with_opt_version_0() -> None:
    q = DNSRecord.question("web.service.consul")
    q.add_ar(EDNS0(udp_len=1232, version=1))
    r = DNSRecord.parse(await make().handle(q.pack(), False))
    opt = [rr for rr in r.ar if rr.rtype == QTYPE.OPT]
    assert len(opt) == 1
    ext_rcode, version = opt[0].ttl >> 24, (opt[0].ttl >> 16) & 0xFF
    assert (ext_rcode << 4 | r.header.rcode) == RCODE_BADVERS and version == 0
    assert not r.rr


async def test_edns_reply_carries_opt_and_ignores_unknown_options() -> None:
    q = DNSRecord.question("web.service.consul")
    from dnslib import EDNSOption
    q.add_ar(EDNS0(udp_len=4096, opts=[EDNSOption(10, b"12345678")]))  # a client COOKIE
    r = DNSRecord.parse(await make().handle(q.pack(), False))
    opt = [rr for rr in r.ar if rr.rtype == QTYPE.OPT]
    assert r.header.rcode == RCODE.NOERROR and len(opt) == 1 and opt[0].rclass == 1232
    assert not opt[0].rdata  # no options echoed


# ---------------------------------------------------------------- records


async def test_srv_weights_targets_and_glue() -> None:
    r = await ask(make(), "_web._tcp.service.consul", "SRV")
    srv = {str(rr.rdata.target): rr.rdata for rr in r.rr}
    assert set(srv) == {"node1.node.dc1.consul.", "node2.node.dc1.consul."}
    assert srv["node1.node.dc1.consul."].weight == 10  # passing → Weights.Passing
    assert srv["node2.node.dc1.consul."].weight == 1  # warning → Weights.Warning
    assert all(s.priority == 1 and s.port == 8080 for s in srv.values())
    glue = {(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in r.ar}
    assert ("node1.node.dc1.consul.", "A", "10.0.0.1") in glue
    assert ("node2.node.dc1.consul.", "A", "10.0.0.2") in glue
    assert ("node1.node.dc1.consul.", "TXT", '"rack=r1"') in glue


async def test_srv_with_service_address_uses_addr_target() -> None:
    r = await ask(make(), "db.service.consul", "SRV")
    assert str(r.rr[0].rdata.target) == "0a010009.addr.dc1.consul."
    assert [(str(rr.rname), str(rr.rdata)) for rr in r.ar] == [("0a010009.addr.dc1.consul.", "10.1.0.9")]


async def test_tag_filter_and_rfc2782_tag() -> None:
    h = make()
    assert rdatas(await ask(h, "v2.web.service.consul")) == ["10.0.0.2"]
    assert rdatas(await ask(h, "PRIMARY.web.service.consul")) == ["10.0.0.1"]
    r = await ask(h, "_web._v1.service.consul", "SRV")
    assert [str(rr.rdata.target) for rr in r.rr] == ["node1.node.dc1.consul."]


async def test_case_of_question_is_preserved_everywhere() -> None:
    h = make()
    for _ in range(2):  # miss, then cache hit
        r = await ask(h, "WeB.SeRvIcE.CoNsUl")
        assert str(r.q.qname) == "WeB.SeRvIcE.CoNsUl."
        assert {str(rr.rname) for rr in r.rr} == {"WeB.SeRvIcE.CoNsUl."}


async def test_case_preserved_without_compression() -> None:
    h = make(disable_compression=True)
    r = await ask(h, "WEB.service.consul")
    assert {str(rr.rname) for rr in r.rr} == {"WEB.service.consul."}


async def test_node_lookup_with_meta_txt() -> None:
    h = make()
    r = await ask(h, "node1.node.consul")
    assert rdatas(r) == ["10.0.0.1"] and [str(rr.rdata) for rr in r.ar] == ['"rack=r1"']
    r = await ask(h, "node1.node.consul", "TXT")
    assert rdatas(r) == ['"rack=r1"']
    r = await ask(h, "node1.node.consul", "MX")
    assert r.header.rcode == RCODE.NOERROR and not r.rr and soa_in_authority(r)
    r = await ask(h, "v6node.node.consul", "AAAA")
    assert rdatas(r) == ["fd00::1"]
    r = await ask(make(enable_additional_node_meta_txt=False), "node1.node.consul")
    assert not r.ar


def test_rfc1464_escaping() -> None:
    from dns.answer import meta_txt
    assert meta_txt({"a=b": "c", "x`y": "z", "rfc1035-raw": "v=1"}) == [b"a`=b=c", b"v=1", b"x``y=z"]


async def test_addr_and_ptr_and_apex() -> None:
    h = make()
    assert rdatas(await ask(h, "0a000001.addr.consul")) == ["10.0.0.1"]
    assert (await ask(h, "0a000001.addr.consul", "AAAA")).header.rcode == RCODE.NOERROR
    r = await ask(h, "1.0.0.10.in-addr.arpa", "PTR")
    assert rdatas(r) == ["node1.node.dc1.consul."] and r.rr[0].ttl == 0
    r = await ask(h, "9.0.1.10.in-addr.arpa", "PTR")
    assert rdatas(r) == ["db.service.dc1.consul."]
    assert (await ask(h, "8.8.8.8.in-addr.arpa", "PTR")).header.rcode == RCODE.REFUSED
    r = await ask(h, "consul", "NS")
    assert rdatas(r) == ["node1.node.dc1.consul."] and rdatas(r, "ar") == ["10.0.0.1"]
    r = await ask(h, "consul", "SOA")
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["SOA"] and [QTYPE[rr.rtype] for rr in r.auth] == ["NS"]


async def test_alt_domain_answers_in_the_zone_asked_and_ptr_in_primary() -> None:
    h = make(alt_domain="corp.")
    r = await ask(h, "_web._tcp.service.corp", "SRV")
    assert all(str(rr.rdata.target).endswith(".dc1.corp.") for rr in r.rr)
    r = await ask(h, "1.0.0.10.in-addr.arpa", "PTR")
    assert rdatas(r) == ["node1.node.dc1.consul."]


async def test_hostname_address_gives_cname() -> None:
    r = await ask(make(), "ext.service.consul")
    assert [QTYPE[rr.rtype] for rr in r.rr] == ["CNAME"] and rdatas(r) == ["db.example.com."]


async def test_ttls_with_wildcards() -> None:
    h = make(service_ttl={"*": "5s", "web": "30s", "d*": "10s"}, node_ttl="1m")
    assert {rr.ttl for rr in (await ask(h, "web.service.consul")).rr} == {30}
    assert {rr.ttl for rr in (await ask(h, "db.service.consul", "SRV")).rr} == {10}
    assert {rr.ttl for rr in (await ask(h, "ext.service.consul")).rr} == {5}
    assert {rr.ttl for rr in (await ask(h, "node1.node.consul")).rr} == {60}


def test_config_rejects_bad_values() -> None:
    with pytest.raises(DnsConfigError):
        DnsConfig(node_ttl="soon")
    with pytest.raises(DnsConfigError):
        DnsConfig(recursor_strategy="fastest")
    assert DnsConfig(recursors=["[::1]:5353", "10.0.0.1"]).recursor_addrs == (("::1", 5353), ("10.0.0.1", 53))


# ---------------------------------------------------------------- size, TC, shuffle


def big_lookup(n: int) -> FakeLookup:
    lookup = FakeLookup()
    lookup.set_service("big", [ep(f"node{i:03d}", f"10.1.{i // 250}.{i % 250 + 1}", service="big",
                                  meta={"zone": "z" * 20}) for i in range(n)])
    return lookup


async def test_plain_udp_capped_by_udp_answer_limit_sets_tc() -> None:
    h = make(big_lookup(5))
    r = await ask(h, "big.service.consul")
    assert len(r.rr) == 3 and r.header.tc == 1
    r = await ask(make(big_lookup(3)), "big.service.consul")
    assert len(r.rr) == 3 and r.header.tc == 0


async def test_udp_limits_and_tcp_full_answer() -> None:
    h = make(big_lookup(300), udp_answer_limit=0)
    r = DNSRecord.parse(raw := await h.handle(query("big.service.consul", "SRV"), False))
    assert len(raw) <= 512 and r.header.tc == 1 and 0 < len(r.rr) < 300
    targets = {str(rr.rdata.target) for rr in r.rr}
    assert {str(rr.rname) for rr in r.ar} <= targets  # glue only for kept answers
    assert {str(rr.rname) for rr in r.ar if rr.rtype == QTYPE.A} == targets
    raw = await h.handle(query("big.service.consul", "SRV", edns=4096), False)
    r = DNSRecord.parse(raw)
    assert len(raw) <= 1232 and r.header.tc == 1
    raw = await h.handle(query("big.service.consul", "SRV", edns=800), False)
    assert len(raw) <= 800
    raw = await h.handle(query("big.service.consul", "SRV", edns=100), False)
    assert len(raw) <= 512  # sizes below 512 mean 512
    raw = await h.handle(query("big.service.consul", "A"), True)
    r = DNSRecord.parse(raw)
    assert len(r.rr) == 300 and r.header.tc == 0


async def test_optional_txt_dropped_before_answers_without_tc() -> None:
    lookup = FakeLookup()
    lookup.set_service("big", [ep(f"n{i}", f"10.1.0.{i + 1}", service="big", meta={"k": "v" * 100})
                               for i in range(4)])
    h = make(lookup, udp_answer_limit=4)
    r = await ask(h, "big.service.consul", "SRV")
    assert r.header.tc == 0 and len(r.rr) == 4 and len(r.ar) == 4
    assert all(rr.rtype == QTYPE.A for rr in r.ar)


async def test_a_record_limit_caps_without_tc_over_tcp() -> None:
    h = make(big_lookup(10), a_record_limit=4)
    r = await ask(h, "big.service.consul", tcp=True)
    assert len(r.rr) == 4 and r.header.tc == 0


async def test_answers_are_shuffled_across_queries() -> None:
    h = make(big_lookup(3))
    orders = {tuple(str(rr.rdata) for rr in (await ask(h, "big.service.consul")).rr) for _ in range(12)}
    assert len(orders) == 6  # every permutation served in rotation


# ---------------------------------------------------------------- cache


async def test_cache_hit_and_invalidation_on_change() -> None:
    lookup = sample_lookup()
    h = make(lookup)
    await ask(h, "db.service.consul")
    calls = lookup.calls
    data = query("db.service.consul", qid=99)
    hit = h.answer_cached(data, False)
    assert hit is not None and DNSRecord.parse(hit).header.id == 99 and lookup.calls == calls
    assert h.answer_cached(query("db.service.consul", "SRV"), False) is None  # other qtype: a miss
    lookup.set_service("db", [ep("node2", "10.0.0.2", service="db", status="critical")])
    assert h.answer_cached(data, False) is None
    assert (await ask(h, "db.service.consul")).header.rcode == RCODE.NXDOMAIN
    lookup.set_service("db", [ep("node2", "10.0.0.2", service="db")])
    assert rdatas(await ask(h, "db.service.consul")) == ["10.0.0.2"]


async def test_negative_answer_invalidated_by_registration() -> None:
    lookup = sample_lookup()
    h = make(lookup)
    assert (await ask(h, "new.service.consul")).header.rcode == RCODE.NXDOMAIN
    lookup.set_service("new", [ep("node1", "10.0.0.1", service="new")])
    assert h.answer_cached(query("new.service.consul"), False) is None
    assert rdatas(await ask(h, "new.service.consul")) == ["10.0.0.1"]


async def test_cache_echoes_rd_flag() -> None:
    h = make()
    await ask(h, "db.service.consul")
    q = DNSRecord.question("db.service.consul")
    q.header.rd = 0
    assert DNSRecord.parse(h.answer_cached(q.pack(), False)).header.rd == 0
    q.header.rd = 1
    assert DNSRecord.parse(h.answer_cached(q.pack(), False)).header.rd == 1


# ---------------------------------------------------------------- malformed input


async def test_malformed_packets() -> None:
    h = make()
    good = query("web.service.consul")
    assert await h.handle(b"", False) is None
    assert await h.handle(good[:11], False) is None
    response = bytearray(good)
    response[2] |= 0x80
    assert await h.handle(bytes(response), False) is None  # a response: silence
    formerr = [
        good[:12] + b"\x05ab",  # truncated question
        good[:4] + b"\x00\x02" + good[6:],  # QDCOUNT 2
        good[:4] + b"\x00\x00" + good[6:],  # QDCOUNT 0
        good[:12] + b"\xc0\x0c" + b"\x00\x01\x00\x01",  # compression loop in the question
        good[:12] + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01",  # label > 63
        good[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # name > 255
        good[:10] + b"\x00\x01" + good[12:] + b"\x00\x00\x29",  # short OPT
    ]
    for data in formerr:
        reply = await h.handle(data, False)
        assert reply is not None and reply[3] & 0xF == RCODE.FORMERR, data
        assert reply[:2] == good[:2]
    notify = bytearray(good)
    notify[2] = (notify[2] & 0x87) | (4 << 3)
    reply = await h.handle(bytes(notify), False)
    assert reply is not None and reply[3] & 0xF == RCODE.NOTIMP


async def test_random_and_mutated_packets_never_raise() -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    h = make(big_lookup(20))
    seeds = [query(n, t, edns=e) for n, t, e in (
        ("big.service.consul", "A", None), ("_big._tcp.service.consul", "SRV", 1232),
        ("node001.node.consul", "ANY", 4096), ("1.0.1.10.in-addr.arpa", "PTR", None))]
    for i in range(3000):
        base = bytearray(rng.choice(seeds))
        if i % 4 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        else:
            for _ in range(rng.randrange(1, 5)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            data = bytes(base[: rng.randrange(len(base) + 1)] if i % 3 == 0 else base)
        tcp = bool(i % 2)
        try:
            reply = h.answer_cached(data, tcp) or await h.handle(data, tcp)
        except Exception as exc:  # pragma: no cover - a failure reports its seed
            raise AssertionError(f"seed={seed} packet={data.hex()}") from exc
        if reply is not None:
            assert len(reply) >= 12 and reply[2] & 0x80, f"seed={seed}"
            assert tcp or len(reply) <= 1232, f"seed={seed}"
            if not tcp and not (len(data) > 11 and struct.unpack("!H", data[10:12])[0]):
                assert len(reply) <= 512, f"seed={seed} packet={data.hex()}"
    assert len((await ask(h, "big.service.consul")).rr) == 3  # the canary still answers
