"""Cluster-wide user events over the gossip transport (layer 3; serf's user events for waypost).

Design: the agent an event is fired at sends it straight to every member it sees alive (or
suspect), one TCP frame each (envelope family `USER_EVENT`, sealed like every gossip packet, so
encrypted with the cluster key), at most `SEND_CONCURRENCY` at once, `ATTEMPTS` tries per member,
no reply. Why not serf's piggybacked gossip: piggybacking rides the SWIM core's broadcast queue
(another module's pure state) and reaches everyone only probabilistically, after
retransmit_mult·log(N) gossip rounds; a direct TCP send reaches every member the firer knows in
one round trip, with delivery confirmed by TCP and every failure counted. Its cost is N small
connections per event on the firing agent: for a few hundred members that is a few hundred
sub-kilobyte frames, well within one agent's means. What it shares with serf: a member that
is partitioned away or unknown to the firer when the event is fired misses it (serf keeps no
durable history either).

Contract:
- `encode(event)` / `decode(body)`: msgpack map `{id, name, payload, node, service, tag, version,
  ltime}`; `decode` raises `MalformedUserEvent` for anything that is not a valid event (wrong types,
  a bad filter regex, a reserved name, name + payload over 512 bytes, ltime outside uint64).
- `send_to_members(node, payload)` (what `GossipNode.broadcast_event` runs) → `BroadcastResult(sent,
  failed)`: every member but us in ALIVE or SUSPECT state gets the sealed family-3 frame.
- `UserEvents(ring, transport, local)` wires an agent: it registers itself as the transport's
  family-3 handler and as `ring.publisher`. `publish(event)` (called by `EventRing.fire`) encodes
  the event and sends it in a task it owns (at most `MAX_PENDING` broadcasts in flight; more are
  dropped, counted and logged); `receive(body, source)` decodes (malformed: counted in
  `stats["malformed"]`, dropped), then `ring.receive(event, *local())` dedups by ID, witnesses the
  sender's Lamport time and keeps the event only when its filters match this agent. `close()`
  cancels the broadcasts in flight. Nothing a peer sends raises out of `receive`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgpack

from agent.errors import BadRequest, PayloadTooLarge
from agent.events import DUPLICATE, FILTERED, KEPT, EventRing, LocalView, UserEvent, validate
from agent.gossip.envelope import USER_EVENT, frame
from agent.gossip.messages import MemberState

if TYPE_CHECKING:
    from agent.gossip.node import GossipNode

log = logging.getLogger("waypost.events")

SEND_CONCURRENCY = 32   # connections one broadcast has open at once: 300 members ≈ 10 LAN round trips
ATTEMPTS = 2            # a member that refused or timed out once gets one more try
RETRY_DELAY = 0.5       # before that second try: long enough for a transient refusal to clear
CONNECT_TIMEOUT = 1.0   # a gossip peer on a LAN accepts a TCP connect well within a second
SEND_TIMEOUT = 2.0      # writing one sub-kilobyte frame
MAX_PENDING = 256       # broadcasts in flight on one agent; beyond that an event is not spread
MAX_BODY = 16 * 1024    # an encoded event is name + payload (≤ 512 bytes) + filters: refuse giants
UINT64_MAX = (1 << 64) - 1
TARGET_STATES = (MemberState.ALIVE, MemberState.SUSPECT)
COUNTERS = ("published", "received", KEPT, DUPLICATE, FILTERED, "malformed", "sent", "send_failures",
            "dropped")
_FIELDS = {"id": str, "name": str, "node": str, "service": str, "tag": str}


class MalformedUserEvent(Exception):
    """A family-3 body that is not a valid user event (counted and dropped)."""


@dataclass(frozen=True, slots=True)
class BroadcastResult:
    sent: int     # members that took the frame
    failed: int   # members that did not, after every attempt


class EventTransport(Protocol):
    """What `UserEvents` needs of the gossip layer (a GossipNode, or the agent's Membership)."""

    def on_user_event(self, handler: Callable[[bytes, str], None]) -> None: ...

    def broadcast_event(self, payload: bytes) -> Awaitable[BroadcastResult]: ...


# --- codec ---
def encode(event: UserEvent) -> bytes:
    return msgpack.packb({
        "id": event.id, "name": event.name, "payload": event.payload, "node": event.node_filter,
        "service": event.service_filter, "tag": event.tag_filter, "version": event.version,
        "ltime": event.ltime})


def decode(body: bytes) -> UserEvent:
    if len(body) > MAX_BODY:
        raise MalformedUserEvent(f"user event of {len(body)} bytes is over the {MAX_BODY}-byte limit")
    try:
        data = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # untrusted bytes: msgpack raises many kinds
        raise MalformedUserEvent(f"undecodable user event: {exc}") from None
    if not isinstance(data, dict):
        raise MalformedUserEvent("a user event is a map")
    for key, kind in _FIELDS.items():
        if not isinstance(data.get(key), kind):
            raise MalformedUserEvent(f"user event field {key!r} is missing or not a {kind.__name__}")
    payload, version, ltime = data.get("payload"), data.get("version"), data.get("ltime")
    if payload is not None and not isinstance(payload, bytes):
        raise MalformedUserEvent("user event payload is not bytes")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise MalformedUserEvent("user event version is not a positive integer")
    if not isinstance(ltime, int) or isinstance(ltime, bool) or not 0 <= ltime <= UINT64_MAX:
        raise MalformedUserEvent("user event ltime is not a uint64")
    if not data["id"]:
        raise MalformedUserEvent("user event without an ID")
    event = UserEvent(id=data["id"], name=data["name"], payload=payload, node_filter=data["node"],
                      service_filter=data["service"], tag_filter=data["tag"], version=version, ltime=ltime)
    try:
        validate(event)
    except (BadRequest, PayloadTooLarge) as exc:
        raise MalformedUserEvent(str(exc)) from None
    return event


# --- sending (GossipNode.broadcast_event) ---
async def send_to_members(node: GossipNode, payload: bytes) -> BroadcastResult:
    packet = frame(node.sealer.seal(USER_EVENT, payload))
    targets = [m for m in node.members() if m.state in TARGET_STATES and m.name != node.name]
    gate = asyncio.Semaphore(SEND_CONCURRENCY)

    async def deliver(address: str, port: int) -> bool:
        for attempt in range(ATTEMPTS):
            if attempt:
                await asyncio.sleep(RETRY_DELAY)
            async with gate:
                error = await _send(address, port, packet)
            if not error:
                return True
            log.debug("user event to %s:%d failed (attempt %d): %s", address, port, attempt + 1, error)
        return False

    results = await asyncio.gather(*(deliver(m.address, m.port) for m in targets))
    sent = sum(results)
    return BroadcastResult(sent=sent, failed=len(results) - sent)


async def _send(host: str, port: int, packet: bytes) -> str:
    """One framed packet over a fresh TCP connection; "" on success, else why not."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT):
            _, writer = await asyncio.open_connection(host, port)
        async with asyncio.timeout(SEND_TIMEOUT):
            writer.write(packet)
            await writer.drain()
        return ""
    except TimeoutError:
        return "timed out"
    except OSError as exc:
        return str(exc) or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()


# --- the agent's side ---
class UserEvents:
    def __init__(self, ring: EventRing, transport: EventTransport, local: Callable[[], LocalView]) -> None:
        self.ring = ring
        self.transport = transport
        self.local = local
        self.stats = dict.fromkeys(COUNTERS, 0)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        transport.on_user_event(self.receive)
        ring.publisher = self.publish

    def publish(self, event: UserEvent) -> None:
        """Spread an event fired here to every other member (in a task this object owns)."""
        if self._closed:
            return
        if len(self._tasks) >= MAX_PENDING:
            self.stats["dropped"] += 1
            log.warning("user event %s (%s) not spread: %d broadcasts already in flight",
                        event.id, event.name, len(self._tasks))
            return
        self.stats["published"] += 1
        task = asyncio.get_running_loop().create_task(self._broadcast(event), name=f"user-event-{event.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _broadcast(self, event: UserEvent) -> None:
        try:
            result = await self.transport.broadcast_event(encode(event))
        except Exception:  # a bug here must not take the agent's loop down with it
            self.stats["send_failures"] += 1
            log.exception("user event %s (%s): broadcast failed", event.id, event.name)
            return
        self.stats["sent"] += result.sent
        self.stats["send_failures"] += result.failed
        if result.failed:
            log.warning("user event %s (%s) reached %d member(s); %d did not take it",
                        event.id, event.name, result.sent, result.failed)

    def receive(self, body: bytes, source: str) -> None:
        """A family-3 frame from `source`: keep the event when it is new and meant for us."""
        self.stats["received"] += 1
        try:
            event = decode(body)
        except MalformedUserEvent as exc:
            self.stats["malformed"] += 1
            log.debug("dropped a malformed user event from %s: %s", source, exc)
            return
        node, services = self.local()
        self.stats[self.ring.receive(event, node, services)] += 1

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        if self.ring.publisher == self.publish:
            self.ring.publisher = None
