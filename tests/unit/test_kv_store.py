"""KV table, KV verbs, transactions and sessions through the FSM (pure, no sockets)."""

from __future__ import annotations

import random

import pytest

from agent.catalog.commands import (
    DeregisterCommand,
    KVCommand,
    KVOp,
    RegisterCommand,
    SessionCreateCommand,
    SessionDestroyCommand,
    TombstoneReapCommand,
    TxnCommand,
    decode,
    encode,
)
from agent.catalog.fsm import CatalogFSM
from agent.catalog.kv import KVEntry, KVStore
from agent.catalog.kvops import KVOpError, SessionError, fence_token, parse_fence
from agent.types import HealthCheck, Node
from checks.definition import Status


class Harness:
    def __init__(self) -> None:
        self.fsm = CatalogFSM()
        self.index = 0
        self.delays: list[tuple[str, int]] = []
        self.fsm.on_lock_delay = lambda key, ns: self.delays.append((key, ns))

    def apply(self, command) -> object:
        self.index += 1
        return self.fsm.apply(self.index, encode(command))

    def kv(self, verb: str, key: str, value: bytes = b"", **kw) -> object:
        return self.apply(KVCommand(KVOp(verb, key, value, **kw)))

    def node(self, name: str = "n1", status: str = Status.PASSING) -> None:
        check = HealthCheck(node=name, check_id="serfHealth", name="Serf", status=status)
        self.apply(RegisterCommand(node=Node(node=name, address="10.0.0.1"), checks=[check]))

    def session(self, sid: str = "s1", node: str = "n1", **kw) -> object:
        return self.apply(SessionCreateCommand(id=sid, node=node, **kw))


def test_set_get_cas_and_indexes() -> None:
    h = Harness()
    assert h.kv("set", "a/b", b"1", flags=42) is True
    index, entry = h.fsm.kv.get("a/b")
    assert entry is not None and entry.value == b"1" and entry.flags == 42
    assert index == entry.modify_index == entry.create_index == 1
    assert h.kv("cas", "a/b", b"2", index=0) is False  # 0 = create only
    assert h.kv("cas", "a/b", b"2", index=99) is False
    assert h.kv("cas", "a/b", b"2", index=1) is True
    _, entry = h.fsm.kv.get("a/b")
    assert entry.value == b"2" and entry.create_index == 1 and entry.modify_index == 4
    assert h.kv("cas", "new", b"x", index=5) is False  # CAS on a missing key
    assert h.kv("cas", "new", b"x", index=0) is True
    assert entry.to_api()["Value"] == "Mg=="


def test_delete_leaves_tombstone_and_prefix_index() -> None:
    h = Harness()
    h.kv("set", "cfg/app/x", b"1")
    h.kv("set", "cfg/db/y", b"1")
    h.kv("delete", "cfg/app/x")
    index, entry = h.fsm.kv.get("cfg/app/x")
    assert entry is None and index == 3  # tombstone index, not 0
    assert h.fsm.kv.list("cfg/app/") == (3, [])
    idx, rows = h.fsm.kv.list("cfg/")
    assert idx == 3 and [r.key for r in rows] == ["cfg/db/y"]
    h.kv("set", "cfg/app/x", b"again")
    assert h.fsm.kv.tombstone_count == 0
    h.kv("delete-tree", "cfg/")
    assert h.fsm.kv.list("cfg/")[1] == [] and h.fsm.kv.tombstone_count == 2
    assert h.apply(TombstoneReapCommand(up_to=h.index)) == 2
    assert h.fsm.kv.tombstone_count == 0


def test_delete_cas() -> None:
    h = Harness()
    h.kv("set", "k", b"v")
    assert h.kv("delete-cas", "k", index=7) is False
    assert h.fsm.kv.entry("k") is not None
    assert h.kv("delete-cas", "k", index=1) is True
    assert h.fsm.kv.entry("k") is None


def test_keys_with_separator() -> None:
    kv = Harness()
    for key in ("web/bar", "web/foo", "web/subdir/a", "web/subdir/b", "webx"):
        kv.kv("set", key)
    assert kv.fsm.kv.keys("web/", "/")[1] == ["web/bar", "web/foo", "web/subdir/"]
    assert kv.fsm.kv.keys("", "/")[1] == ["web/", "webx"]


