"""Unit tests: the user-event ring (agent/events.py) and the `waypost watch` plan (agent/cli_watch.py)."""

from __future__ import annotations

import random

import pytest

from agent.cli_common import CommandFailed
from agent.cli_watch import TokenBucket, WatchPlan, request_for
from agent.errors import BadRequest, PayloadTooLarge
from agent.events import RING_SIZE, EventRing, UserEvent, applies_to, event_index, validate


def ev(i: int, name: str = "deploy", **kw: object) -> UserEvent:
    return UserEvent(id=f"{i:08x}-0000-4000-8000-{i:012x}", name=name, **kw)  # type: ignore[arg-type]


# ---------------------------------------------------------------- events


def test_ring_keeps_the_newest_256_with_lamport_times() -> None:
    ring = EventRing()
    for i in range(1, RING_SIZE + 11):
        ring.add(ev(i))
    events = ring.list()
    assert len(events) == RING_SIZE
    assert events[0].ltime == 11 and events[-1].ltime == RING_SIZE + 10
    assert [e.ltime for e in events] == sorted(e.ltime for e in events)


def test_list_filters_by_name_and_to_api_is_consul_shaped() -> None:
    ring = EventRing()
    ring.add(ev(1, "a", payload=b"hi"))
    ring.add(ev(2, "b"))
    assert [e.name for e in ring.list("a")] == ["a"]
    api = ring.list("a")[0].to_api()
    assert api == {"ID": ev(1).id, "Name": "a", "Payload": "aGk=", "NodeFilter": "", "ServiceFilter": "",
                   "TagFilter": "", "Version": 1, "LTime": 1}
    assert ring.list("b")[0].to_api()["Payload"] is None


def test_watchers_fire_once_per_added_event() -> None:
    ring = EventRing()
    seen: list[int] = []
    handle = ring.watch(seen.append)
    ring.add(ev(1))
    ring.add(ev(2))
    assert seen == [1]  # one-shot
    handle.cancel()
    cancelled = ring.watch(seen.append)
    cancelled.cancel()
    ring.add(ev(3))
    assert seen == [1]


def test_event_index_is_never_zero_and_tracks_the_newest_event() -> None:
    assert event_index([]) == 1
    a, b = ev(1), ev(2)
    assert event_index([a]) != event_index([a, b])
    assert event_index([a, b]) == event_index([b])
    same_halves = UserEvent(id="00000000-0000-0001-0000-000000000001", name="x")
    assert event_index([same_halves]) == 1  # XOR of equal halves is 0: still never 0


@pytest.mark.parametrize("event, error", [
    (UserEvent(id="1", name=""), BadRequest),
    (UserEvent(id="1", name="_rexec"), BadRequest),
    (UserEvent(id="1", name="x", tag_filter="v1"), BadRequest),
    (UserEvent(id="1", name="x", node_filter="("), BadRequest),
    (UserEvent(id="1", name="x", service_filter="web", tag_filter="["), BadRequest),
    (UserEvent(id="1", name="x", payload=b"x" * 512), PayloadTooLarge),
])
def test_validate_rejects(event: UserEvent, error: type[Exception]) -> None:
    with pytest.raises(error):
        validate(event)


def test_validate_accepts_a_small_event() -> None:
    validate(UserEvent(id="1", name="deploy", payload=b"x" * 100, service_filter="web", tag_filter="v1"))


def test_applies_to_follows_node_service_and_tag_filters() -> None:
    services = [("web", ("v1", "blue")), ("db", ())]
    assert applies_to(UserEvent(id="1", name="x"), "node-1", services)
    assert applies_to(UserEvent(id="1", name="x", node_filter="^node-"), "node-1", services)
    assert not applies_to(UserEvent(id="1", name="x", node_filter="^other$"), "node-1", services)
    assert applies_to(UserEvent(id="1", name="x", service_filter="we"), "node-1", services)
    assert not applies_to(UserEvent(id="1", name="x", service_filter="^api$"), "node-1", services)
    assert applies_to(UserEvent(id="1", name="x", service_filter="web", tag_filter="blu"), "n", services)
    assert not applies_to(UserEvent(id="1", name="x", service_filter="db", tag_filter="v1"), "n", services)


# ---------------------------------------------------------------- watch plan


def test_plan_fires_only_when_content_changes() -> None:
    plan = WatchPlan("services")
    assert plan.observe(5, {"web": []}) == (True, {"web": []})
    assert plan.observe(5, {"web": []}) == (False, None)  # wait expired, same answer
    assert plan.observe(9, {"web": []}) == (False, None)  # index moved, content did not
    assert plan.observe(10, {"web": ["v2"]}) == (True, {"web": ["v2"]})
    assert plan.query_index() == 10


