"""Session TTL timers and lock-delay on a fake clock; the driver's leader-only expiry."""

from __future__ import annotations

import asyncio
import contextlib

from agent.catalog.commands import RegisterCommand, SessionCreateCommand
from agent.catalog.sessions import Session
from agent.server import CatalogServer
from agent.sessions_driver import LEADER_POLL, LockDelays, SessionDriver, SessionTimers, ttl_seconds
from agent.types import Node


def test_ttl_session_expires_between_ttl_and_twice_ttl() -> None:
    timers = SessionTimers()
    rows = [Session("a", "n1", ttl="10s"), Session("b", "n1"), Session("c", "n1", ttl="30s")]
    timers.sync(rows, now=100.0)
    assert len(timers) == 2  # no TTL, no timer
    assert timers.due(109.9) == [] and timers.due(110.0) == []  # never before TTL
    assert timers.due(120.0) == ["a"]  # at 2 x TTL
    timers.renew(rows[0], now=115.0)  # a renew re-arms from scratch
    assert timers.due(134.9) == [] and timers.due(135.0) == ["a"]
    assert timers.next_deadline() == 135.0
    timers.sync([rows[2]], now=136.0)  # "a" destroyed elsewhere: forgotten
    assert timers.due(1000.0) == ["c"]


def test_new_leader_rearms_every_timer_from_scratch() -> None:
    old, new = SessionTimers(), SessionTimers()
    rows = [Session("a", "n1", ttl="10s")]
    old.sync(rows, now=0.0)
    new.sync(rows, now=15.0)  # the new leader saw it first at 15 s
    assert old.due(20.0) == ["a"] and new.due(20.0) == [] and new.due(35.0) == ["a"]


def test_lock_delay_window_and_cap() -> None:
    delays = LockDelays()
    delays.add("k", 15_000_000_000, now=10.0)
    assert delays.blocked("k", 24.9) and not delays.blocked("k", 25.0)
    delays.add("long", 3600 * 10**9, now=0.0)  # capped at 60 s
    assert delays.blocked("long", 59.0) and not delays.blocked("long", 60.0)
    delays.add("zero", 0, now=0.0)
    assert not delays.blocked("zero", 0.0)
    assert ttl_seconds("") == 0.0 and ttl_seconds("1m") == 60.0


async def test_only_the_leader_expires_sessions_and_a_new_leader_starts_from_scratch(monkeypatch) -> None:
    """Followers never destroy sessions (a renew reaches only the leader's timers); a server that
    becomes leader arms every TTL afresh from that moment."""
    server = CatalogServer("127.0.0.1:8300")
    server.apply_now(RegisterCommand(node=Node(node="n1", address="10.0.0.1")))
    server.apply_now(SessionCreateCommand(id="s1", node="n1", ttl="10s", node_checks=[]))
    now, leader = [100.0], [False]
    monkeypatch.setattr(server.raft, "is_leader", lambda: leader[0])
    driver = SessionDriver(server, clock=lambda: now[0])
    raft = asyncio.create_task(server.run())
    task = asyncio.create_task(driver.run())

    async def settle() -> None:  # the driver wakes at least every LEADER_POLL seconds
        await asyncio.sleep(LEADER_POLL * 2.5)

    try:
        now[0] = 1000.0
        await settle()
        assert server.fsm.sessions.get("s1") is not None, "a follower destroyed a session"
        leader[0] = True
        await settle()  # became leader at 1000: the timer runs from there, not from creation
        now[0] = 1019.0
        await settle()
        assert server.fsm.sessions.get("s1") is not None, "expired before 2 x TTL after the leader change"
        now[0] = 1020.0
        deadline = asyncio.get_running_loop().time() + 5
        while server.fsm.sessions.get("s1") is not None:
            assert asyncio.get_running_loop().time() < deadline, "the leader never expired the session"
            await asyncio.sleep(0.05)
    finally:
        for running in (task, raft):
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await running
