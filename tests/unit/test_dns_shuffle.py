"""Cached shuffles cut from one encoded answer (dns/wire.py answer_blocks + dns/handler.py): one
dnslib encode per change, every variant a valid reply with the same records and consistent glue,
and the fallbacks (trimmed answers, TC, order-dependent subsets, non-movable blocks)."""

from __future__ import annotations

import random

from dnslib import CNAME, QTYPE, RR, A, DNSRecord

from dns import answer as ans
from dns.wire import answer_blocks
from tests.unit.test_dns_answer import ask, big_lookup, make, query
from tests.unit.test_dns_fakes import FakeLookup, ep


def count_encodes(monkeypatch) -> list[int]:
    calls = [0]
    real = ans.encode

    def counting(*args, **kwargs):
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(ans, "encode", counting)
    return calls


async def served(handler, name: str, qtype: str = "A", n: int = 12, **kw) -> list[DNSRecord]:
    return [await ask(handler, name, qtype, **kw) for _ in range(n)]


def meta_lookup(n: int) -> FakeLookup:
    lookup = FakeLookup()
    lookup.set_service("big", [ep(f"node{i}", f"10.2.0.{i + 1}", 8000 + i, service="big",
                                  meta={"rack": f"r{i}"}) for i in range(n)])
    return lookup


async def test_one_encode_per_change_and_every_order_served(monkeypatch) -> None:
    calls = count_encodes(monkeypatch)
    h = make(big_lookup(3))
    replies = await served(h, "big.service.consul")
    assert calls[0] == 1
    orders = {tuple(str(rr.rdata) for rr in r.rr) for r in replies}
    assert len(orders) == 6


async def test_srv_variants_keep_records_and_glue(monkeypatch) -> None:
    calls = count_encodes(monkeypatch)
    h = make(meta_lookup(3), enable_additional_node_meta_txt=True)
    replies = await served(h, "_big._tcp.service.consul", "SRV", edns=1232)
    assert calls[0] == 1
    first = replies[0]
    orders = set()
    for r in replies:
        assert r.header.tc == 0 and r.header.aa == 1
        assert sorted(str(rr) for rr in r.rr) == sorted(str(rr) for rr in first.rr)
        assert sorted(str(rr) for rr in r.ar) == sorted(str(rr) for rr in first.ar)
        glue = {str(rr.rname) for rr in r.ar if rr.rtype == QTYPE.A}
        assert {str(rr.rdata.target) for rr in r.rr} == glue
        orders.add(tuple(rr.rdata.port for rr in r.rr))
    assert len(orders) == 6


async def test_many_instances_give_random_orders(monkeypatch) -> None:
    calls = count_encodes(monkeypatch)
    h = make(big_lookup(8), udp_answer_limit=8)
    replies = await served(h, "big.service.consul")
    assert calls[0] == 1
    assert len({tuple(str(rr.rdata) for rr in r.rr) for r in replies}) > 1
    assert all(sorted(map(str, r.rr)) == sorted(map(str, replies[0].rr)) for r in replies)


async def test_trimmed_answers_are_built_per_order(monkeypatch) -> None:
    calls = count_encodes(monkeypatch)
    h = make(big_lookup(20))  # plain UDP: udp_answer_limit 3 keeps an order-dependent subset, TC set
    replies = await served(h, "big.service.consul")
    assert calls[0] == 6
    assert all(r.header.tc == 1 and len(r.rr) == 3 for r in replies)
    assert len({str(rr.rdata) for r in replies for rr in r.rr}) > 3


async def test_a_record_limit_subsets_are_built_per_order(monkeypatch) -> None:
    calls = count_encodes(monkeypatch)
    h = make(big_lookup(5), a_record_limit=2)
    replies = await served(h, "big.service.consul", tcp=True)
    assert calls[0] == 6
    assert len({str(rr.rdata) for r in replies for rr in r.rr}) > 2


async def test_change_rebuilds_with_one_encode(monkeypatch) -> None:
    lookup = big_lookup(3)
    h = make(lookup)
    await served(h, "big.service.consul", n=2)
    calls = count_encodes(monkeypatch)
    lookup.set_service("big", [ep(f"m{i}", f"10.9.0.{i + 1}", service="big") for i in range(3)])
    replies = await served(h, "big.service.consul", n=6)
    assert calls[0] == 1
    assert all(sorted(map(str, (rr.rdata for rr in r.rr))) == ["10.9.0.1", "10.9.0.2", "10.9.0.3"]
               for r in replies)


def test_blocks_refused_when_a_pointer_enters_the_answers() -> None:
    record = DNSRecord.question("a.consul")
    record.add_answer(RR("a.consul", QTYPE.CNAME, rdata=CNAME("b.example.com"), ttl=5))
    record.add_answer(RR("b.example.com", QTYPE.A, rdata=A("10.0.0.1"), ttl=5))
    assert answer_blocks(record.pack()) is None  # the second owner points into the first's rdata


def test_blocks_refused_for_garbage() -> None:
    rng = random.Random(11)
    print("seed 11")
    good = query("big.service.consul")
    assert answer_blocks(good) is not None  # no answers: one empty split
    for _ in range(2000):
        data = bytearray(good + bytes(rng.randrange(256) for _ in range(rng.randrange(40))))
        data[6:8] = rng.randrange(4).to_bytes(2)
        split = answer_blocks(bytes(data))
        if split is not None:
            head, blocks, tail = split
            assert head + b"".join(blocks) + tail == bytes(data)
