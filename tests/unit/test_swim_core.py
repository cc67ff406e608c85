"""The Swim core's driver contract, packet by packet (no network): what each call returns."""

from __future__ import annotations

import random

from agent.gossip.messages import (
    Ack,
    Alive,
    Compound,
    Dead,
    IndirectPing,
    MemberState,
    Nack,
    Ping,
    PushPull,
    Suspect,
    decode,
    encode,
)
from agent.gossip.swim import Swim, SwimConfig

ME = "10.0.0.1:8301"
PEER = "10.0.0.2:8301"


def core(name: str = "a", host: str = "10.0.0.1", config: SwimConfig | None = None) -> Swim:
    return Swim(name, host, 8301, {"role": "node"}, config or SwimConfig.lan(), random.Random(1), 100.0)


def parts(payload: bytes) -> list[object]:
    msg = decode(payload)
    return [decode(p) for p in msg.parts] if isinstance(msg, Compound) else [msg]


def with_peer(swim: Swim, now: float = 100.0) -> None:
    swim.receive(encode(Alive("b", "10.0.0.2", 8301, 1, {"role": "consul"})), PEER, now)


def run_until(swim: Swim, t_end: float) -> list:
    outs: list = []
    while swim.next_deadline() <= t_end:
        outs.extend(swim.tick(swim.next_deadline()))
    return outs


def test_new_core_knows_itself_and_reports_its_own_join() -> None:
    swim = core()
    [me] = swim.members()
    assert (me.name, me.state, me.address, me.port, me.incarnation) == ("a", MemberState.ALIVE, "10.0.0.1", 8301, 1)
    assert [(e.kind, e.member.name) for e in swim.take_events()] == [("join", "a")]
    assert swim.take_events() == []
    assert swim.next_deadline() > 100.0


def test_join_sends_push_pull_requests_that_expect_a_reply() -> None:
    swim = core()
    outs = swim.join(["10.0.0.2:8301", "[::1]:8301"], 100.0)
    assert [o.address for o in outs] == ["10.0.0.2:8301", "[::1]:8301"]
    assert all(o.stream and o.expect_reply and not o.reply for o in outs)
    msg = decode(outs[0].payload)
    assert isinstance(msg, PushPull) and msg.join and not msg.reply and [s.name for s in msg.states] == ["a"]


def test_push_pull_request_over_stream_is_answered_on_the_same_connection() -> None:
    swim = core()
    request = PushPull(True, False, ())
    outs = swim.receive(encode(request), "10.0.0.9:51234", 100.0, stream=True)
    assert len(outs) == 1 and outs[0].reply and outs[0].stream and outs[0].address == ""
    reply = decode(outs[0].payload)
    assert isinstance(reply, PushPull) and reply.reply


def test_ping_is_acked_to_the_senders_gossip_address() -> None:
    swim = core()
    outs = swim.receive(encode(Ping(7, "a", "b", PEER)), "10.0.0.2:40000", 100.0)
    assert [o.address for o in outs] == [PEER]
    assert parts(outs[0].payload)[0] == Ack(7, "a")
    assert swim.receive(encode(Ping(8, "someone-else", "b", PEER)), PEER, 100.0) == []
    assert swim.stats["misdirected"] == 1


def test_probe_then_indirect_then_suspect() -> None:
    swim = core(config=SwimConfig(indirect_checks=1))
    with_peer(swim)
    swim.receive(encode(Alive("c", "10.0.0.3", 8301, 1, {})), PEER, 100.0)
    pings: list = []
    while not pings:
        t0 = swim.next_deadline()
        pings = [o for o in swim.tick(t0) if isinstance(parts(o.payload)[0], Ping)]
    ping = parts(pings[0].payload)[0]
    assert isinstance(ping, Ping)
    target = ping.target
    relay = "c" if target == "b" else "b"
    outs = run_until(swim, t0 + 0.5)                             # probe_timeout: indirect via the other member
    indirect = [p for o in outs for p in parts(o.payload) if isinstance(p, IndirectPing)]
    assert [i.target for i in indirect] == [target]
    swim.receive(encode(Nack(ping.seq, relay)), PEER, t0 + 0.6)
    run_until(swim, t0 + 1.0)                                    # end of the round: no ack → suspect
    assert swim.member(target).state == MemberState.SUSPECT      # type: ignore[union-attr]
    assert swim.health_score == 0                                # the relay answered (nack): not our fault


