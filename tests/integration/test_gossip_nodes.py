"""Several GossipNodes in one process on 127.0.0.1 ephemeral ports: real UDP and TCP.

Timings are SwimConfig.local() made faster still (probe 200 ms) so failures show in about a
second; every wait polls a condition under a deadline.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence

import pytest

from agent.gossip.config import MemberEvent, SwimConfig
from agent.gossip.envelope import frame
from agent.gossip.errors import GossipJoinError, KeyringError
from agent.gossip.keyring import Keyring, parse_key
from agent.gossip.messages import MemberState
from agent.gossip.node import GossipNode

FAST = dataclasses.replace(
    SwimConfig.local(), probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05, suspicion_mult=3,
    push_pull_interval=2.0, reconnect_interval=1.0, gossip_to_the_dead=2.0)
K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(100, 132))).decode()
K3 = base64.b64encode(bytes(range(50, 66))).decode()
DEADLINE = 10.0


class Cluster:
    def __init__(self) -> None:
        self.nodes: list[GossipNode] = []
        self.seed = random.randrange(1 << 30)
        print(f"gossip cluster seed {self.seed}")

    async def start(self, name: str, *, keys: Sequence[str] = (), verify_incoming: bool = True,
                    verify_outgoing: bool = True, drop: Callable[[str, bytes], bool] | None = None,
                    config: SwimConfig = FAST) -> GossipNode:
        keyring = Keyring([parse_key(k) for k in keys]) if keys else None
        node = GossipNode(name, "127.0.0.1", "127.0.0.1", 0, {"role": "node", "dc": "dc1"}, config,
                          keyring=keyring, verify_incoming=verify_incoming, verify_outgoing=verify_outgoing,
                          rng=random.Random(f"{self.seed}-{name}"), drop=drop)
        await node.start()
        self.nodes.append(node)
        return node

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes))


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    c = Cluster()
    yield c
    await c.close()


def addr(node: GossipNode) -> str:
    return f"127.0.0.1:{node.port}"


def states(node: GossipNode) -> dict[str, MemberState]:
    return {m.name: m.state for m in node.members()}


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> float:
    """Poll `condition` until it holds; the seconds it took. Fails with `what` at the deadline."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def all_alive(nodes: Sequence[GossipNode], names: Sequence[str]) -> bool:
    want = dict.fromkeys(names, MemberState.ALIVE)
    return all({k: v for k, v in states(n).items() if k in want} == want for n in nodes)


async def three(cluster: Cluster, **kw: object) -> list[GossipNode]:
    a = await cluster.start("a", **kw)  # type: ignore[arg-type]
    b = await cluster.start("b", **kw)  # type: ignore[arg-type]
    c = await cluster.start("c", **kw)  # type: ignore[arg-type]
    assert await b.join([addr(a)]) == 1
    assert await c.join([addr(a)]) == 1
    await wait_until(lambda: all_alive([a, b, c], "abc"), "a, b and c to see each other alive")
    return [a, b, c]


async def test_three_nodes_join_and_converge(cluster: Cluster) -> None:
    a = await cluster.start("a")
    events: list[MemberEvent] = []
    a.subscribe(events.append)
    b = await cluster.start("b")
    c = await cluster.start("c")
    assert await b.join([addr(a)]) == 1
    assert await c.join([f"localhost:{b.port}"]) == 1  # names resolve
    took = await wait_until(lambda: all_alive([a, b, c], "abc"), "convergence")
    print(f"3 nodes converged in {took:.2f}s")
    assert {e.member.name for e in events if e.kind == "join"} >= {"b", "c"}
    member_b = next(m for m in a.members() if m.name == "b")
    assert (member_b.address, member_b.port, member_b.tags["role"]) == ("127.0.0.1", b.port, "node")
    assert a.local_member().name == "a" and a.local_member().port == a.port


async def test_tags_update_spreads(cluster: Cluster) -> None:
    a, b, _c = await three(cluster)
    b.set_tags({"role": "node", "dc": "dc1", "build": "2:waypost"})
    await wait_until(lambda: next(m for m in a.members() if m.name == "b").tags.get("build") == "2:waypost",
                     "b's new tags on a")


