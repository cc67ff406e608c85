"""`-join` / `-retry-join` (agent/gossip/joiner.py) against a fake node and an injected sleep (no real waits)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from agent.errors import BadRequest
from agent.gossip.errors import GossipJoinError
from agent.gossip.joiner import (
    JoinAddressError,
    RetryJoinFailed,
    normalize_address,
    retry_join,
    start_join,
)
from agent.gossip.messages import Member, MemberState


@dataclass
class FakeNode:
    """Fails the first `failures` joins (GossipJoinError), then answers with every address."""

    failures: int = 0
    port: int = 8301
    calls: list[list[str]] = field(default_factory=list)

    async def join(self, addresses: Sequence[str]) -> int:
        self.calls.append(list(addresses))
        if len(self.calls) <= self.failures:
            raise GossipJoinError({a: "connection refused" for a in addresses})
        return len(addresses)

    def local_member(self) -> Member:
        return Member("me", "127.0.0.1", self.port, {}, MemberState.ALIVE, 1, 0.0)


@dataclass
class FakeSleep:
    slept: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


@pytest.mark.parametrize(("raw", "want"), [
    ("10.0.0.1", "10.0.0.1:8301"), ("10.0.0.1:9000", "10.0.0.1:9000"), (" host.example ", "host.example:8301"),
    ("host.example:1", "host.example:1"), ("[::1]:9000", "[::1]:9000"), ("[::1]", "[::1]:8301"),
    ("::1", "[::1]:8301"), ("fe80::0:1", "[fe80::1]:8301"),
])  # fmt: skip
def test_normalize_address(raw, want):
    assert normalize_address(raw) == want


@pytest.mark.parametrize(("raw", "why"), [
    ("provider=aws tag_key=consul tag_value=x", "cloud auto-join is not supported"), ("", "empty"),
    ("10.0.0.1:0", "bad port"), ("10.0.0.1:65536", "bad port"), ("10.0.0.1:x", "bad port"),
    ("[::1", "malformed"), ("[::1]x", "malformed"), ("[nothex]:1", "malformed IPv6"), (":8301", "malformed"),
    ("a b:1", "malformed"),
])  # fmt: skip
def test_normalize_address_refuses(raw, why):
    with pytest.raises(JoinAddressError, match=why) as info:
        normalize_address(raw)
    assert isinstance(info.value, BadRequest)  # the HTTP API answers 400


async def test_start_join_once_uses_our_port_for_portless_addresses():
    node = FakeNode(port=7301)
    assert await start_join(node, ["10.0.0.1", "10.0.0.2:8301"]) == 2
    assert node.calls == [["10.0.0.1:7301", "10.0.0.2:8301"]]
    assert await start_join(node, []) == 0 and len(node.calls) == 1


async def test_start_join_failure_propagates():
    node = FakeNode(failures=1)
    with pytest.raises(GossipJoinError) as info:
        await start_join(node, ["10.0.0.1"])
    assert info.value.reasons == {"10.0.0.1:8301": "connection refused"}
    assert len(node.calls) == 1


async def test_retry_join_retries_until_success(caplog):
    node, sleep, joined = FakeNode(failures=3), FakeSleep(), []
    with caplog.at_level(logging.WARNING, logger="waypost.join"):
        count = await retry_join(node, ["10.0.0.1", "10.0.0.2"], 30.0, 0, joined.append, sleep=sleep)
    assert (count, joined, sleep.slept) == (2, [2], [30.0, 30.0, 30.0])
    assert len(node.calls) == 4
    failures = [r for r in caplog.records if "Join cluster failed" in r.getMessage()]
    assert len(failures) == 3 and "connection refused" in failures[0].getMessage()


async def test_retry_join_gives_up_after_retry_max_attempts():
    node, sleep, joined = FakeNode(failures=100), FakeSleep(), []
    with pytest.raises(RetryJoinFailed, match="max join retry exhausted") as info:
        await retry_join(node, ["10.0.0.1"], 5.0, 3, joined.append, sleep=sleep)
    assert "connection refused" in str(info.value)
    assert (len(node.calls), sleep.slept, joined) == (3, [5.0, 5.0], [])


async def test_retry_join_success_on_the_last_allowed_attempt():
    node, sleep = FakeNode(failures=2), FakeSleep()
    assert await retry_join(node, ["10.0.0.1"], 1.0, 3, sleep=sleep) == 1
    assert sleep.slept == [1.0, 1.0]


async def test_retry_join_refuses_cloud_auto_join_before_any_attempt():
    node = FakeNode()
    with pytest.raises(RetryJoinFailed, match=r"cloud auto-join is not supported.*provider=") as info:
        await retry_join(node, ["10.0.0.1", "provider=gce tag_value=x"], 1.0, 0, sleep=FakeSleep())
    assert isinstance(info.value.__cause__, JoinAddressError)
    assert node.calls == []


async def test_start_join_bad_address_is_a_join_error_before_anything_is_sent():
    node = FakeNode()
    with pytest.raises(GossipJoinError, match="bad port") as info:
        await start_join(node, ["10.0.0.1", "10.0.0.2:70000"])
    assert list(info.value.reasons) == ["-join"]
    assert node.calls == []


async def test_retry_join_without_addresses_returns_at_once():
    node = FakeNode()
    assert await retry_join(node, [], 1.0, 0, sleep=FakeSleep()) == 0 and node.calls == []


async def test_retry_join_awaits_an_async_on_joined_and_treats_oserror_as_a_failed_attempt():
    class Flaky(FakeNode):
        async def join(self, addresses: Sequence[str]) -> int:
            self.calls.append(list(addresses))
            if len(self.calls) == 1:
                raise OSError("network unreachable")
            return 1

    seen: list[int] = []

    async def on_joined(count: int) -> None:
        seen.append(count)

    assert await retry_join(Flaky(), ["10.0.0.1"], 2.0, 0, on_joined, sleep=FakeSleep()) == 1
    assert seen == [1]


async def test_retry_join_is_cancellable_while_waiting():
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def blocking_sleep(seconds: float) -> None:
        entered.set()
        await gate.wait()

    task = asyncio.create_task(retry_join(FakeNode(failures=100), ["10.0.0.1"], 30.0, 0, sleep=blocking_sleep))
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_unstarted_node_defaults_to_consul_port():
    class Unstarted(FakeNode):
        def local_member(self) -> Member:
            raise RuntimeError("not started")

    node = Unstarted()
    await start_join(node, ["10.0.0.1"])
    assert node.calls == [["10.0.0.1:8301"]]