def test_plan_resets_when_the_index_goes_backwards_and_never_sends_zero() -> None:
    plan = WatchPlan("nodes")
    assert plan.query_index() == 0
    plan.observe(20, [1])
    plan.observe(7, [1])  # e.g. a snapshot restore
    assert plan.index == 0 and plan.query_index() == 1  # re-read; 0 is sent as 1 after the first answer
    plan.observe(8, [1])
    assert plan.query_index() == 8


def test_plan_for_a_key_waits_for_it_to_exist_and_reports_its_deletion() -> None:
    plan = WatchPlan("key")
    assert plan.observe(3, None) == (False, None)
    assert plan.observe(4, {"Key": "k"}) == (True, {"Key": "k"})
    assert plan.observe(5, None) == (True, None)  # deleted: the handler gets null
    assert plan.observe(6, None) == (False, None)


def test_plan_for_events_delivers_only_new_events_and_ignores_unordered_indexes() -> None:
    plan = WatchPlan("event")
    first = [{"ID": "a"}, {"ID": "b"}]
    assert plan.observe(111, first) == (True, first)
    assert plan.observe(111, first) == (False, None)
    assert plan.observe(5, [*first, {"ID": "c"}]) == (True, [{"ID": "c"}])  # smaller index: no reset
    assert plan.query_index() == 5
    assert plan.observe(5, [*first, {"ID": "c"}]) == (False, None)


def test_plan_randomized_delivers_exactly_the_changes() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    plan, index, value, expected, got = WatchPlan("keyprefix"), 1, 0, [], []
    plan.observe(index, [value])
    for _ in range(500):
        index += rng.randint(0, 2)
        if rng.random() < 0.3:
            value += 1
            expected.append([value])
        changed, out = plan.observe(index, [value])
        if changed:
            got.append(out)
    assert got == expected, f"seed={seed}"


def test_token_bucket_allows_a_burst_then_paces() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, stamp=100.0)
    assert bucket.delay(100.0) == 0.0
    assert bucket.delay(100.0) == 0.0
    assert bucket.delay(100.0) == pytest.approx(0.1)
    assert bucket.delay(101.0) == 0.0


def test_request_for_each_type() -> None:
    assert request_for("key", {"key": "a/b"}) == ("/v1/kv/a/b", [])
    assert request_for("keyprefix", {"prefix": "cfg/"}) == ("/v1/kv/cfg/", [("recurse", "")])
    assert request_for("service", {"service": "web", "tag": ["v1"], "passingonly": True}) == (
        "/v1/health/service/web", [("tag", "v1"), ("passing", "")])
    assert request_for("checks", {"state": "critical"})[0] == "/v1/health/state/critical"
    assert request_for("checks", {"service": "web"})[0] == "/v1/health/checks/web"
    assert request_for("event", {"name": "deploy"}) == ("/v1/event/list", [("name", "deploy")])
    assert request_for("nodes", {"stale": True}) == ("/v1/catalog/nodes", [("stale", "")])
    for bad in ({"type": "key"}, {"type": "service"}, {"type": "nope"}):
        with pytest.raises(CommandFailed):
            request_for(bad["type"], {})


# ---------------------------------------------------------------- catalog watch capture


def test_catalog_capture_keeps_one_answer_per_write_in_order() -> None:
    from types import SimpleNamespace

    from agent.catalog.commands import RegisterCommand
    from agent.catalog.store import StateStore
    from agent.catalog.watch import service_key
    from agent.http.watchcatalog import _Capture
    from agent.types import Node, NodeService

    store = StateStore()
    ctx = SimpleNamespace(server=SimpleNamespace(store=store))

    def port() -> dict:
        _, rows = store.service_nodes("web")
        return {"Ports": [s.port for _, s in rows]}

    capture = _Capture(ctx, service_key("web"), port)  # type: ignore[arg-type]
    capture.arm()
    index = 0
    for p in (1, 2, 3):  # three writes before the stream gets to run: none is coalesced away
        index += 1
        store.ensure_registration(index, RegisterCommand(Node("n1", "10.0.0.1"), NodeService("web1", "web", port=p)))
        index += 1
        store.ensure_registration(index, RegisterCommand(Node("n2", "10.0.0.2"), NodeService("db1", "db", port=p)))
    assert list(capture.pending) == [{"Ports": [1]}, {"Ports": [2]}, {"Ports": [3]}]
    assert capture.woken.is_set()
    capture.close()
    store.ensure_registration(index + 1, RegisterCommand(Node("n1", "10.0.0.1"), NodeService("web1", "web", port=9)))
    assert len(capture.pending) == 3
