"""Unit and property tests of the catalog state store (agent/catalog/store.py, watch.py, snapshot.py)."""

from __future__ import annotations

import resource
import time

import pytest
from hypothesis import HealthCheck as HC
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.catalog import snapshot as snap
from agent.catalog.commands import DeregisterCommand, RegisterCommand
from agent.catalog.snapshot import SnapshotError
from agent.catalog.store import CatalogError, StateStore
from agent.errors import BadRequest
from agent.types import HealthCheck, Node, NodeService
from checks.definition import Status


def reg(node="n1", addr="10.0.0.1", service=None, checks=(), skip=False, **node_kw) -> RegisterCommand:
    return RegisterCommand(Node(node, addr, **node_kw), service, list(checks), skip)


def svc(sid="web1", name="web", tags=(), port=80) -> NodeService:
    return NodeService(sid, name, tuple(tags), port=port)


def chk(cid, service_id="", status=Status.PASSING, node="", output="") -> HealthCheck:
    return HealthCheck(node, cid, cid, status=status, service_id=service_id, output=output)


class Recorder:
    def __init__(self):
        self.calls: list[int] = []

    def __call__(self, index: int) -> None:
        self.calls.append(index)


def test_empty_store_reads_never_return_index_zero():
    s = StateStore()
    assert s.nodes() == (1, [])
    assert s.services() == (1, {})
    assert s.node("x") == (1, None, [])
    assert s.check_service_nodes("web") == (1, [])
    assert s.checks_in_state("any") == (1, [])
    assert s.index_of("nodes") == 0


def test_register_rows_and_indexes():
    s = StateStore()
    s.ensure_registration(5, reg(service=svc(tags=("b", "a")), checks=[chk("c1", "web1"), chk("serfHealth")]))
    idx, node, services = s.node("n1")
    assert idx == 5 and node.create_index == node.modify_index == 5
    assert [x.id for x in services] == ["web1"]
    assert s.services() == (5, {"web": ["a", "b"]})
    c1 = s.check("n1", "c1")
    assert (c1.service_name, c1.service_tags, c1.node) == ("web", ("b", "a"), "n1")
    idx, rows = s.check_service_nodes("web")
    assert idx == 5 and [c.check_id for c in rows[0][2]] == ["c1", "serfHealth"]
    # re-register with a change: create_index kept, modify_index moves
    s.ensure_registration(9, reg(addr="10.0.0.2", service=svc(port=81)))
    node = s.node("n1")[1]
    assert (node.create_index, node.modify_index, node.address) == (5, 9, "10.0.0.2")
    service = s.node_service("n1", "web1")
    assert (service.create_index, service.modify_index, service.port) == (5, 9, 81)
    assert s.services() == (9, {"web": []})
    assert s.check("n1", "c1").service_tags == ()


def test_identical_reregistration_changes_nothing_and_wakes_nobody():
    s = StateStore()
    cmd = reg(service=svc(tags=("a",)), checks=[chk("c1", "web1")])
    s.ensure_registration(3, cmd)
    before = s.snapshot()
    rec = Recorder()
    s.watch(["nodes", "services", "checks", "node.n1", "service.web"], rec)
    s.ensure_registration(4, cmd)
    assert rec.calls == []
    after = s.snapshot()
    assert after.pop("last_index") == 4
    before.pop("last_index")
    assert before == after
    assert s.changes_since(3) == []


def test_skip_node_update():
    s = StateStore()
    s.ensure_registration(2, reg(addr="10.0.0.1", meta={"a": "1"}))
    s.ensure_registration(3, reg(addr="", skip=True, checks=[chk("serfHealth", status=Status.CRITICAL)]))
    node = s.node("n1")[1]
    assert (node.address, node.meta, node.modify_index) == ("10.0.0.1", {"a": "1"}, 2)
    assert s.index_of("nodes") == 2
    # absent node is still created
    s.ensure_registration(4, reg(node="n2", addr="10.0.0.9", skip=True))
    assert s.node("n2")[1].create_index == 4