def test_prefix_watchers_wake_only_for_their_prefix() -> None:
    h = Harness()
    fired: list[str] = []
    h.fsm.kv.watch(lambda i: fired.append("app"), prefixes=["config/app/"])
    h.fsm.kv.watch(lambda i: fired.append("root"), prefixes=[""])
    h.fsm.kv.watch(lambda i: fired.append("exact"), keys=["config/app/port"])
    h.kv("set", "config/db/host", b"x")
    assert fired == ["root"]
    h.kv("set", "config/app/port", b"80")
    assert sorted(fired) == ["app", "exact", "root"]
    assert h.fsm.kv.watchers.count() == 0


def test_failed_write_wakes_nobody_and_changes_nothing() -> None:
    h = Harness()
    h.kv("set", "k", b"v")
    fired: list[int] = []
    h.fsm.kv.watch(fired.append, keys=["k"])
    assert h.kv("cas", "k", b"w", index=99) is False
    assert fired == [] and h.fsm.kv.entry("k").value == b"v"


def test_history_and_410_floor() -> None:
    h = Harness()
    h.fsm.kv = KVStore(history=5)
    for i in range(8):
        h.kv("set", f"p/{i}", str(i).encode())
    assert h.fsm.kv.history_floor == 3
    assert h.fsm.kv.events_since(2) is None
    events = h.fsm.kv.events_since(3)
    assert [e.index for e in events] == [4, 5, 6, 7, 8]
    assert [e.key for e in h.fsm.kv.events_since(6, prefix="p/7")] == ["p/7"]
    h.kv("delete", "p/7")
    last = h.fsm.kv.events_since(8)
    assert last[0].entry is None and last[0].to_api() == {"Index": 9, "Op": "delete", "Key": "p/7"}


def test_sessions_locks_lockindex_release_and_invalidate() -> None:
    h = Harness()
    h.node()
    with pytest.raises(SessionError):
        h.session(node="ghost")
    row = h.session("s1", lock_delay_ns=15_000_000_000)
    assert row.to_api()["LockDelay"] == 15_000_000_000
    h.session("s2")
    assert h.kv("lock", "lead", b"me", session="s1") is True
    entry = h.fsm.kv.entry("lead")
    assert entry.lock_index == 1 and entry.session == "s1"
    assert h.kv("lock", "lead", b"me2", session="s1") is True  # re-acquire: same LockIndex
    assert h.fsm.kv.entry("lead").lock_index == 1
    assert h.kv("lock", "lead", b"you", session="s2") is False
    assert h.kv("unlock", "lead", b"", session="s2") is False
    assert h.kv("unlock", "lead", b"bye", session="s1") is True
    assert h.fsm.kv.entry("lead").session == "" and h.delays == []  # explicit release: no delay
    assert h.kv("lock", "lead", b"you", session="s2") is True
    assert h.fsm.kv.entry("lead").lock_index == 2
    h.apply(SessionDestroyCommand("s2"))
    entry = h.fsm.kv.entry("lead")
    assert entry.session == "" and entry.lock_index == 2 and entry.modify_index == h.index
    assert h.delays == [("lead", 15_000_000_000)]
    assert h.fsm.sessions.get("s2") is None


def test_behavior_delete_and_check_invalidation() -> None:
    h = Harness()
    h.node()
    h.session("eph", behavior="delete", lock_delay_ns=0)
    h.session("other")
    h.kv("lock", "svc/a", b"1", session="eph")
    h.kv("lock", "svc/b", b"1", session="other")
    h.node(status=Status.CRITICAL)  # serfHealth critical → both sessions die in the same entry
    assert h.fsm.sessions.get("eph") is None and h.fsm.sessions.get("other") is None
    assert h.fsm.kv.entry("svc/a") is None  # deleted
    assert h.fsm.kv.entry("svc/b").session == ""  # released
    assert h.delays == [("svc/b", 15_000_000_000)]
    with pytest.raises(SessionError):
        h.session("late")  # serfHealth critical: cannot create
    h.node()
    h.session("s3", node_checks=[])
    h.apply(DeregisterCommand(node="n1"))
    assert h.fsm.sessions.get("s3") is None


