"""Tests of the catalog FSM (agent/catalog/fsm.py): log entries in, store changes out."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.catalog.commands import (
    CommandError,
    DeregisterCommand,
    NoopCommand,
    RegisterCommand,
    encode,
)
from agent.catalog.fsm import CatalogFSM
from agent.catalog.snapshot import SnapshotError
from agent.catalog.store import CatalogError, StateStore
from agent.types import HealthCheck, Node, NodeService
from checks.definition import Status


def register(node="n1", service_id="", name="web", checks=(), addr="10.0.0.1") -> bytes:
    service = NodeService(service_id, name, ("v1",), port=80) if service_id else None
    hcs = [HealthCheck("", cid, cid, status=Status.PASSING, service_id=sid) for cid, sid in checks]
    return encode(RegisterCommand(Node(node, addr), service, hcs))


def test_apply_register_and_deregister():
    fsm = CatalogFSM()
    assert fsm.apply(3, register(service_id="web1", checks=[("c1", "web1"), ("serfHealth", "")])) is None
    assert fsm.last_index == fsm.store.last_index == 3
    idx, rows = fsm.store.check_service_nodes("web")
    assert idx == 3 and [c.check_id for c in rows[0][2]] == ["c1", "serfHealth"]
    assert fsm.store.check("n1", "c1").service_tags == ("v1",)
    fsm.apply(4, encode(DeregisterCommand("n1", service_id="web1")))
    assert fsm.store.service_nodes("web") == (4, []) and fsm.store.check("n1", "c1") is None
    fsm.apply(5, encode(DeregisterCommand("n1")))
    assert fsm.store.nodes() == (5, [])


def test_noop_advances_last_index_only():
    fsm = CatalogFSM()
    fsm.apply(2, register())
    calls: list[int] = []
    fsm.store.watch(["nodes", "node.n1", "checks", "services"], calls.append)
    fsm.apply(7, encode(NoopCommand()))
    assert fsm.last_index == 7 and calls == []
    assert fsm.store.index_of("nodes", "node.n1") == 2 and fsm.store.changes_since(2) == []


def test_rejected_command_changes_nothing_but_the_applied_index():
    fsm = CatalogFSM()
    fsm.apply(2, register(service_id="web1"))
    before = fsm.store.snapshot()
    calls: list[int] = []
    fsm.store.watch(["nodes", "node.n1", "checks", "service.web"], calls.append)
    with pytest.raises(CatalogError):
        fsm.apply(3, register(service_id="web2", checks=[("ok", "web2"), ("bad", "missing")]))
    after = fsm.store.snapshot()
    assert after.pop("last_index") == 3 and before.pop("last_index") == 2
    assert after == before and calls == []
    with pytest.raises(CommandError):
        fsm.apply(4, b"\x93not a command")
    assert fsm.last_index == 4
    fsm.apply(5, register(service_id="web2", checks=[("ok", "web2")]))  # the store still works
    assert [s.id for s in fsm.store.node("n1")[2]] == ["web1", "web2"]


def test_snapshot_restore_replaces_store_and_wakes_old_watchers():
    fsm = CatalogFSM()
    fsm.apply(2, register(service_id="web1", checks=[("serfHealth", "")]))
    fsm.apply(3, register(node="n2", service_id="db1", name="db"))
    fsm.apply(4, encode(DeregisterCommand("n2")))
    data = fsm.snapshot()
    assert isinstance(data, bytes)

    other = CatalogFSM()
    other.apply(9, register(node="zz"))
    old_store = other.store
    woken: list[int] = []
    old_store.watch(["service.web"], woken.append)
    other.restore(data)
    assert other.store is not old_store and woken == [4]
    assert other.last_index == 4 and other.store.snapshot() == fsm.store.snapshot()
    assert other.store.index_of("service.db") == 4  # the tombstone survives the snapshot
    assert other.store.node("zz")[1] is None


def test_restore_of_garbage_keeps_the_old_store():
    fsm = CatalogFSM()
    fsm.apply(2, register())
    store = fsm.store
    for bad in (b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"version": 1, "nodes": []})):
        with pytest.raises(SnapshotError):
            fsm.restore(bad)
    assert fsm.store is store and fsm.last_index == 2


def test_store_can_be_injected():
    store = StateStore(history=5)
    assert CatalogFSM(store).store is store


# Determinism: applying a log in one go, or part of it + snapshot/restore + the rest, gives equal state.

entries_st = st.lists(
    st.one_of(
        st.builds(register, st.sampled_from(("n0", "n1")), st.sampled_from(("", "s0", "s1")),
                  st.sampled_from(("web", "db")),
                  st.lists(st.tuples(st.sampled_from(("c0", "c1")), st.sampled_from(("", "s0"))), max_size=2),
                  st.sampled_from(("10.0.0.1", "10.0.0.2"))),
        st.builds(lambda n, s, c: encode(DeregisterCommand(n, s, c)), st.sampled_from(("n0", "n1")),
                  st.sampled_from(("", "s0")), st.sampled_from(("", "c0"))),
        st.just(encode(NoopCommand())),
    ),
    max_size=20,
)


def apply_all(fsm: CatalogFSM, entries: list[bytes], first_index: int) -> None:
    for i, data in enumerate(entries, start=first_index):
        try:
            fsm.apply(i, data)
        except CatalogError:
            pass


@settings(max_examples=150, deadline=None, derandomize=True, print_blob=True)
@given(entries_st, st.integers(min_value=0, max_value=20))
def test_snapshot_in_the_middle_gives_the_same_state(entries, cut):
    cut = min(cut, len(entries))
    whole = CatalogFSM()
    apply_all(whole, entries, 1)
    part = CatalogFSM()
    apply_all(part, entries[:cut], 1)
    resumed = CatalogFSM()
    resumed.restore(part.snapshot())
    apply_all(resumed, entries[cut:], cut + 1)
    assert resumed.store.snapshot() == whole.store.snapshot()
    assert resumed.snapshot() == whole.snapshot()
