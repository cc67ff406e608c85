"""Node/Service/Check verbs in transactions, atomic with KV ops (pure FSM, and the HTTP decoder)."""

from __future__ import annotations

import random

import pytest

from agent.catalog.commands import (
    CatalogOp,
    KVOp,
    RegisterCommand,
    SessionCreateCommand,
    TxnCommand,
    decode,
    encode,
)
from agent.catalog.fsm import CatalogFSM
from agent.catalog.kvops import TxnResult
from agent.catalog.txnops import is_read_only, read_txn
from agent.errors import BadRequest, ProblemsError, WaypostError
from agent.http.txn import decode_ops
from agent.types import HealthCheck, Node, NodeService
from checks.definition import Status


class Harness:
    def __init__(self) -> None:
        self.fsm = CatalogFSM()
        self.index = 0

    def apply(self, command) -> object:
        self.index += 1
        return self.fsm.apply(self.index, encode(command))

    def txn(self, *ops) -> TxnResult:
        result = self.apply(TxnCommand(list(ops)))
        assert isinstance(result, TxnResult)
        return result


def node_op(verb: str, name: str = "n1", address: str = "10.0.0.1", index: int = 0) -> CatalogOp:
    return CatalogOp("Node", verb, name, Node(node=name, address=address), index)


def service_op(verb: str, sid: str = "web1", node: str = "n1", port: int = 80, index: int = 0) -> CatalogOp:
    return CatalogOp("Service", verb, node, NodeService(id=sid, service="web", port=port), index)


def check_op(verb: str, cid: str = "c1", node: str = "n1", status: Status = Status.PASSING,
             service_id: str = "", index: int = 0) -> CatalogOp:
    return CatalogOp("Check", verb, node, HealthCheck(node=node, check_id=cid, name=cid, status=status,
                                                      service_id=service_id), index)


def kv_set(key: str, value: bytes = b"v") -> KVOp:
    return KVOp("set", key, value)


def test_set_node_service_check_and_kv_in_one_txn() -> None:
    h = Harness()
    result = h.txn(node_op("set"), service_op("set"), check_op("set", service_id="web1"), kv_set("a"))
    assert result.errors == []
    api = result.to_api()
    assert [next(iter(r)) for r in api["Results"]] == ["Node", "Service", "Check", "KV"]
    node = api["Results"][0]["Node"]
    assert node["Node"] == "n1" and node["Address"] == "10.0.0.1" and node["ModifyIndex"] == h.index
    assert api["Results"][1]["Service"]["ID"] == "web1" and api["Results"][1]["Service"]["Port"] == 80
    check = api["Results"][2]["Check"]
    assert check["ServiceName"] == "web" and check["Status"] == "passing"
    store = h.fsm.store
    assert store.service_nodes("web")[1][0][1].port == 80
    assert store.check("n1", "c1") is not None and h.fsm.kv.entry("a") is not None


def test_failure_anywhere_applies_nothing() -> None:
    h = Harness()
    h.txn(node_op("set"))
    before = h.fsm.store.snapshot()
    result = h.txn(kv_set("a"), service_op("set", node="n1"), node_op("set", "n2"),
                   service_op("get", sid="nope"), check_op("set", cid="x", service_id="missing"))
    assert [i for i, _ in result.errors] == [3, 4]
    assert result.errors[0][1] == 'service "nope" on node "n1" doesn\'t exist'
    assert "Missing service registration" in result.errors[1][1]
    assert result.to_api()["Results"] is None
    assert h.fsm.kv.entry("a") is None and h.fsm.store.node_row("n2") is None
    after = h.fsm.store.snapshot()
    after["last_index"] = before["last_index"]
    assert after == before


def test_kv_failure_rolls_back_catalog_ops() -> None:
    h = Harness()
    result = h.txn(node_op("set"), KVOp("cas", "k", b"x", index=99))
    assert result.errors == [(1, 'failed to set key "k", index is stale')]
    assert h.fsm.store.node_row("n1") is None


