"""agent.remote.servers: which server a client agent talks to (pure: no sockets)."""

from __future__ import annotations

import random

import pytest

from agent.errors import NoLeader
from agent.gossip.messages import MemberState
from agent.remote.servers import NoServers, Server, ServerPool, Unreachable
from tests.unit.remote_fixtures import member


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def pool_of(members, **kwargs) -> ServerPool:  # type: ignore[no-untyped-def]
    return ServerPool(lambda: list(members), "dc1", rng=random.Random(7), **kwargs)


def test_only_live_servers_of_our_datacenter_with_a_port() -> None:
    members = [
        member("s1", 8001), member("s2", 8002, state=MemberState.SUSPECT),
        member("s3", 8003, state=MemberState.DEAD), member("s4", 8004, state=MemberState.LEFT),
        member("c1", 0, role="node"), member("s5", 8005, dc="dc2"),
    ]
    bad_port = member("s6", 8006)
    bad_port.tags["port"] = "x"  # type: ignore[index]
    members.append(bad_port)
    servers = pool_of(members).servers()
    assert [s.name for s in servers] == ["s1", "s2"]
    assert servers[0].url == "http://127.0.0.1:8001"
    assert Server("v6", "::1", 8500, "dc1").url == "http://[::1]:8500"


async def test_no_servers_is_a_500_no_known_consul_servers() -> None:
    pool = pool_of([])
    with pytest.raises(NoServers) as exc:
        await pool.run(lambda s: None)  # type: ignore[arg-type,return-value]
    assert str(exc.value) == "No known Consul servers"
    assert isinstance(exc.value, NoLeader)  # the HTTP error middleware maps it to 500 with that text


async def test_prefers_the_last_good_server_and_fails_over() -> None:
    pool = pool_of([member("s1", 1), member("s2", 2), member("s3", 3)])
    tried: list[str] = []

    async def s2_down(server: Server) -> str:
        tried.append(server.name)
        if server.name == "s2":
            raise Unreachable("refused")
        return server.name

    first = await pool.run(s2_down)
    assert pool.preferred() is not None and pool.preferred().name == first  # type: ignore[union-attr]
    tried.clear()
    assert await pool.run(s2_down) == first  # sticks with the one that worked
    assert tried == [first]


async def test_every_server_tried_at_most_once_then_no_servers() -> None:
    clock = Clock()
    pool = pool_of([member("s1", 1), member("s2", 2), member("s3", 3)], clock=clock, bad_for=30.0)
    tried: list[str] = []

    async def down(server: Server) -> None:
        tried.append(server.name)
        raise Unreachable("refused")

    with pytest.raises(NoServers):
        await pool.run(down)
    assert sorted(tried) == ["s1", "s2", "s3"]


async def test_bad_servers_go_last_until_they_expire() -> None:
    clock = Clock()
    pool = pool_of([member("s1", 1), member("s2", 2)], clock=clock, bad_for=30.0)
    first = pool.candidates()[0]
    pool.mark_bad(first)
    assert pool.candidates()[-1] == first
    clock.now += 29.0
    assert pool.candidates()[-1] == first
    pool.mark_good(pool.candidates()[0])
    clock.now += 2.0  # the mark expired: both good again, the preferred one first
    assert len(pool.candidates()) == 2 and pool.candidates()[0] != first


async def test_rotation_spreads_after_failures() -> None:
    pool = pool_of([member(f"s{i}", i) for i in range(1, 4)])
    seen = set()
    for _ in range(3):
        server = pool.candidates()[0]
        seen.add(server.name)
        pool.mark_bad(server)
    assert seen == {"s1", "s2", "s3"}


async def test_other_errors_propagate_without_trying_more() -> None:
    pool = pool_of([member("s1", 1), member("s2", 2)])
    tried: list[str] = []

    async def boom(server: Server) -> None:
        tried.append(server.name)
        raise ValueError("4xx")

    with pytest.raises(ValueError):
        await pool.run(boom)
    assert len(tried) == 1


async def test_on_available_fires_when_a_server_appears_and_after_an_outage() -> None:
    members: list = []
    pool = pool_of(members)
    fired: list[int] = []
    unsubscribe = pool.on_available(lambda: fired.append(1))
    pool.refresh()
    assert fired == []
    members.append(member("s1", 1))
    pool.refresh()
    pool.refresh()
    assert fired == [1]

    async def down(server: Server) -> None:
        raise Unreachable("refused")

    async def up(server: Server) -> str:
        return "ok"

    with pytest.raises(NoServers):
        await pool.run(down)
    assert await pool.run(up) == "ok"
    assert fired == [1, 1]  # reachable again after every server had failed
    unsubscribe()
    members.clear()
    pool.refresh()
    members.append(member("s2", 2))
    pool.refresh()
    assert fired == [1, 1]