def test_lock_with_unknown_session_is_an_error() -> None:
    from agent.catalog.kvops import InvalidSession

    h = Harness()
    with pytest.raises(InvalidSession):
        h.kv("lock", "k", b"", session="nope")
    assert h.fsm.kv.entry("k") is None


def test_fencing_token_guards_writes() -> None:
    h = Harness()
    h.node()
    h.session("s1")
    h.session("s2")
    h.kv("lock", "lock", b"", session="s1")
    token = fence_token(h.fsm.kv.entry("lock"))
    assert parse_fence(token) == ("lock", 1)
    assert h.kv("set", "data", b"from s1", fence=token) is True
    h.apply(SessionDestroyCommand("s1"))  # s1 paused too long: its session expired
    h.kv("lock", "lock", b"", session="s2")
    assert h.kv("set", "data", b"stale write", fence=token) is False
    assert h.fsm.kv.entry("data").value == b"from s1"
    with pytest.raises(KVOpError):
        h.kv("set", "data", b"", fence="garbage")


def test_txn_atomic_with_all_errors() -> None:
    h = Harness()
    h.kv("set", "a", b"1")
    ops = [KVOp("set", "b", b"2"), KVOp("cas", "a", b"x", index=99), KVOp("get", "missing"),
           KVOp("check-not-exists", "a")]
    result = h.apply(TxnCommand(ops))
    assert [i for i, _ in result.errors] == [1, 2, 3]
    assert result.to_api()["Results"] is None
    assert h.fsm.kv.entry("b") is None  # nothing half-applied
    result = h.apply(TxnCommand([KVOp("set", "b", b"2"), KVOp("get", "a"), KVOp("get-tree", ""),
                                 KVOp("delete", "zzz"), KVOp("check-index", "a", index=1)]))
    assert not result.errors
    body = result.to_api()
    assert [r["KV"]["Key"] for r in body["Results"]] == ["b", "a", "a", "b", "a"]
    assert body["Results"][0]["KV"]["Value"] is None and body["Results"][1]["KV"]["Value"] == "MQ=="


def test_commands_round_trip() -> None:
    commands = [KVCommand(KVOp("lock", "k", b"\x00\xff", 3, 4, "s", "1:2:k")),
                TxnCommand([KVOp("set", "a"), KVOp("delete-tree", "")]),
                SessionCreateCommand("id", "n1", "nm", 0, "delete", "10s", [], ["c1"]),
                SessionDestroyCommand("id"), TombstoneReapCommand(9)]
    for command in commands:
        assert decode(encode(command)) == command


def test_snapshot_restore_keeps_kv_and_sessions() -> None:
    h = Harness()
    h.node()
    h.session("s1")
    h.kv("lock", "l", b"v", session="s1")
    h.kv("set", "gone", b"")
    h.kv("delete", "gone")
    fired: list[int] = []
    h.fsm.kv.watch(fired.append, prefixes=[""])
    data = h.fsm.snapshot()
    other = CatalogFSM()
    other.restore(data)
    assert other.kv.entry("l") == h.fsm.kv.entry("l")
    assert other.kv.get("gone")[0] == 5 and other.kv.held_by("s1") == ["l"]
    assert other.sessions.get("s1") == h.fsm.sessions.get("s1")
    h.fsm.restore(data)
    assert fired == [5]


def test_random_ops_match_a_model() -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    h = Harness()
    model: dict[str, bytes] = {}
    keys = [f"{a}/{b}" for a in "xyz" for b in "12"]
    for _ in range(300):
        key = rng.choice(keys)
        verb = rng.choice(["set", "delete", "delete-tree", "cas"])
        if verb == "set":
            h.kv("set", key, key.encode())
            model[key] = key.encode()
        elif verb == "delete":
            h.kv("delete", key)
            model.pop(key, None)
        elif verb == "delete-tree":
            h.kv("delete-tree", key[0])
            model = {k: v for k, v in model.items() if not k.startswith(key[0])}
        else:
            current = h.fsm.kv.entry(key)
            ok = h.kv("cas", key, b"c", index=current.modify_index if current else 0)
            assert ok
            model[key] = b"c"
        assert {e.key: e.value for e in h.fsm.kv.list("")[1]} == model, seed
    assert isinstance(KVEntry("k").to_api(), dict)