@pytest.mark.parametrize("cmd", [
    reg(checks=[chk("c1", "nope")]),
    reg(service=svc(), checks=[chk("ok", "web1"), chk("c2", "other")]),
    reg(node=""),
    reg(addr=""),
    reg(service=svc(name="")),
    reg(checks=[HealthCheck("n1", "", "")]),
    reg(checks=[chk("c1", node="n2")]),
    reg(checks=[HealthCheck("n1", "c", "c", status="bogus")]),
])
def test_invalid_registration_is_atomic(cmd):
    s = StateStore()
    s.ensure_registration(2, reg(service=svc("db1", "db"), checks=[chk("serfHealth")]))
    before = s.snapshot()
    rec = Recorder()
    s.watch(["nodes", "services", "checks", "node.n1", "service.web", "service.db"], rec)
    with pytest.raises(CatalogError) as err:
        s.ensure_registration(3, cmd)
    assert isinstance(err.value, BadRequest)
    assert s.snapshot() == before and rec.calls == [] and s.changes_since(2) == []


def test_check_of_service_in_same_command_and_tags_follow():
    s = StateStore()
    s.ensure_registration(2, reg(service=svc(tags=("v1",)), checks=[chk("c1", "web1")]))
    rec = Recorder()
    s.watch(["checks"], rec)
    s.ensure_registration(3, reg(service=svc(tags=("v2",))))
    c1 = s.check("n1", "c1")
    assert (c1.service_tags, c1.modify_index, c1.create_index) == (("v2",), 3, 2)
    assert rec.calls == [3]
    # rename keeps the id; the checks follow, the old name is bumped and disappears
    s.ensure_registration(4, reg(service=svc(name="api")))
    assert s.check("n1", "c1").service_name == "api"
    assert s.services()[1] == {"api": []}
    assert s.service_nodes("web") == (4, [])


def test_deregister_semantics():
    s = StateStore()
    s.ensure_registration(2, reg(service=svc(), checks=[chk("c1", "web1"), chk("serfHealth")]))
    s.ensure_registration(3, reg(service=svc("web2"), checks=[chk("c2", "web2")]))
    s.deregister(4, DeregisterCommand("n1", service_id="web2"))
    assert s.check("n1", "c2") is None and s.node_service("n1", "web2") is None
    assert [c.check_id for c in s.node_checks("n1")[1]] == ["c1", "serfHealth"]
    s.deregister(5, DeregisterCommand("n1", check_id="serfHealth"))
    assert [c.check_id for c in s.checks_in_state("any")[1]] == ["c1"]
    s.deregister(6, DeregisterCommand("n1"))
    assert s.nodes() == (6, []) and s.services() == (6, {}) and s.checks_in_state("any") == (6, [])
    assert s.service_nodes("web") == (6, [])  # tombstone: the index stays at the delete
    # missing things: no-ops that bump nothing
    for cmd in (DeregisterCommand("n1"), DeregisterCommand("zz", service_id="x"),
                DeregisterCommand("n1", check_id="nope")):
        s.deregister(7, cmd)
    assert s.changes_since(6) == [] and s.last_index == 7 and s.index_of("nodes", "node.n1") == 6


def test_watchers_are_precise():
    s = StateStore()
    s.ensure_registration(2, reg(service=svc(), checks=[chk("serfHealth")]))
    s.ensure_registration(3, reg(service=svc("api1", "api")))
    s.ensure_registration(4, reg(node="n2", service=svc("db1", "db")))
    web, api, db, nodes = Recorder(), Recorder(), Recorder(), Recorder()
    handles = [s.watch(["service.web"], web), s.watch(["service.api"], api),
               s.watch(["service.db"], db), s.watch(["nodes"], nodes)]
    s.ensure_registration(5, reg(node="n2", service=svc("db1", "db", port=5432)))
    assert (web.calls, api.calls, db.calls, nodes.calls) == ([], [], [5], [])
    assert s.watchers.count("service.db") == 0 and s.watchers.count("service.web") == 1
    # a node-level check wakes the watchers of every service on that node
    s.ensure_registration(6, reg(checks=[chk("serfHealth", status=Status.CRITICAL)], skip=True))
    assert (web.calls, api.calls, nodes.calls) == ([6], [6], [])
    # a node address change wakes the service watchers of that node (and "nodes")
    w2 = Recorder()
    s.watch(["service.web", "nodes"], w2)
    s.ensure_registration(7, reg(addr="10.9.9.9"))
    assert w2.calls == [7] and nodes.calls == [7]
    assert s.index_of("service.web") == 7 and s.index_of("service.db") == 5
    for h in handles:
        h.cancel()
        h.cancel()
    assert s.watchers.count() == 0


def test_cancelled_and_raising_watchers():
    s = StateStore()
    rec, late = Recorder(), Recorder()

    def boom(_index: int) -> None:
        raise RuntimeError("broken watcher")

    s.watch(["nodes"], boom)
    handle = s.watch(["nodes"], rec)
    s.watch(["nodes"], late)
    handle.cancel()
    s.ensure_registration(2, reg())
    assert rec.calls == [] and late.calls == [2] and s.watchers.errors == 1
    assert s.last_index == 2 and s.node("n1")[1] is not None


