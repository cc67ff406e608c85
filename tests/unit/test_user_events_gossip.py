"""User events between real GossipNodes on 127.0.0.1 (ephemeral ports, encrypted): one fire reaches
every other member once, filters are applied where the event lands, a frame that does not
authenticate or does not decode is counted and dropped. Waits poll under a deadline."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import random
import time
from collections.abc import AsyncIterator, Callable

import pytest

from agent.events import EventRing, UserEvent
from agent.gossip import crypto
from agent.gossip.config import SwimConfig
from agent.gossip.envelope import USER_EVENT, frame
from agent.gossip.keyring import Keyring, parse_key
from agent.gossip.messages import MemberState
from agent.gossip.node import GossipNode
from agent.gossip.userevents import BroadcastResult, UserEvents, encode

FAST = dataclasses.replace(SwimConfig.local(), probe_interval=0.2, probe_timeout=0.1, gossip_interval=0.05)
KEY = base64.b64encode(bytes(range(32))).decode()
DEADLINE = 10.0


@dataclasses.dataclass
class Agent:
    node: GossipNode
    ring: EventRing
    events: UserEvents
    services: list[tuple[str, list[str]]]


class Pool:
    def __init__(self) -> None:
        self.agents: dict[str, Agent] = {}
        self.seed = random.randrange(1 << 30)
        print(f"user-event pool seed {self.seed}")

    async def start(self, name: str, services: list[tuple[str, list[str]]] | None = None) -> Agent:
        node = GossipNode(name, "127.0.0.1", "127.0.0.1", 0, {"role": "node", "dc": "dc1"}, FAST,
                          keyring=Keyring([parse_key(KEY)]), rng=random.Random(f"{self.seed}-{name}"))
        await node.start()
        ring = EventRing()
        agent = Agent(node, ring, None, services or [])  # type: ignore[arg-type]
        agent.events = UserEvents(ring, node, lambda: (name, agent.services))
        self.agents[name] = agent
        if len(self.agents) > 1:
            first = next(iter(self.agents.values()))
            await node.join([f"127.0.0.1:{first.node.port}"])
        return agent

    async def close(self) -> None:
        for agent in self.agents.values():
            await agent.events.close()
        await asyncio.gather(*(a.node.close() for a in self.agents.values()))


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    p = Pool()
    yield p
    await p.close()


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > DEADLINE:
            pytest.fail(f"timed out after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.02)


def alive(agent: Agent) -> set[str]:
    return {m.name for m in agent.node.members() if m.state == MemberState.ALIVE}


def ids(agent: Agent) -> list[str]:
    return [e.id for e in agent.ring.list()]


async def test_a_fired_event_reaches_every_member_once_and_filters_apply_at_each(pool: Pool) -> None:
    a = await pool.start("a")
    b = await pool.start("b", [("web", ["v1"])])
    c = await pool.start("c", [("db", [])])
    await wait_until(lambda: all(alive(x) == {"a", "b", "c"} for x in (a, b, c)), "the pool to converge")

    fired = a.ring.fire(UserEvent(id="11111111-0000-4000-8000-000000000001", name="deploy", payload=b"v1"), "a", [])
    await wait_until(lambda: ids(b) == [fired.id] and ids(c) == [fired.id], "the event on b and c")
    assert ids(a) == [fired.id]
    assert b.ring.list()[0] == fired and c.ring.list()[0].ltime == fired.ltime  # one LTime everywhere

    web = b.ring.fire(UserEvent(id="22222222-0000-4000-8000-000000000002", name="restart",
                                service_filter="^web$"), "b", b.services)
    await wait_until(lambda: a.events.stats["filtered"] == 1 and c.events.stats["filtered"] == 1,
                     "a and c to filter the web-only event")
    assert ids(b)[-1] == web.id and web.id not in ids(a) + ids(c)
    assert web.ltime > fired.ltime  # b witnessed a's time before firing

    # the same frame again (a retry that did arrive): a duplicate, not a second copy
    assert (await a.node.broadcast_event(encode(fired))).sent == 2
    await wait_until(lambda: b.events.stats["duplicate"] == 1 and c.events.stats["duplicate"] == 1, "duplicates")
    assert ids(b).count(fired.id) == 1
    assert a.events.stats["published"] == 1 and a.events.stats["send_failures"] == 0


async def raw_frame(port: int, packet: bytes) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(frame(packet))
    await writer.drain()
    writer.close()


async def test_unauthenticated_and_malformed_frames_are_counted_and_dropped(pool: Pool) -> None:
    a = await pool.start("a")
    port = a.node.port
    event = encode(UserEvent(id="33333333-0000-4000-8000-000000000003", name="x"))
    wrong_key = bytes(range(100, 132))
    await raw_frame(port, crypto.encrypt(wrong_key, bytes((USER_EVENT,)) + event))
    await raw_frame(port, bytes((USER_EVENT,)) + event)  # plaintext into an encrypting pool
    await wait_until(lambda: a.node.stats["unauthenticated"] == 2, "two unauthenticated frames")
    await raw_frame(port, crypto.encrypt(parse_key(KEY), bytes((USER_EVENT,)) + b"\xc1not msgpack"))
    await wait_until(lambda: a.events.stats["malformed"] == 1, "the malformed frame")
    await raw_frame(port, crypto.encrypt(parse_key(KEY), bytes((USER_EVENT,)) + event))
    await wait_until(lambda: len(a.ring) == 1, "the well-formed, authenticated event")
    assert a.events.stats["received"] == 2


async def test_without_a_handler_user_events_are_counted_not_kept(pool: Pool) -> None:
    a = await pool.start("a")
    a.node.on_user_event(None)
    await raw_frame(a.node.port, crypto.encrypt(parse_key(KEY), bytes((USER_EVENT,)) + b"anything"))
    await wait_until(lambda: a.node.stats["user_events_unhandled"] == 1, "the unhandled frame")
    assert len(a.ring) == 0


async def test_a_member_that_is_gone_is_reported_as_failed(pool: Pool) -> None:
    a = await pool.start("a")
    b = await pool.start("b")
    await wait_until(lambda: alive(a) == {"a", "b"}, "b to join")
    await b.node.close()  # still listed as alive on a for a moment: the send must fail, not hang
    assert {m.name: m.state for m in a.node.members()}["b"] in (MemberState.ALIVE, MemberState.SUSPECT)
    result = await a.node.broadcast_event(encode(UserEvent(id="44444444-0000-4000-8000-000000000004", name="x")))
    assert result == BroadcastResult(sent=0, failed=1)
