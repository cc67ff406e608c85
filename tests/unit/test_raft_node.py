"""RaftNode on one server: results travel back, proposals share a fsync, snapshots truncate the log
and a restart recovers snapshot + log. (Multi-server behaviour: tests/sim and the integration test.)"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.raft.memstore import MemoryStorage
from agent.raft.messages import Membership
from agent.raft.node import RaftNode
from agent.raft.storage import FileStorage


class Boom(Exception):
    pass


class DictFSM:
    def __init__(self) -> None:
        self.data: dict[str, int] = {}
        self.applied: list[int] = []

    def apply(self, index: int, data: bytes) -> object:
        self.applied.append(index)
        key, value = data.decode().split("=")
        if value == "boom":
            raise Boom(key)
        self.data[key] = int(value)
        return len(self.data)

    def snapshot(self) -> bytes:
        return json.dumps(self.data).encode()

    def restore(self, data: bytes) -> None:
        self.data = json.loads(data)


class CountingStorage(FileStorage):
    saves = 0

    def save(self, *args) -> None:  # type: ignore[no-untyped-def]
        CountingStorage.saves += 1
        super().save(*args)


def single(fsm: DictFSM, storage, **kw) -> RaftNode:  # type: ignore[no-untyped-def]
    node = RaftNode("a", fsm, storage, tick_seconds=0.01, durable=isinstance(storage, FileStorage), **kw)
    node.bootstrap(Membership.of(["a"]))
    node.drain_now()
    return node


async def run_with(node: RaftNode, coro):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(node.run())
    try:
        return await coro
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_results_and_fsm_errors_travel_back_in_memory() -> None:
    fsm = DictFSM()
    node = single(fsm, MemoryStorage())
    assert node.is_leader()
    assert node.apply_now(b"x=1") == 1

    async def writes() -> list[object]:
        ok = await node.propose(b"y=2")
        with pytest.raises(Boom):
            await node.propose(b"z=boom")
        return [ok]

    assert await run_with(node, writes()) == [2]
    assert fsm.data == {"x": 1, "y": 2}


async def test_concurrent_proposals_share_one_fsync(tmp_path: Path) -> None:
    fsm = DictFSM()
    node = single(fsm, CountingStorage(tmp_path))
    CountingStorage.saves = 0

    async def burst() -> list[object]:
        return list(await asyncio.gather(*(node.propose(f"k{i}={i}".encode()) for i in range(200))))

    results = await run_with(node, burst())
    assert sorted(results) == list(range(1, 201))  # type: ignore[type-var]
    assert CountingStorage.saves <= 3, CountingStorage.saves  # one batch (plus commit-index updates)


async def test_snapshot_truncation_and_restart(tmp_path: Path) -> None:
    fsm = DictFSM()
    node = single(fsm, FileStorage(tmp_path), snapshot_every=50)

    async def writes() -> None:
        for i in range(120):
            await node.propose(f"k{i}={i}".encode())

    await run_with(node, writes())
    node.close()
    storage = FileStorage(tmp_path)
    assert storage.snap is not None and storage.snap.index >= 50
    assert len(storage.entries) < 120
    again = DictFSM()
    node2 = single(again, storage)
    assert node2.is_leader()
    assert again.data == {f"k{i}": i for i in range(120)}
    assert node2.apply_now(b"after=1") == 121


async def test_snapshot_interval_holds_snapshots_back_past_the_threshold(tmp_path: Path) -> None:
    """raft_snapshot_interval: crossing the threshold is not enough until the interval has passed
    (Consul checks every interval), so a write burst does not snapshot every few seconds."""
    held = single(DictFSM(), FileStorage(tmp_path / "held"), snapshot_every=10, snapshot_interval=3600.0)
    prompt = single(DictFSM(), FileStorage(tmp_path / "prompt"), snapshot_every=10, snapshot_interval=1e-6)
    for node in (held, prompt):
        async def writes(node: RaftNode = node) -> None:
            for i in range(30):
                await node.propose(f"k{i}={i}".encode())

        await run_with(node, writes())
        node.close()
    assert FileStorage(tmp_path / "held").snap is None
    snap = FileStorage(tmp_path / "prompt").snap
    assert snap is not None and snap.index >= 10


async def test_three_nodes_replicate_read_index_and_forwarded_results(tmp_path: Path) -> None:
    nodes: dict[str, RaftNode] = {}

    def send(m) -> None:  # type: ignore[no-untyped-def]
        asyncio.get_running_loop().call_soon(lambda: nodes[m.dst].step(m))

    for name in "abc":
        nodes[name] = RaftNode(name, DictFSM(), FileStorage(tmp_path / name), tick_seconds=0.01, send=send,
                               snapshot_every=40)
    nodes["a"].bootstrap(Membership.of("abc"))

    async def scenario() -> None:
        while not nodes["a"].is_leader():
            await asyncio.sleep(0.01)
        await asyncio.gather(*(nodes["a"].propose(f"k{i}={i}".encode()) for i in range(100)))
        index = await nodes["b"].read_index()  # a follower's linearizable read point
        assert index >= 100 and nodes["b"].applied_index() >= index
        assert nodes["b"].fsm.data["k99"] == 99  # type: ignore[attr-defined]
        results: list[object] = []
        done = asyncio.Event()
        # a forwarded write: the leader appends, the follower waits for its own apply's result
        nodes["a"].propose_forwarded(b"fwd=7", lambda i, t, _: nodes["c"].register_waiter(
            i, t, lambda r: (results.append(r), done.set())), "c")
        await asyncio.wait_for(done.wait(), 5)
        assert results == [101]

    tasks = [asyncio.create_task(n.run()) for n in nodes.values()]
    try:
        await asyncio.wait_for(scenario(), 20)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_follower_far_behind_gets_a_snapshot_and_restarts_from_it(tmp_path: Path) -> None:
    nodes: dict[str, RaftNode] = {}
    cut: set[str] = set()

    def send(m) -> None:  # type: ignore[no-untyped-def]
        if m.dst not in cut and m.src not in cut:
            asyncio.get_running_loop().call_soon(lambda: nodes[m.dst].step(m))

    for name in "abc":
        nodes[name] = RaftNode(name, DictFSM(), FileStorage(tmp_path / name), tick_seconds=0.01, send=send,
                               snapshot_every=20)
    nodes["a"].bootstrap(Membership.of("abc"))

    async def scenario() -> None:
        while not nodes["a"].is_leader():
            await asyncio.sleep(0.01)
        cut.add("c")
        for i in range(60):  # a and b commit and compact past everything c has
            await nodes["a"].propose(f"k{i}={i}".encode())
        assert nodes["a"].core.log.snap_index > nodes["c"].last_index()
        cut.clear()
        while nodes["c"].applied_index() < nodes["a"].applied_index():
            await asyncio.sleep(0.01)
        assert nodes["c"].fsm.data == nodes["a"].fsm.data  # type: ignore[attr-defined]

    tasks = [asyncio.create_task(n.run()) for n in nodes.values()]
    try:
        await asyncio.wait_for(scenario(), 20)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for node in nodes.values():
            node.close()
    snap = FileStorage(tmp_path / "c").snapshot()
    assert snap is not None and snap.index > 0  # the received snapshot is durable
    restarted = DictFSM()
    RaftNode("c", restarted, FileStorage(tmp_path / "c"))
    assert restarted.data and set(restarted.data) <= {f"k{i}" for i in range(60)}