async def test_crash_is_detected(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    failed: list[str] = []
    a.subscribe(lambda e: failed.append(e.member.name) if e.kind == "failed" else None)
    await c.close()  # a crash: no leave message
    took = await wait_until(lambda: states(a).get("c") == MemberState.DEAD and states(b).get("c") == MemberState.DEAD,
                            "a and b to declare c dead")
    print(f"crash detected by both in {took:.2f}s")
    assert "c" in failed
    assert states(a)["b"] == MemberState.ALIVE and states(b)["a"] == MemberState.ALIVE


async def test_graceful_leave(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    left: list[str] = []
    b.subscribe(lambda e: left.append(e.member.name) if e.kind == "leave" else None)
    await c.leave(3.0)
    await c.close()
    await wait_until(lambda: states(a).get("c") == MemberState.LEFT and states(b).get("c") == MemberState.LEFT,
                     "a and b to see c LEFT")
    assert left == ["c"]
    assert next(m for m in a.members() if m.name == "c").serf_status() == 3


async def test_force_leave_of_a_dead_member(cluster: Cluster) -> None:
    a, b, c = await three(cluster)
    await c.close()
    await wait_until(lambda: states(a).get("c") == MemberState.DEAD, "c dead on a")
    assert a.force_leave("c")
    assert not a.force_leave("nobody")
    await wait_until(lambda: states(b).get("c") == MemberState.LEFT, "the force-leave to reach b")


async def test_join_errors(cluster: Cluster) -> None:
    a = await cluster.start("a")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(GossipJoinError) as info:
            await a.join([f"127.0.0.1:{dead_port}", "no-such-host.invalid:8301"])
    assert set(info.value.reasons) == {f"127.0.0.1:{dead_port}", "no-such-host.invalid:8301"}
    b = await cluster.start("b")
    assert await a.join([f"127.0.0.1:{dead_port}", addr(b)]) == 1  # one answer is enough


async def test_encrypted_cluster_and_wrong_key(cluster: Cluster) -> None:
    a, b, c = await three(cluster, keys=[K1])
    before = a.stats["unauthenticated"]
    intruder = await cluster.start("x", keys=[K2])
    with pytest.raises(GossipJoinError):
        await intruder.join([addr(a)])
    assert a.stats["unauthenticated"] > before
    assert "x" not in states(a) and states(intruder).keys() == {"x"}
    plain = await cluster.start("p")  # no encryption at all
    with pytest.raises(GossipJoinError):
        await plain.join([addr(b)])
    assert "p" not in states(b)
    assert all_alive([a, b, c], "abc")


async def test_key_rotation_across_three_nodes(cluster: Cluster) -> None:
    a, b, c = await three(cluster, keys=[K1])
    report = await a.keyring_operation("list")
    assert (report.num_nodes, report.keys, report.primary_keys) == (3, {K1: 3}, {K1: 3})
    assert report.responses == {"a": "", "b": "", "c": ""}

    report = await b.keyring_operation("use", K2)  # not installed anywhere: every node refuses
    assert set(report.errors) == {"a", "b", "c"} and report.primary_keys == {K1: 3}

    report = await a.keyring_operation("install", K2)
    assert report.errors == {} and report.keys == {K1: 3, K2: 3}
    report = await a.keyring_operation("use", K2)
    assert report.errors == {} and report.primary_keys == {K2: 3}
    report = await c.keyring_operation("remove", K2)  # the primary: refused everywhere
    assert set(report.errors) == {"a", "b", "c"}
    report = await c.keyring_operation("remove", K1)
    assert report.errors == {} and report.keys == {K2: 3}
    assert all(n.keyring is not None and n.keyring.keys() == [K2] for n in (a, b, c))

    # still one cluster, still talking: a crash is detected, a K2 node joins, a K1 node cannot
    late = await cluster.start("d", keys=[K2])
    assert await late.join([addr(c)]) == 1
    await wait_until(lambda: all_alive([a, b, c, late], "abcd"), "d to join the rotated cluster")
    old = await cluster.start("e", keys=[K1])
    with pytest.raises(GossipJoinError):
        await old.join([addr(a)])
    await b.close()
    await wait_until(lambda: states(a).get("b") == MemberState.DEAD, "b's crash after the rotation")


async def test_keyring_operation_errors(cluster: Cluster) -> None:
    a = await cluster.start("a")
    with pytest.raises(KeyringError):
        await a.keyring_operation("list")  # no encryption
    e = await cluster.start("e", keys=[K1])
    with pytest.raises(KeyringError):
        await e.keyring_operation("install", "not-base64!")
    with pytest.raises(KeyringError):
        await e.keyring_operation("rotate", K2)  # type: ignore[arg-type]
    report = await e.keyring_operation("install", K3)  # alone: just this node
    assert report.num_nodes == 1 and report.keys == {K1: 1, K3: 1}


async def test_keyring_member_that_does_not_answer(cluster: Cluster) -> None:
    a, _b, c = await three(cluster, keys=[K1])
    # c briefly cannot open a's query (it closes the connection) while a still lists it ALIVE
    c.sealer.keyring = Keyring([parse_key(K3)])
    try:
        report = await a.keyring_operation("list")
    finally:
        c.sealer.keyring = c.keyring
    assert report.num_nodes == 3 and report.responses["c"] != "" and report.keys == {K1: 2}
    assert set(report.errors) == {"c"}


async def test_rollout_verify_incoming_off_accepts_plaintext(cluster: Cluster) -> None:
    # stage 1 of a rollout: a has the key but neither requires nor sends encryption
    a = await cluster.start("a", keys=[K1], verify_incoming=False, verify_outgoing=False)
    b = await cluster.start("b")  # not yet configured
    assert await b.join([addr(a)]) == 1
    await wait_until(lambda: all_alive([a, b], "ab"), "a (keyed, lenient) and b (plaintext)")
    # stage 2: c sends encrypted but still accepts plaintext; a opens its packets with the key
    c = await cluster.start("c", keys=[K1], verify_incoming=False, verify_outgoing=True)
    assert await c.join([addr(a)]) == 1
    await wait_until(lambda: all(states(n).get("c") == MemberState.ALIVE for n in (a, c)), "c with a")
    # a strict node refuses the plaintext node
    strict = await cluster.start("s", keys=[K1])
    with pytest.raises(GossipJoinError):
        await b.join([addr(strict)])
    assert strict.stats["unauthenticated"] > 0


async def test_garbage_does_not_hurt(cluster: Cluster) -> None:
    a, b, _c = await three(cluster, keys=[K1])
    plain = await cluster.start("p")
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=("127.0.0.1", a.port))
    rng = random.Random(cluster.seed)
    for _ in range(200):
        transport.sendto(rng.randbytes(rng.randrange(0, 300)))
    transport.close()
    for payload in (frame(b"\x01" + bytes(40)), b"\xff\xff\xff\xff", frame(b""), b"GET / HTTP/1.1\r\n\r\n"):
        reader, writer = await asyncio.open_connection("127.0.0.1", a.port)
        writer.write(payload)
        await writer.drain()
        await asyncio.wait_for(reader.read(), 5)  # a closes the connection
        writer.close()
    # an unencrypted node is full of garbage too
    transport, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol,
                                                       remote_addr=("127.0.0.1", plain.port))
    for _ in range(200):
        transport.sendto(b"\x00" + rng.randbytes(rng.randrange(0, 300)))
    transport.close()
    await wait_until(lambda: a.stats["unauthenticated"] >= 150, "a to count the garbage")
    await b.close()
    await wait_until(lambda: states(a).get("b") == MemberState.DEAD, "a still detecting failures")
    assert plain.stats["udp_in"] >= 150 and states(plain) == {"p": MemberState.ALIVE}