def test_node_cas_and_delete_cas() -> None:
    h = Harness()
    assert h.txn(node_op("cas", index=0)).errors == []
    created = h.fsm.store.node_row("n1")
    assert created is not None
    assert h.txn(node_op("cas", index=0)).errors == [(0, 'failed to set node "n1", index is stale')]
    stale = h.txn(node_op("cas", address="10.0.0.2", index=created.modify_index + 5))
    assert stale.errors == [(0, 'failed to set node "n1", index is stale')]
    ok = h.txn(node_op("cas", address="10.0.0.2", index=created.modify_index))
    assert ok.errors == [] and h.fsm.store.node_row("n1").address == "10.0.0.2"
    modify = h.fsm.store.node_row("n1").modify_index
    assert h.txn(node_op("delete-cas", index=modify - 1)).errors == [
        (0, 'failed to delete node "n1", index is stale')]
    assert h.txn(node_op("delete-cas", index=modify)).errors == []
    assert h.fsm.store.node_row("n1") is None
    assert h.txn(node_op("delete-cas", index=modify)).errors == [
        (0, 'failed to delete node "n1", index is stale')]


def test_service_and_check_cas_get_delete() -> None:
    h = Harness()
    h.txn(node_op("set"), service_op("set"), check_op("set", service_id="web1"))
    service = h.fsm.store.node_service("n1", "web1")
    got = h.txn(service_op("get"), check_op("get"), node_op("get")).to_api()["Results"]
    assert got[0]["Service"]["ModifyIndex"] == service.modify_index
    assert got[1]["Check"]["CheckID"] == "c1" and got[2]["Node"]["Node"] == "n1"
    assert h.txn(service_op("cas", port=81, index=service.modify_index + 5)).errors == [
        (0, 'failed to set service "web1" on node "n1", index is stale')]
    assert h.txn(service_op("cas", port=81, index=service.modify_index)).errors == []
    check = h.fsm.store.check("n1", "c1")
    assert h.txn(check_op("cas", status=Status.CRITICAL, index=check.modify_index + 1)).errors == [
        (0, 'failed to set check "c1" on node "n1", index is stale')]
    assert h.txn(check_op("cas", status=Status.CRITICAL, index=check.modify_index)).errors == []
    assert h.fsm.store.check("n1", "c1").status == Status.CRITICAL
    check = h.fsm.store.check("n1", "c1")
    assert h.txn(check_op("delete-cas", index=check.modify_index)).errors == []
    assert h.fsm.store.check("n1", "c1") is None
    assert h.txn(service_op("delete")).errors == []
    assert h.fsm.store.node_service("n1", "web1") is None
    assert h.txn(service_op("delete"), check_op("delete")).errors == []  # missing: no-op


def test_missing_node_and_unknown_verb_errors() -> None:
    h = Harness()
    result = h.txn(service_op("set"), check_op("set"), node_op("get"), node_op("frob"),
                   check_op("get", cid="zz"))
    assert result.errors == [
        (0, "failed inserting service: Missing node registration"),
        (1, "Missing node registration"),
        (2, 'node "n1" doesn\'t exist'),
        (3, 'unknown Node verb "frob"'),
        (4, 'check "zz" on node "n1" doesn\'t exist'),
    ]


def test_later_ops_see_earlier_ones_and_delete_node_cascades() -> None:
    h = Harness()
    result = h.txn(node_op("set"), service_op("set"), service_op("get"), node_op("delete"), node_op("set"),
                   service_op("get"))
    assert result.errors == [(5, 'service "web1" on node "n1" doesn\'t exist')]
    assert h.txn(node_op("set"), service_op("set"), node_op("delete")).errors == []
    assert h.fsm.store.node_row("n1") is None and h.fsm.store.service_nodes("web")[1] == []


def test_session_dies_when_txn_makes_its_check_critical() -> None:
    h = Harness()
    h.txn(node_op("set"), check_op("set", cid="serfHealth"))
    session = h.apply(SessionCreateCommand(id="s1", node="n1"))
    assert session is not None
    assert h.apply(TxnCommand([KVOp("lock", "lk", b"", session="s1")])).errors == []
    assert h.fsm.kv.entry("lk").session == "s1"
    assert h.txn(check_op("set", cid="serfHealth", status=Status.CRITICAL)).errors == []
    assert h.fsm.sessions.get("s1") is None and h.fsm.kv.entry("lk").session == ""


