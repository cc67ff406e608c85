"""RaftCluster: one server's Raft membership — driver, storage, transport, formation, forwarding
(layer 3).

Contract:
- `RaftCluster(settings, fsm)` opens `FileStorage(data_dir/raft)` (or `MemoryStorage` without a
  data dir) and builds a `RaftNode`. A single server (`settings.single`: -dev, -bootstrap,
  -bootstrap-expect 1 without joins) bootstraps itself at once and can write synchronously
  (`apply_now`) before the loop serves; it has no transport unless `accept_joins` (a durable
  -bootstrap server other servers may join later: it then adds them like any leader, and stops
  being `alone()`). Otherwise `run()` listens on the server
  port and servers exchange HELLOs (id, address, expect, known servers) with every join address
  and known peer; once `expect` servers know each other the one with the lowest id bootstraps the
  initial membership. A restarted server keeps its log and membership and only relearns addresses
  (from its joins, its peers and `raft/addresses.json`; `raft/peers.json` is the
  outage-recovery file, see `storage.recover_peers`). The leader adds servers it hears from that
  are not members as learners and promotes them once caught up (never ones removed here).
- `propose(data)` returns the FSM's result. On a follower the write is forwarded to the leader
  over the transport (FORWARD → the leader appends it and answers (index, term) → the follower
  waits until it applies that entry itself and returns its own FSM result: the FSM is
  deterministic and no result ever needs to be serialized; the forwarding follower also reads its
  own write). It waits up to `hold_timeout` for a leader, then raises `NoLeader`; a write whose
  entry was replaced by another leader's is retried.
- Operator calls: `configuration()`, `remove_peer(id)`, `transfer_leader(id or "")` run on the
  leader (a follower forwards them, OPERATOR frame); they raise `OperatorError` with the reason
  when the leader refuses, `NoLeader` when there is none.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from agent.errors import NoLeader
from agent.raft import codec
from agent.raft.core import CoreConfig
from agent.raft.errors import NotLeader, ProposalDropped, RaftError
from agent.raft.memstore import MemoryStorage
from agent.raft.messages import MalformedMessage, Membership
from agent.raft.node import (
    BASE_TICK_SECONDS,
    SNAPSHOT_EVERY,
    TRAILING_LOGS,
    RaftNode,
    StateMachine,
)
from agent.raft.storage import FileStorage, recover_peers
from agent.raft.transport import FORWARD, FORWARD_RESP, HELLO, OPERATOR, OPERATOR_RESP, RAFT, Transport
from agent.raft.waiters import LeadershipLost

HELLO_INTERVAL = 0.5      # seconds between HELLO rounds (and membership reconciliation)
FORWARD_REPLY_TIMEOUT = 2.0
log = logging.getLogger("waypost.raft.cluster")


class WriteTimeout(NoLeader):
    """The write was appended but did not commit within the hold timeout."""

    def __init__(self) -> None:
        super().__init__("timed out waiting for the write to commit")


class OperatorError(RaftError):
    """The leader refused an operator request (unknown server, change pending, ...)."""


@dataclass(slots=True)
class ClusterSettings:
    server_id: str
    address: str                 # advertised host:port of the server port
    bind_host: str = "0.0.0.0"
    port: int = 8300
    data_dir: Path | None = None
    expect: int = 1
    join: list[str] = field(default_factory=list)
    single: bool = True
    raft_multiplier: int = 5
    hold_timeout: float = 7.0
    listen: bool = True          # False: Raft connections come from the agent.rpc listener
    accept_joins: bool = False   # a single server (-bootstrap) that other servers may still join
    snapshot_threshold: int = SNAPSHOT_EVERY   # raft_snapshot_threshold
    trailing_logs: int = TRAILING_LOGS         # raft_trailing_logs
    snapshot_interval: float = 0.0             # raft_snapshot_interval (0: at the threshold at once)


class RaftCluster:
    def __init__(self, settings: ClusterSettings, fsm: StateMachine) -> None:
        self.settings = s = settings
        self.id = s.server_id
        storage: FileStorage | MemoryStorage = MemoryStorage()
        recovered: dict[str, str] = {}
        if s.data_dir is not None:
            storage = FileStorage(s.data_dir / "raft")
            recovered = recover_peers(s.data_dir / "raft" / "peers.json", storage)
        self.node = RaftNode(s.server_id, fsm, storage, tick_seconds=BASE_TICK_SECONDS * s.raft_multiplier,
                             config=CoreConfig(), durable=s.data_dir is not None,
                             snapshot_every=s.snapshot_threshold, trailing_logs=s.trailing_logs,
                             snapshot_interval=s.snapshot_interval)
        self.transport: Transport | None = None
        self._peers_file = s.data_dir / "raft" / "addresses.json" if s.data_dir is not None else None
        self._expect: dict[str, int] = {}
        self._removed: set[str] = set()
        self._forwards: dict[int, asyncio.Future[tuple[int, int, str]]] = {}
        self._forward_targets: dict[int, tuple[str, asyncio.Future[tuple[int, int, str]]]] = {}
        self._operator_waiters: dict[int, asyncio.Future[str]] = {}
        self._operator_tasks: set[asyncio.Future[object]] = set()
        self._req_ids = itertools.count(1)
        self._leader_known = asyncio.Event()
        self.node.on_leader_change = self._leader_changed
        if s.single:
            self.node.bootstrap(Membership.of([s.server_id]))
            self.node.drain_now()
        if not s.single or s.accept_joins:
            self.transport = Transport(s.server_id, s.address, self._on_frame, self._hello_body)
            self.node.send = self.transport.send
            for sid, address in {**self._load_peers(), **recovered}.items():
                self.transport.learn(sid, address)
        if self.node.leader_id():
            self._leader_known.set()

    # --- state ---
    def alone(self) -> bool:
        """A single server that is still the only voter (nobody joined it): it is its own quorum."""
        voters = self.node.membership().voters
        return self.settings.single and len(voters) <= 1

    def leader_address(self) -> str:
        leader = self.node.leader_id()
        if not leader:
            return ""
        return self.address_of(leader)

    def address_of(self, server_id: str) -> str:
        if server_id == self.id:
            return self.settings.address
        return self.transport.addresses.get(server_id, "") if self.transport else ""

    def peers(self) -> list[str]:
        return [a for a in (self.address_of(v) for v in self.node.membership().voters) if a]

    def configuration(self) -> list[dict]:
        members = self.node.membership()
        leader = self.node.leader_id()
        return [{"ID": sid, "Node": sid, "Address": self.address_of(sid), "Leader": sid == leader,
                 "Voter": members.is_voter(sid), "ProtocolVersion": "3"} for sid in members.members()]

    def resolve(self, id_or_address: str) -> str:
        """A member's id from its id or address ("" when unknown)."""
        for sid in self.node.membership().members():
            if id_or_address in (sid, self.address_of(sid)):
                return sid
        return ""

    def bound(self, port: int) -> None:
        """The server port was bound (to `port`, maybe ephemeral): advertise that one."""
        host = self.settings.address.rpartition(":")[0]
        self.settings.port = port
        self.settings.address = f"{host}:{port}"
        if self.transport is not None:
            self.transport.address = self.settings.address

    def readmit(self, server_id: str) -> None:
        """A server removed here came back (it rejoined the gossip pool): the leader may add it again."""
        self._removed.discard(server_id)

    def add_server(self, address: str) -> None:
        """Another server's server port, learnt from gossip: exchange HELLOs with it."""
        if self.transport is not None and address != self.settings.address and address not in self.settings.join:
            self.settings.join.append(address)
            self.transport.connect(address)

    # --- running ---
    async def run(self) -> None:
        if self.transport is None:
            await self.node.run()
            return
        if self.settings.listen:
            await self.transport.listen(self.settings.bind_host, self.settings.port)
        for address in self.settings.join:
            self.transport.connect(address)
        async with asyncio.TaskGroup() as group:
            group.create_task(self.node.run(), name="raft-node")
            group.create_task(self.transport.run(), name="raft-transport")
            group.create_task(self._reconcile_loop(), name="raft-formation")

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.node.close()

    async def _reconcile_loop(self) -> None:
        assert self.transport is not None
        while True:
            for address in self.settings.join:
                self.transport.connect(address)
            self.transport.broadcast_hello()
            self._maybe_bootstrap()
            if self.node.is_leader():
                await self._reconcile_members()
            await asyncio.sleep(HELLO_INTERVAL)

    def _maybe_bootstrap(self) -> None:
        if not self.node.is_fresh() or self.settings.expect < 2 or self.transport is None:
            return
        known = {self.id, *self.transport.addresses}
        if len(known) >= self.settings.expect and self.id == min(known):
            log.info("bootstrapping the cluster with %s", ", ".join(sorted(known)))
            members = Membership.of(known)
            self.node.request_bootstrap(members)

    async def _reconcile_members(self) -> None:
        assert self.transport is not None
        members = self.node.membership()
        for sid in sorted(self.transport.addresses):
            if sid in self._removed:
                continue
            if sid not in members.members():
                await self._quietly(lambda core, sid=sid: core.add_learner(sid))
                return  # one change at a time
            if sid in members.learners:
                await self._quietly(lambda core, sid=sid: core.promote(sid))
                return

    async def _quietly(self, fn) -> None:  # type: ignore[no-untyped-def]
        with contextlib.suppress(RaftError):
            await self.node.call(fn)

    # --- frames ---
    def _hello_body(self) -> bytes:
        known = [[sid, addr] for sid, addr in (self.transport.addresses.items() if self.transport else ())]
        return msgpack.packb([self.id, self.settings.address, self.settings.expect, known], use_bin_type=True)

    def _on_frame(self, src: str, kind: int, body: bytes) -> None:
        assert self.transport is not None
        if kind == RAFT:
            try:
                self.node.step(codec.decode(body))
            except MalformedMessage as exc:
                log.warning("malformed raft message from %s: %s", src, exc)
        elif kind == HELLO:
            self._on_hello(body)
        elif kind == FORWARD:
            req_id, data = msgpack.unpackb(body, raw=False)
            transport = self.transport

            def reply(index: int, term: int, hint: str) -> None:
                transport.send_frame(src, FORWARD_RESP, msgpack.packb([req_id, index, term, hint]))

            self.node.propose_forwarded(data, reply, src)
        elif kind == FORWARD_RESP:
            req_id, index, term, hint = msgpack.unpackb(body, raw=False)
            future = self._forwards.pop(req_id, None)
            if future is not None and not future.done():
                future.set_result((index, term, hint))
        elif kind == OPERATOR:
            req_id, op, arg = msgpack.unpackb(body, raw=False)
            self._operator_on_leader(src, req_id, op, arg)
        elif kind == OPERATOR_RESP:
            req_id, error = msgpack.unpackb(body, raw=False)
            waiting = self._operator_waiters.pop(req_id, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(error)

    def _on_hello(self, body: bytes) -> None:
        assert self.transport is not None
        sid, address, expect, known = msgpack.unpackb(body, raw=False)
        news = self.transport.learn(sid, address)
        self._expect[sid] = expect
        for other, other_address in known:
            news = self.transport.learn(other, other_address) or news
        if news:
            self._save_peers()

    def _load_peers(self) -> dict[str, str]:
        if self._peers_file is None or not self._peers_file.exists():
            return {}
        try:
            raw = json.loads(self._peers_file.read_text())
            return {str(k): str(v) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _save_peers(self) -> None:
        if self._peers_file is None or self.transport is None:
            return
        tmp = self._peers_file.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(self.transport.addresses, sort_keys=True))
            os.replace(tmp, self._peers_file)

    def _leader_changed(self, leader: str) -> None:
        if leader:
            self._leader_known.set()
        else:
            self._leader_known.clear()
        for target, future in list(self._forward_targets.values()):
            if target != leader and not future.done():
                future.set_exception(NotLeader(leader))  # retry at once with the new leader

    # --- writes ---
    def apply_now(self, data: bytes) -> object:
        return self.node.apply_now(data)

    async def propose(self, data: bytes) -> object:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.hold_timeout
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise WriteTimeout()
            leader = self.node.leader_id()
            if not leader:
                try:
                    await asyncio.wait_for(self._leader_known.wait(), remaining)
                except TimeoutError:
                    raise NoLeader() from None
                continue
            try:
                if leader == self.id:
                    async with asyncio.timeout(remaining):  # no extra task, unlike wait_for
                        return await self.node.propose(data)
                return await self._forward(leader, data, deadline)
            except (NotLeader, ProposalDropped, LeadershipLost) as exc:
                log.debug("write retried: %s", exc)
                if self.node.leader_id() in ("", leader):  # no newer leader known yet: give one time
                    await self._pause(min(0.05, max(remaining, 0)))
            except TimeoutError:
                raise WriteTimeout() from None

    async def _pause(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # lets a new leader emerge before the write is retried

    async def _forward(self, leader: str, data: bytes, deadline: float) -> object:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        req_id = next(self._req_ids)
        future: asyncio.Future[tuple[int, int, str]] = loop.create_future()
        self._forwards[req_id] = future
        self._forward_targets[req_id] = (leader, future)
        try:
            if not self.transport.send_frame(leader, FORWARD, msgpack.packb([req_id, data], use_bin_type=True)):
                raise NotLeader(leader)
            index, term, _hint = await asyncio.wait_for(
                future, min(FORWARD_REPLY_TIMEOUT, max(deadline - loop.time(), 0.001)))
        except TimeoutError:
            if loop.time() >= deadline:
                raise
            raise NotLeader(leader) from None
        finally:
            self._forwards.pop(req_id, None)
            self._forward_targets.pop(req_id, None)
        if index == 0:
            raise NotLeader(_hint)
        done: asyncio.Future[object] = loop.create_future()

        def waiter(result: object) -> None:
            if not done.done():
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)

        self.node.register_waiter(index, term, waiter)
        return await asyncio.wait_for(done, max(deadline - loop.time(), 0.001))

    # --- operator ---
    async def remove_peer(self, server_id: str) -> None:
        await self._operator("remove", server_id)

    async def transfer_leader(self, server_id: str = "") -> None:
        await self._operator("transfer", server_id)

    def _operation(self, op: str, arg: str):  # type: ignore[no-untyped-def]
        if op == "remove":
            self._removed.add(arg)
            return lambda core: core.remove_server(arg)
        target = arg or self._best_transferee()
        if not target:
            raise OperatorError("no other voter to transfer leadership to")
        return lambda core: core.transfer_leadership(target)

    def _best_transferee(self) -> str:
        progress = self.node.core.progress
        others = [v for v in self.node.membership().voters if v != self.id]
        return max(others, key=lambda v: progress[v].match if v in progress else -1, default="")

    async def _operator(self, op: str, arg: str) -> None:
        leader = self.node.leader_id()
        if not leader:
            raise NoLeader()
        if leader == self.id:
            try:
                await self.node.call(self._operation(op, arg))
            except RaftError as exc:
                raise OperatorError(str(exc)) from None
            return
        assert self.transport is not None
        req_id = next(self._req_ids)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._operator_waiters[req_id] = future
        try:
            self.transport.send_frame(leader, OPERATOR, msgpack.packb([req_id, op, arg]))
            error = await asyncio.wait_for(future, self.settings.hold_timeout)
        except TimeoutError:
            raise NoLeader("timed out waiting for the leader") from None
        finally:
            self._operator_waiters.pop(req_id, None)
        if error:
            raise OperatorError(error)

    def _operator_on_leader(self, src: str, req_id: int, op: str, arg: str) -> None:
        assert self.transport is not None
        transport = self.transport

        def reply(error: str) -> None:
            transport.send_frame(src, OPERATOR_RESP, msgpack.packb([req_id, error]))

        if not self.node.is_leader():
            reply(f"not the leader (leader: {self.node.leader_id() or 'unknown'})")
            return
        try:
            future = self.node.call(self._operation(op, arg))
        except RaftError as exc:
            reply(str(exc))
            return
        self._operator_tasks.add(future)

        def done(f: asyncio.Future[object]) -> None:
            self._operator_tasks.discard(f)
            exc = f.exception()
            reply(str(exc) if exc is not None else "")

        future.add_done_callback(done)