def test_ack_clears_the_probe_and_lowers_nothing_below_zero() -> None:
    swim = core()
    with_peer(swim)
    outs: list = []
    t = 100.0
    while not outs:
        t = swim.next_deadline()
        outs = [o for o in swim.tick(t) if isinstance(parts(o.payload)[0], Ping)]
    ping = parts(outs[0].payload)[0]
    swim.receive(encode(Ack(ping.seq, "b")), PEER, t + 0.01)       # type: ignore[union-attr]
    assert swim.stats["acks"] == 1 and swim.health_score == 0
    swim.tick(t + 1.5)
    assert swim.member("b").state == MemberState.ALIVE           # type: ignore[union-attr]


def test_suspected_member_refutes_with_higher_incarnation() -> None:
    swim = core()
    with_peer(swim)
    swim.receive(encode(Suspect("a", 1, "b")), PEER, 101.0)
    assert swim.member("a").incarnation == 2                     # type: ignore[union-attr]
    assert swim.stats["refutes"] == 1 and swim.health_score == 1
    swim.receive(encode(Dead("a", 5, "b")), PEER, 101.0)
    assert swim.member("a").incarnation == 6                     # type: ignore[union-attr]
    assert swim.member("a").state == MemberState.ALIVE           # type: ignore[union-attr]


def test_events_join_update_failed_leave_reap() -> None:
    swim = core(config=SwimConfig(tombstone_timeout=10.0))
    swim.take_events()
    with_peer(swim)
    swim.receive(encode(Alive("b", "10.0.0.2", 8301, 2, {"role": "node"})), PEER, 101.0)
    swim.receive(encode(Dead("b", 2, "c")), PEER, 102.0)
    swim.receive(encode(Alive("b", "10.0.0.2", 8301, 3, {"role": "node"})), PEER, 103.0)
    swim.receive(encode(Dead("b", 3, "b", True)), PEER, 104.0)
    swim.tick(114.5)
    assert [e.kind for e in swim.take_events()] == ["join", "update", "failed", "join", "leave", "reap"]
    assert swim.member("b") is None


def test_leave_when_alone_is_done_at_once_and_stops_probing() -> None:
    swim = core()
    swim.leave(100.0)
    assert swim.member("a").state == MemberState.LEFT            # type: ignore[union-attr]
    assert swim.left_broadcast_done()
    assert swim.leave(100.0) == []


def test_leave_broadcast_finishes_after_retransmit_limit() -> None:
    swim = core()
    with_peer(swim)
    outs = swim.leave(100.0)
    assert any(isinstance(p, Dead) and p.left for o in outs for p in parts(o.payload))
    assert not swim.left_broadcast_done()
    t = 100.0
    for _ in range(20):
        t = max(t, swim.next_deadline())
        swim.tick(t)
    assert swim.left_broadcast_done()
    outs = swim.receive(encode(Ping(3, "a", "b", PEER)), PEER, t)  # still answers pings
    assert outs and parts(outs[0].payload)[0] == Ack(3, "a")


def test_conflicting_address_is_ignored_while_alive() -> None:
    swim = core()
    with_peer(swim)
    swim.receive(encode(Alive("b", "10.9.9.9", 8301, 5, {})), PEER, 101.0)
    assert swim.member("b").address == "10.0.0.2" and swim.stats["conflicts"] == 1  # type: ignore[union-attr]


def test_ping_to_a_suspect_carries_the_suspicion() -> None:
    swim = core()
    with_peer(swim)
    swim.receive(encode(Suspect("b", 1, "c")), PEER, 100.0)
    assert swim.member("b").state == MemberState.SUSPECT        # type: ignore[union-attr]
    pings: list = []
    while not pings:
        pings = [o for o in swim.tick(swim.next_deadline()) if isinstance(parts(o.payload)[0], Ping)]
    assert Suspect("b", 1, "a") in parts(pings[0].payload)


def test_stale_accusation_is_answered_with_our_current_alive() -> None:
    swim = core()
    with_peer(swim)
    swim.receive(encode(Suspect("a", 1, "b")), PEER, 101.0)       # refuted: now incarnation 2
    outs = swim.receive(encode(Dead("a", 1, "b")), PEER, 102.0)    # b missed the refutation
    assert [o.address for o in outs] == [PEER]
    assert Alive("a", "10.0.0.1", 8301, 2, {"role": "node"}) in parts(outs[0].payload)