def test_change_log_is_bounded():
    s = StateStore(history=3)
    assert s.changes_since(0) == []
    for i in range(1, 6):
        s.ensure_registration(i * 10, reg(node=f"n{i}"))
    assert s.changes_since(10) is None and s.changes_since(19) is None
    changes = s.changes_since(20)
    assert [c.index for c in changes] == [30, 40, 50]
    assert changes[0].keys == frozenset({"nodes", "node.n3"})
    assert s.changes_since(45) == [changes[-1]] and s.changes_since(50) == []


def test_checks_in_state_and_service_checks():
    s = StateStore()
    s.ensure_registration(2, reg(service=svc(), checks=[chk("c1", "web1", Status.WARNING),
                                                        chk("serfHealth")]))
    s.ensure_registration(3, reg(node="n0", service=svc(), checks=[chk("c0", "web1", Status.CRITICAL)]))
    assert [c.check_id for c in s.checks_in_state("critical")[1]] == ["c0"]
    assert [c.check_id for c in s.checks_in_state("passing")[1]] == ["serfHealth"]
    assert [(c.node, c.check_id) for c in s.checks_in_state("any")[1]] == [
        ("n0", "c0"), ("n1", "c1"), ("n1", "serfHealth")]
    assert [c.check_id for c in s.service_checks("web")[1]] == ["c0", "c1"]
    assert [n.node for n, _ in s.service_nodes("web")[1]] == ["n0", "n1"]
    with pytest.raises(BadRequest):
        s.checks_in_state("maintenance")
    s.ensure_registration(4, reg(checks=[chk("c1", "web1", Status.PASSING)], skip=True))
    assert s.checks_in_state("warning") == (4, [])


def test_snapshot_restore_round_trip():
    s = StateStore()
    s.ensure_registration(2, reg(service=svc(tags=("a",)), checks=[chk("c1", "web1"), chk("serfHealth")]))
    s.ensure_registration(3, reg(node="n2", service=svc("db1", "db")))
    s.deregister(4, DeregisterCommand("n2"))
    r = StateStore.restore(s.snapshot())
    assert r.snapshot() == s.snapshot()
    assert r.index_of("service.db", "node.n2") == 4 and r.last_index == 4
    assert r.check_service_nodes("web") == s.check_service_nodes("web")
    assert r.changes_since(3) is None and r.changes_since(4) == []
    for bad in ({}, {"version": 99}, {"version": 1, "nodes": 3}):
        with pytest.raises(SnapshotError):
            StateStore.restore(bad)


# ---------------------------------------------------------------- properties over random commands

NODE_NAMES = ("n0", "n1", "n2")
SERVICE_NAMES = ("web", "db")
KEYS = ("nodes", "services", "checks", *(f"node.{n}" for n in NODE_NAMES),
        *(f"service.{s}" for s in SERVICE_NAMES))

services_st = st.builds(svc, st.sampled_from(("s0", "s1")), st.sampled_from(SERVICE_NAMES),
                        st.lists(st.sampled_from("xyz"), max_size=2).map(tuple), st.sampled_from((80, 81)))
checks_st = st.builds(chk, st.sampled_from(("c0", "c1", "serfHealth")), st.sampled_from(("", "s0", "s1")),
                      st.sampled_from(list(Status)))
register_st = st.builds(reg, st.sampled_from(NODE_NAMES), st.sampled_from(("10.0.0.1", "10.0.0.2")),
                        st.none() | services_st, st.lists(checks_st, max_size=2), st.booleans())
deregister_st = st.builds(DeregisterCommand, st.sampled_from(NODE_NAMES),
                          st.sampled_from(("", "", "s0", "s1")), st.sampled_from(("", "c0", "serfHealth")))
commands_st = st.lists(register_st | deregister_st, max_size=25)


def answer(s: StateStore, key: str) -> object:
    kind, _, name = key.partition(".")
    if kind == "nodes":
        return s.nodes()[1]
    if kind == "services":
        return s.services()[1]
    if kind == "checks":
        return s.checks_in_state("any")[1]
    if kind == "node":
        return s.node(name)[1:], s.node_checks(name)[1]
    return s.check_service_nodes(name)[1], s.service_nodes(name)[1], s.service_checks(name)[1]


