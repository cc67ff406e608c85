"""GossipNode: the asyncio driver of one SWIM core (layer 3).

Contract:
- `start()` binds the gossip port (transport.py: TCP then UDP on the same port, ephemeral for 0),
  creates the `Swim` core with the real port and runs one loop that calls `swim.tick(now)` at
  `swim.next_deadline()` (clock: `loop.time()`), woken early by every input.
- Every core output is sent: a UDP datagram, or one framed TCP exchange (`stream`, `expect_reply`
  or a packet too large for a datagram) in a task this node owns (at most `MAX_STREAMS`);
  `expect_reply` feeds the reply frame to `swim.receive(stream=True)`; `reply` outputs answer on
  the inbound connection they came from. Family-1 frames are keyring queries (keyops.py);
  family-3 frames are user events, handed to the handler set with `on_user_event(handler)`
  (`handler(body, source)`; without one they are counted in `user_events_unhandled` and dropped).
- `broadcast_event(payload)` sends a user-event body to every other alive member over TCP and
  returns a `BroadcastResult` (userevents.py).
- After every receive/tick/join/leave/set_tags/force_leave the core's member events go
  synchronously to subscribers (their exceptions are logged and counted, never propagated).
- `join(addresses)` ("host", "host:port", "[v6]:port"; default port 8301; names are resolved)
  push-pulls with each address concurrently and returns how many answered with an authenticated
  reply, or raises `GossipJoinError` with every address's reason when none did.
- `leave(timeout)` broadcasts our leave, keeps gossiping until the core says the broadcast is done
  (or timeout), then stops probing while still answering. `close()` cancels every task it owns
  and closes every socket.
- `stats` merges the core's counters with the transport's (`unauthenticated`, `dropped_in`, ...).
- `drop(direction, packet)` is a fault-injection hook ("in"/"out", raw wire bytes): True drops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Literal

from agent.gossip import keyops, userevents
from agent.gossip.config import MemberEvent, Outgoing, SwimConfig
from agent.gossip.crypto import OVERHEAD
from agent.gossip.envelope import KEYRING_REQUEST, SWIM, USER_EVENT, MalformedEnvelope, Opened, Sealer
from agent.gossip.errors import GossipJoinError
from agent.gossip.keyring import Keyring, KeyringReport
from agent.gossip.messages import Member, join_hostport, split_hostport
from agent.gossip.swim import Swim
from agent.gossip.transport import Drop, GossipTransport

log = logging.getLogger("waypost.gossip")

DEFAULT_PORT = 8301         # Consul's serf_lan port, for join addresses without one
MAX_STREAMS = 128           # outbound stream sends in flight; more are dropped (the core retries)
UDP_MAX = 65_000            # a sealed packet larger than this goes over TCP instead
MAX_IDLE = 3600.0           # the loop re-checks its deadline at least this often
COUNTERS = ("streams_rejected", "subscriber_errors", "user_events_unhandled")


class GossipNode:
    def __init__(self, name: str, advertise: str, bind_host: str, port: int, tags: Mapping[str, str],
                 config: SwimConfig, *, keyring: Keyring | None = None, verify_incoming: bool = True,
                 verify_outgoing: bool = True, rng: random.Random | None = None,
                 drop: Drop | None = None) -> None:
        self.name = name
        self.advertise = advertise
        self.bind_host = bind_host
        self.port = port
        self.config = config
        self.keyring = keyring
        self.sealer = Sealer(keyring, verify_incoming, verify_outgoing)
        self.transport = GossipTransport(self.sealer, self._on_datagram, self._on_frame, drop)
        self._tags = dict(tags)
        self._rng = rng if rng is not None else random.Random()
        self._swim: Swim | None = None
        self._subscribers: list[Callable[[MemberEvent], None]] = []
        self._event_handler: Callable[[bytes, str], None] | None = None
        self._counters = dict.fromkeys(COUNTERS, 0)
        self._wake = asyncio.Event()
        self._ticked = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._probing = True
        self._closed = False

    # --- lifecycle ---
    async def start(self) -> int:
        self.port = await self.transport.start(self.bind_host, self.port)
        now = asyncio.get_running_loop().time()
        self._swim = Swim(self.name, self.advertise, self.port, self._tags, self.config, self._rng, now)
        self._loop_task = asyncio.create_task(self._run(), name=f"gossip-{self.name}")
        return self.port

    async def close(self) -> None:
        self._closed = True
        tasks = [t for t in (self._loop_task, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
        self.transport.close()

    async def leave(self, timeout: float) -> None:
        swim = self._core()
        loop = asyncio.get_running_loop()
        self._dispatch(swim.leave(loop.time()))
        self._after_input()
        deadline = loop.time() + timeout
        while not swim.left_broadcast_done() and not self._closed:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._ticked.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._ticked.wait()
        self._probing = False
        self._wake.set()

    # --- membership API ---
    def members(self) -> list[Member]:
        return self._swim.members() if self._swim is not None else []

    def local_member(self) -> Member:
        member = self._core().member(self.name)
        if member is None:  # the core always knows itself; guard against a broken invariant
            raise RuntimeError("gossip core does not know the local member")
        return member

    def subscribe(self, callback: Callable[[MemberEvent], None]) -> Callable[[], None]:
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            with contextlib.suppress(ValueError):
                self._subscribers.remove(callback)
        return unsubscribe

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._tags = dict(tags)
        if self._swim is not None:
            self._swim.set_tags(self._tags, self._now())
            self._after_input()

    def force_leave(self, name: str, prune: bool = False) -> bool:
        found = self._core().force_leave(name, self._now(), prune=prune)
        self._after_input()
        return found

    @property
    def stats(self) -> dict[str, int]:
        core = dict(self._swim.stats) if self._swim is not None else {}
        return {**core, **self.transport.counters, **self._counters}

    @property
    def health_score(self) -> int:
        return self._swim.health_score if self._swim is not None else 0

    async def keyring_operation(self, op: Literal["list", "install", "use", "remove"],
                                key: str = "") -> KeyringReport:
        return await keyops.run_operation(self, op, key)

    # --- user events ---
    def on_user_event(self, handler: Callable[[bytes, str], None] | None) -> None:
        self._event_handler = handler

    async def broadcast_event(self, payload: bytes) -> userevents.BroadcastResult:
        return await userevents.send_to_members(self, payload)

    # --- joining ---
    async def join(self, addresses: Sequence[str]) -> int:
        swim = self._core()
        results = await asyncio.gather(*(self._join_one(swim, a) for a in addresses))
        reasons = {addr: why for addr, why in zip(addresses, results, strict=True) if why}
        joined = len(addresses) - len(reasons)
        for addr, why in reasons.items():
            log.warning("gossip join %s failed: %s", addr, why)
        if joined == 0:
            raise GossipJoinError(reasons)
        return joined

    async def _join_one(self, swim: Swim, address: str) -> str:
        """"" when the address answered a push-pull, else the reason it did not."""
        try:
            host, port = split_hostport(address.strip(), DEFAULT_PORT)
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (ValueError, OSError) as exc:
            return f"cannot resolve {address!r}: {exc}"
        family = self.transport.family
        infos.sort(key=lambda info: info[0] != family)  # prefer our socket's address family
        target = join_hostport(str(infos[0][4][0]), port)
        outs = swim.join([target], self._now())
        self._after_input()
        waits = [o for o in outs if o.stream and o.expect_reply]
        self._dispatch([o for o in outs if not (o.stream and o.expect_reply)])
        if not waits:
            return "the gossip core sent no push-pull request"
        errors = await asyncio.gather(*(self._stream(o) for o in waits))
        return "" if any(e == "" for e in errors) else next(e for e in errors if e)

    # --- the loop ---
    async def _run(self) -> None:
        swim = self._core()
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            pause = 0.0
            if self._probing and now >= swim.next_deadline():
                try:
                    self._dispatch(swim.tick(now))
                except Exception:
                    self.transport.counters["core_errors"] += 1
                    log.exception("gossip tick failed")
                    pause = 0.1  # do not spin on a core that keeps failing
                self._drain_events()
                self._ticked.set()
            self._wake.clear()
            delay = swim.next_deadline() - loop.time() if self._probing else MAX_IDLE
            delay = min(max(delay, pause, 0.001), MAX_IDLE)
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _dispatch(self, outs: Sequence[Outgoing]) -> list[Outgoing]:
        """Send every output; returns the `reply` outputs for the caller's connection."""
        replies: list[Outgoing] = []
        for out in outs:
            if out.reply:
                replies.append(out)
            elif out.stream or out.expect_reply or len(out.payload) + OVERHEAD + 1 > UDP_MAX:
                self._spawn(self._stream(out))
            else:
                self.transport.send_udp(out.payload, out.address)
        return replies

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._closed or len(self._tasks) >= MAX_STREAMS:
            coro.close()
            self._counters["streams_rejected"] += 1
            return
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _stream(self, out: Outgoing) -> str:
        """One outbound TCP exchange; "" on success, else why it failed."""
        opened, error = await self.transport.exchange(out.payload, out.address, out.expect_reply)
        if error or opened is None:
            return error
        if opened.family != SWIM:
            return "the reply is not a gossip message"
        self._dispatch(self._receive(opened.body, out.address, stream=True))
        return ""

    # --- input ---
    def _receive(self, body: bytes, source: str, *, stream: bool) -> list[Outgoing]:
        swim = self._core()
        try:
            outs = swim.receive(body, source, self._now(), stream=stream)
        except Exception:
            self.transport.counters["core_errors"] += 1
            log.exception("gossip core failed on a packet from %s", source)
            outs = []
        self._after_input()
        return outs

    def _on_datagram(self, body: bytes, source: str) -> None:
        if self._closed or self._swim is None:
            return
        for reply in self._dispatch(self._receive(body, source, stream=False)):
            self.transport.send_udp(reply.payload, source)  # a core that asks to reply to a datagram

    def _on_frame(self, opened: Opened, source: str) -> list[bytes]:
        if self._closed or self._swim is None:
            return []
        if opened.family == SWIM:
            replies = self._dispatch(self._receive(opened.body, source, stream=True))
            return [self.sealer.seal(SWIM, r.payload) for r in replies]
        if opened.family == KEYRING_REQUEST:
            return [keyops.answer(self, opened)]
        if opened.family == USER_EVENT:
            if self._event_handler is None:
                self._counters["user_events_unhandled"] += 1
            else:
                self._event_handler(opened.body, source)  # the handler counts what it drops
            return []
        raise MalformedEnvelope("unexpected frame family")

    # --- helpers ---
    def _core(self) -> Swim:
        if self._swim is None:
            raise RuntimeError("gossip node is not started")
        return self._swim

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _after_input(self) -> None:
        self._drain_events()
        self._wake.set()

    def _drain_events(self) -> None:
        if self._swim is None:
            return
        for event in self._swim.take_events():
            for callback in list(self._subscribers):
                try:
                    callback(event)
                except Exception:
                    self._counters["subscriber_errors"] += 1
                    log.exception("gossip event subscriber failed on %s", event.kind)