async def test_subscriber_errors_are_contained(cluster: Cluster) -> None:
    a = await cluster.start("a")
    seen: list[str] = []

    def bad(event: MemberEvent) -> None:
        raise RuntimeError("subscriber bug")

    a.subscribe(bad)
    unsubscribe = a.subscribe(lambda e: seen.append(e.member.name))
    b = await cluster.start("b")
    assert await b.join([addr(a)]) == 1
    await wait_until(lambda: "b" in seen, "the good subscriber")
    assert a.stats["subscriber_errors"] >= 1
    unsubscribe()
    c = await cluster.start("c")
    await c.join([addr(a)])
    await wait_until(lambda: all_alive([a], "abc"), "c on a")
    assert "c" not in seen


async def test_no_false_failures_with_5_percent_loss(cluster: Cluster) -> None:
    rng = random.Random(cluster.seed)
    lossy = {"on": False}

    def drop(direction: str, packet: bytes) -> bool:  # 5% of every packet sent, once converged
        return lossy["on"] and direction == "out" and rng.random() < 0.05

    config = dataclasses.replace(FAST, indirect_checks=3, retransmit_mult=4, suspicion_mult=4)  # LAN's multipliers
    nodes = [await cluster.start(n, drop=drop, config=config) for n in "abcd"]
    for n in nodes[1:]:
        await n.join([addr(nodes[0])])
    await wait_until(lambda: all_alive(nodes, "abcd"), "4 nodes to converge")
    failed: list[str] = []
    for n in nodes:
        n.subscribe(lambda e: failed.append(e.member.name) if e.kind == "failed" else None)
    lossy["on"] = True
    end = time.monotonic() + 4.0  # 20 probe rounds per node
    while time.monotonic() < end:
        await asyncio.sleep(0.1)
    assert failed == [], f"false failures at 5% loss: {failed}"
    assert sum(n.stats["dropped_out"] for n in nodes) > 0
    assert all_alive(nodes, "abcd")


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_members(cluster: Cluster) -> None:
    nodes = []
    for name in "ab":
        node = GossipNode(name, "::1", "::1", 0, {"role": "node"}, FAST, rng=random.Random(f"{cluster.seed}{name}"))
        await node.start()
        cluster.nodes.append(node)
        nodes.append(node)
    a, b = nodes
    assert await b.join([f"[::1]:{a.port}"]) == 1
    await wait_until(lambda: all_alive([a, b], "ab"), "a and b over IPv6")
    assert next(m for m in a.members() if m.name == "b").address == "::1"
    await b.close()
    await wait_until(lambda: states(a).get("b") == MemberState.DEAD, "b's crash over IPv6")


async def test_fixed_port_in_use_is_an_error(cluster: Cluster) -> None:
    a = await cluster.start("a")
    clash = GossipNode("b", "127.0.0.1", "127.0.0.1", a.port, {}, FAST)
    with pytest.raises(OSError):
        await clash.start()
    await clash.close()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, pytest.raises(OSError):
        udp.bind(("127.0.0.1", a.port))  # UDP and TCP share the port