def test_read_txn_and_encoding_round_trip() -> None:
    h = Harness()
    h.txn(node_op("set"), service_op("set"))
    ops = [node_op("get"), service_op("get"), KVOp("get", "missing")]
    assert is_read_only(ops) and not is_read_only([node_op("set")])
    result = read_txn(h.fsm.store, h.fsm.kv, h.fsm.sessions, ops)
    assert [i for i, _ in result.errors] == [2]
    with pytest.raises(WaypostError):
        read_txn(h.fsm.store, h.fsm.kv, h.fsm.sessions, [node_op("delete")])
    command = TxnCommand([node_op("cas", index=3), service_op("set"), check_op("get"), kv_set("k")])
    assert decode(encode(command)) == command
    assert isinstance(decode(encode(RegisterCommand(node=Node("a", "1.1.1.1")))), RegisterCommand)


def test_http_decoder_shapes_and_bad_input() -> None:
    ops = decode_ops([
        {"Node": {"Verb": "cas", "Node": {"Node": "n1", "Address": "1.2.3.4", "Meta": {"a": "b"},
                                          "ModifyIndex": 7}}},
        {"Service": {"Verb": "set", "Node": "n1", "Service": {"ID": "w", "Service": "web", "Port": 8080,
                                                               "Tags": ["x"]}}},
        {"Check": {"Verb": "delete", "Check": {"Node": "n1", "CheckID": "c"}}},
        {"KV": {"Verb": "get", "Key": "k"}},
    ], "dc9")
    node, service, check, kv = ops
    assert isinstance(node, CatalogOp) and node.index == 7 and node.row == Node(
        node="n1", address="1.2.3.4", datacenter="dc9", meta={"a": "b"})
    assert isinstance(service, CatalogOp) and service.row.port == 8080 and service.row.tags == ("x",)
    assert isinstance(check, CatalogOp) and check.node == "n1" and check.row.check_id == "c"
    assert isinstance(kv, KVOp)
    for bad in ([{"Node": {"Verb": "set", "Node": {"Node": "n1"}}}],          # no address
                [{"Service": {"Verb": "get", "Service": {"ID": "w"}}}],        # no node
                [{"Check": {"Verb": "set", "Check": "nope"}}],
                [{"Node": {"Verb": "get", "Node": {"Node": "n", "ModifyIndex": -1}}}],
                [{"Service": {"Verb": "set", "Node": "n", "Service": {"Service": "w", "Port": "x"}}}]):
        with pytest.raises((BadRequest, ProblemsError)):  # both answer 400
            decode_ops(bad)


def _random_op(rng: random.Random) -> CatalogOp | KVOp:
    verb = rng.choice(["set", "set", "cas", "get", "delete", "delete-cas"])
    index = rng.choice([0, rng.randint(1, 40)])
    node = rng.choice(["n1", "n2"])
    kind = rng.choice(["Node", "Service", "Check", "KV"])
    if kind == "Node":
        return node_op(verb, node, address=rng.choice(["10.0.0.1", "10.0.0.2"]), index=index)
    if kind == "Service":
        return service_op(verb, rng.choice(["s1", "s2"]), node, port=rng.choice([80, 81]), index=index)
    if kind == "Check":
        return check_op(verb, rng.choice(["c1", "c2"]), node, rng.choice(list(Status)),
                        service_id=rng.choice(["", "s1"]), index=index)
    kv_verb = {"set": "set", "cas": "cas", "get": "get", "delete": "delete", "delete-cas": "delete-cas"}[verb]
    return KVOp(kv_verb, rng.choice(["k1", "k2"]), b"v", index=index)


def test_random_transactions_are_all_or_nothing() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    h = Harness()
    committed = 0
    for _ in range(400):
        ops = [_random_op(rng) for _ in range(rng.randint(1, 5))]
        before = (h.fsm.store.snapshot(), h.fsm.kv.snapshot())
        result = h.txn(*ops)
        after = (h.fsm.store.snapshot(), h.fsm.kv.snapshot())
        if result.errors:
            after[0]["last_index"] = before[0]["last_index"]
            assert after == before, (seed, ops, result.errors)
        else:
            committed += 1
            restored = CatalogFSM()
            restored.restore(h.fsm.snapshot())  # the store's invariants still hold
    assert committed > 20, seed
