"""Unit tests: cluster-wide user events — the wire codec and the agent side (agent/gossip/userevents.py),
and the ring's fire/receive (dedup, Lamport witness, filters evaluated at the receiver) in agent/events.py."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from agent.events import DUPLICATE, FILTERED, KEPT, EventRing, LocalView, RecentIds, UserEvent, event_index
from agent.gossip import userevents
from agent.gossip.userevents import BroadcastResult, MalformedUserEvent, UserEvents, decode, encode


def ev(i: int, name: str = "deploy", **kw: object) -> UserEvent:
    return UserEvent(id=f"{i:08x}-0000-4000-8000-{i:012x}", name=name, **kw)  # type: ignore[arg-type]


WEB = [("web", ["v1", "blue"]), ("db", [])]


# ---------------------------------------------------------------- codec


@pytest.mark.parametrize("event", [
    ev(1),
    ev(2, payload=b"v1.2", ltime=7),
    ev(3, payload=b"\x00\xff" * 100, node_filter="^c[0-9]$", service_filter="web", tag_filter="v1", ltime=2**64 - 1),
    ev(4, payload=b"", version=3),
])
def test_encode_decode_round_trip(event: UserEvent) -> None:
    assert decode(encode(event)) == event


def fields(**override: object) -> bytes:
    data: dict[str, object] = {"id": ev(1).id, "name": "deploy", "payload": None, "node": "", "service": "",
                               "tag": "", "version": 1, "ltime": 1}
    data.update(override)
    return msgpack.packb({k: v for k, v in data.items() if v is not ...})


@pytest.mark.parametrize("body", [
    b"", b"\xc1", b"\x93\x01\x02\x03", msgpack.packb("deploy"), b"\x00" * (userevents.MAX_BODY + 1),
    fields(id=...), fields(id=""), fields(id=5), fields(name=...), fields(name=b"deploy"), fields(name=""),
    fields(name="_rexec"), fields(payload="text"), fields(payload=b"x" * 600), fields(node=None),
    fields(node="("), fields(tag="v1"), fields(version=0), fields(version=True), fields(version="1"),
    fields(ltime=-1), fields(ltime=-(2**63)), fields(ltime=None), fields(ltime=1.5), fields(ltime=...),
])
def test_malformed_bodies_raise_malformed_user_event(body: bytes) -> None:
    with pytest.raises(MalformedUserEvent):
        decode(body)


# ---------------------------------------------------------------- ring: dedup, Lamport, filters


def test_recent_ids_remember_a_bounded_window() -> None:
    recent = RecentIds(3)
    assert [recent.seen(x) for x in "abca"] == [False, False, False, True]
    assert recent.seen("d") is False and len(recent) == 3
    assert "a" not in recent and recent.seen("a") is False  # the oldest was forgotten


def test_fire_keeps_a_matching_event_stamps_it_and_publishes_it_either_way() -> None:
    ring = EventRing()
    published: list[UserEvent] = []
    ring.publisher = published.append
    kept = ring.fire(ev(1), "c1", WEB)
    assert kept.ltime == 1 and ring.list() == [kept] and published == [kept]
    other = ring.fire(ev(2, node_filter="^c2$"), "c1", WEB)
    assert other.ltime == 2 and ring.list() == [kept] and published == [kept, other]
    assert ring.receive(other, "c1", WEB) == DUPLICATE  # our own event, echoed back, is not kept twice


def test_receive_dedups_by_id_and_witnesses_the_senders_lamport_time() -> None:
    ring = EventRing()
    event = ev(1, ltime=41)
    assert ring.receive(event, "c1", WEB) == KEPT
    assert ring.receive(event, "c1", WEB) == DUPLICATE
    assert ring.list() == [event] and ring.list()[0].ltime == 41  # the sender's time, as serf
    assert ring.fire(ev(2), "c1", WEB).ltime == 42  # causally after what we saw
    assert ring.receive(ev(3, ltime=5), "c1", WEB) == KEPT and ring.ltime == 42  # an old time does not go back
    assert event_index(ring.list()) != 1


@pytest.mark.parametrize(("event", "node", "services", "outcome"), [
    (ev(1, node_filter="^c2$"), "c2", [], KEPT),
    (ev(1, node_filter="^c2$"), "c1", WEB, FILTERED),
    (ev(1, service_filter="^web$"), "c1", WEB, KEPT),
    (ev(1, service_filter="^web$"), "c1", [("db", [])], FILTERED),
    (ev(1, service_filter="web", tag_filter="^blue$"), "c1", WEB, KEPT),
    (ev(1, service_filter="web", tag_filter="^green$"), "c1", WEB, FILTERED),
    (ev(1, node_filter="c", service_filter="db"), "c1", WEB, KEPT),
])
def test_filters_are_evaluated_at_the_receiver(event: UserEvent, node: str, services: list, outcome: str) -> None:
    ring = EventRing()
    assert ring.receive(event, node, services) == outcome
    assert len(ring) == (1 if outcome == KEPT else 0)
    assert ring.receive(event, node, services) == DUPLICATE  # a filtered ID is remembered too


def test_watchers_wake_only_for_kept_events() -> None:
    ring = EventRing()
    woke: list[int] = []
    ring.watch(woke.append)
    ring.receive(ev(1, node_filter="nobody"), "c1", WEB)
    assert woke == []
    ring.receive(ev(2, ltime=9), "c1", WEB)
    assert woke == [9]


# ---------------------------------------------------------------- UserEvents with a fake transport


class FakeTransport:
    def __init__(self, *, block: bool = False, fail: bool = False) -> None:
        self.handler = None
        self.sent: list[bytes] = []
        self.block = asyncio.Event() if block else None
        self.fail = fail

    def on_user_event(self, handler) -> None:  # type: ignore[no-untyped-def]
        self.handler = handler

    async def broadcast_event(self, payload: bytes) -> BroadcastResult:
        self.sent.append(payload)
        if self.block is not None:
            await self.block.wait()
        if self.fail:
            raise RuntimeError("boom")
        return BroadcastResult(sent=2, failed=1)


def wired(transport: FakeTransport, node: str = "c1", services: list | None = None) -> tuple[EventRing, UserEvents]:
    ring = EventRing()
    view: LocalView = (node, services if services is not None else WEB)
    return ring, UserEvents(ring, transport, lambda: view)


async def test_fire_publishes_the_encoded_event_and_counts_the_outcome() -> None:
    transport = FakeTransport()
    ring, events = wired(transport)
    assert transport.handler == events.receive and ring.publisher == events.publish
    fired = ring.fire(ev(1, payload=b"v1"), "c1", WEB)
    await asyncio.gather(*events._tasks)
    assert [decode(p) for p in transport.sent] == [fired]
    assert events.stats["published"] == 1 and events.stats["sent"] == 2 and events.stats["send_failures"] == 1
    await events.close()
    assert ring.publisher is None


async def test_a_failing_broadcast_is_counted_not_raised() -> None:
    transport = FakeTransport(fail=True)
    ring, events = wired(transport)
    ring.fire(ev(1), "c1", WEB)
    await asyncio.gather(*events._tasks)
    assert events.stats["send_failures"] == 1
    await events.close()


async def test_receive_keeps_dedups_filters_and_counts_malformed() -> None:
    transport = FakeTransport()
    ring, events = wired(transport, node="c2")
    assert transport.handler is not None
    transport.handler(encode(ev(1, ltime=3)), "127.0.0.1:1")
    transport.handler(encode(ev(1, ltime=3)), "127.0.0.1:1")
    transport.handler(encode(ev(2, node_filter="^c1$")), "127.0.0.1:1")
    transport.handler(b"\xc1garbage", "127.0.0.1:1")
    transport.handler(fields(name="_internal"), "127.0.0.1:1")
    assert [e.id for e in ring.list()] == [ev(1).id]
    assert {k: events.stats[k] for k in ("received", KEPT, DUPLICATE, FILTERED, "malformed")} == {
        "received": 5, KEPT: 1, DUPLICATE: 1, FILTERED: 1, "malformed": 2}
    await events.close()


async def test_broadcasts_in_flight_are_bounded_and_cancelled_on_close(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(userevents, "MAX_PENDING", 3)
    transport = FakeTransport(block=True)
    ring, events = wired(transport)
    for i in range(5):
        ring.fire(ev(i + 1), "c1", WEB)
    await asyncio.sleep(0)
    assert len(transport.sent) == 3 and events.stats["dropped"] == 2 and len(ring) == 5
    await events.close()
    assert not events._tasks
    ring.fire(ev(9), "c1", WEB)  # closed: kept locally, not spread
    assert events.stats["published"] == 3
