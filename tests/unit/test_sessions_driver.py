"""Session TTL timers and lock-delay on a fake clock (no sleeps)."""

from __future__ import annotations

from agent.catalog.sessions import Session
from agent.sessions_driver import LockDelays, SessionTimers, ttl_seconds


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