def naive(data: dict, key: str) -> object:
    """The answer for `key` computed by brute force from a snapshot's rows."""
    r = snap.load(data)
    kind, _, name = key.partition(".")
    services = sorted(r.services, key=lambda p: (p[0], p[1].id))
    checks = sorted(r.checks, key=lambda c: (c.node, c.check_id))
    nodes = {n.node: n for n in r.nodes}
    if kind == "nodes":
        return sorted(r.nodes, key=lambda n: n.node)
    if kind == "services":
        out: dict[str, set] = {}
        for _, x in services:
            out.setdefault(x.service, set()).update(x.tags)
        return {k: sorted(v) for k, v in sorted(out.items())}
    if kind == "checks":
        return checks
    if kind == "node":
        node_services = [x for n, x in services if n == name]
        return (nodes.get(name), node_services), [c for c in checks if c.node == name]
    inst = [(nodes[n], x) for n, x in services if x.service == name]
    csn = [(nd, x, [c for c in checks if c.node == nd.node and c.service_id in ("", x.id)]) for nd, x in inst]
    sc = [c for nd, x in inst for c in checks if c.node == nd.node and c.service_id == x.id]
    return csn, inst, sc


@settings(max_examples=400, deadline=None, derandomize=True, print_blob=True,
          suppress_health_check=[HC.too_slow])
@given(commands_st)
def test_random_commands_indexes_watchers_and_answers(commands):
    s = StateStore(history=8)
    for i, cmd in enumerate(commands, start=2):
        before = {k: (s.index_of(k), answer(s, k)) for k in KEYS}
        recorders = {k: Recorder() for k in KEYS}
        handles = [s.watch([k], rec) for k, rec in recorders.items()]
        snap_before = s.snapshot()
        try:
            if isinstance(cmd, RegisterCommand):
                s.ensure_registration(i, cmd)
            else:
                s.deregister(i, cmd)
        except CatalogError:
            assert s.snapshot() == snap_before
        bumped = set()
        for k in KEYS:
            idx = s.index_of(k)
            assert idx >= before[k][0], (k, cmd)
            changed = answer(s, k) != before[k][1]
            assert (idx > before[k][0]) == changed, (k, cmd)  # no missed and no spurious wake-up
            assert recorders[k].calls == ([i] if changed else []), (k, cmd)
            assert s.watchers.count(k) == (0 if changed else 1), k  # fired ones are gone
            if changed:
                bumped.add(k)
        log = s.changes_since(i - 1)
        assert [c.index for c in log] == ([i] if bumped else []) and (not log or bumped <= log[0].keys)
        for handle in handles:
            handle.cancel()
        assert s.watchers.count() == 0
        for check in s.checks_in_state("any")[1]:  # a check's service fields follow its service
            service = s.node_service(check.node, check.service_id)
            expect = (service.service, service.tags) if check.service_id else ("", ())
            assert (check.service_name, check.service_tags) == expect, (check, cmd)
    data = s.snapshot()
    restored = StateStore.restore(data)
    for k in KEYS:
        assert answer(s, k) == naive(data, k) == answer(restored, k), k
        assert s.index_of(k) == restored.index_of(k)
    assert restored.snapshot() == data


# ---------------------------------------------------------------- scale


def test_100k_instances_smoke():
    nodes, per_node = 2_000, 50
    s = StateStore()
    start = time.perf_counter()
    index = 1
    for n in range(nodes):
        name = f"node{n}"
        s.ensure_registration(index, reg(node=name, addr=f"10.{n // 256}.{n % 256}.1",
                                         checks=[chk("serfHealth")]))
        index += 1
        for i in range(per_node):
            service = "web" if (n, i) < (0, 10) else f"svc{i}"
            s.ensure_registration(index, RegisterCommand(Node(name, ""), svc(f"{service}-{i}", service),
                                                         [], skip_node_update=True))
            index += 1
    build = time.perf_counter() - start
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    assert len(s.services()[1]) == per_node + 1
    start = time.perf_counter()
    for _ in range(1_000):
        _, rows = s.check_service_nodes("web")
    lookup = time.perf_counter() - start
    assert len(rows) == 10 and [c.check_id for c in rows[0][2]] == ["serfHealth"]
    assert build < 5.0, f"building 100k instances took {build:.2f}s"
    assert lookup < 0.5, f"1000 health lookups of a 10-instance service took {lookup:.2f}s"
    assert peak_rss_mib < 512, f"peak RSS of the test process {peak_rss_mib:.0f} MiB"
