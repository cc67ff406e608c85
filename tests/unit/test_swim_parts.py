"""The SWIM core's pure parts: broadcast queue, Lifeguard timeouts/awareness, config presets."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

from agent.gossip.broadcast import PART_OVERHEAD, BroadcastQueue, retransmit_limit
from agent.gossip.suspicion import Awareness, Suspicion, lifeguard_timeout, suspicion_timeout
from agent.gossip.swim import SwimConfig


def test_queue_replaces_older_broadcast_about_same_member() -> None:
    q = BroadcastQueue(1000)
    q.queue("a", b"old")
    q.queue("a", b"new")
    assert len(q) == 1
    assert q.take(1000, 5) == [b"new"]


def test_queue_least_transmitted_first_then_newest() -> None:
    q = BroadcastQueue(1000)
    q.queue("a", b"A")
    q.queue("b", b"B")
    assert q.take(1 + PART_OVERHEAD, 5) == [b"B"]          # newest first
    q.queue("c", b"C")
    assert q.take(2 * (1 + PART_OVERHEAD), 5) == [b"C", b"A"]   # fresh ones before re-sends


def test_queue_retransmit_limit_and_budget() -> None:
    q = BroadcastQueue(1000)
    q.queue("a", b"x" * 10)
    q.queue("b", b"y" * 10)
    assert q.take(13, 3) == [b"y" * 10]                     # only one fits
    for _ in range(10):
        q.take(1000, 3)
    assert len(q) == 0
    q.queue("big", b"z" * 2000)
    assert q.take(5000, 3) == []
    assert "big" in q
    assert [q.take_oversized(3) for _ in range(4)] == [[b"z" * 2000]] * 3 + [[]]
    assert len(q) == 0


def test_a_members_own_alive_is_not_spent_on_it_but_an_accusation_is() -> None:
    q = BroadcastQueue(1000)
    q.queue("a", b"alive a", for_subject=False)
    q.queue("b", b"suspect b")
    assert q.take(1000, 2, recipient="a") == [b"suspect b"]       # a's own Alive is no news to a
    assert q.take(1000, 2, recipient="b") == [b"alive a", b"suspect b"]   # b must hear it is suspected
    assert q.take(1000, 2, recipient="c") == [b"alive a"]         # b's accusation spent both transmits
    assert len(q) == 0
    q.queue("a", b"alive a", for_subject=False)
    q.queue("a", b"dead a")                                        # replaced: the accusation goes to a
    assert q.take(1000, 2, recipient="a") == [b"dead a"]


def test_suspicion_timeout_formula() -> None:
    assert suspicion_timeout(4, 1, 1.0) == 4.0
    assert suspicion_timeout(4, 5, 1.0) == 4.0                   # log10 floored at 1
    assert suspicion_timeout(4, 1000, 1.0) == pytest.approx(12.0)
    assert lifeguard_timeout(0, 3, 2.0, 12.0) == 12.0
    assert lifeguard_timeout(3, 3, 2.0, 12.0) == 2.0
    assert lifeguard_timeout(1, 3, 2.0, 12.0) == pytest.approx(12 - 10 * math.log(2) / math.log(4))
    assert lifeguard_timeout(0, 0, 2.0, 12.0) == 2.0


def test_suspicion_confirmations_shrink_deadline_once_per_source() -> None:
    s = Suspicion("a", 1, 100.0, 2, 5.0, 30.0)
    assert s.deadline == 130.0
    assert not s.confirm("a")
    assert s.confirm("b")
    first = s.deadline
    assert 105.0 < first < 130.0
    assert not s.confirm("b")
    assert s.confirm("c")
    assert s.deadline == 105.0
    assert not s.confirm("d")                                  # k reached


def test_awareness_is_clamped() -> None:
    a = Awareness(8)
    a.apply(-3)
    assert a.score == 0
    a.apply(20)
    assert a.score == 7
    assert a.scale(0.5) == 4.0


def test_presets() -> None:
    lan, local = SwimConfig.lan(), SwimConfig.local()
    assert (lan.probe_interval, lan.probe_timeout, lan.gossip_interval, lan.suspicion_mult) == (1.0, 0.5, 0.2, 4)
    assert (local.probe_timeout, local.gossip_interval, local.indirect_checks, local.retransmit_mult) == (
        0.2, 0.1, 1, 2)
    section = SimpleNamespace(gossip_nodes=4, gossip_interval=0.1, probe_interval=0.1, probe_timeout=0.1,
                              retransmit_mult=3, suspicion_mult=3)
    cfg = SwimConfig.from_gossip_config(section, 10.0)
    assert (cfg.gossip_nodes, cfg.probe_interval, cfg.suspicion_mult, cfg.reconnect_timeout) == (4, 0.1, 3, 10.0)
    assert cfg.push_pull_interval == lan.push_pull_interval


def test_retransmit_limit() -> None:
    # memberlist's log10 factor, floored at 2 so that clusters under 10 members spread as well as larger ones
    assert [retransmit_limit(4, n) for n in (1, 9, 10, 99, 100, 1000)] == [8, 8, 8, 8, 12, 16]
