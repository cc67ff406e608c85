"""Named Raft scenarios on the deterministic simulation (invariants run after every delivery)."""

from __future__ import annotations

import pytest

from agent.raft.core import CoreConfig, Role
from agent.raft.errors import ProposalDropped
from agent.raft.messages import Membership
from tests.sim.cluster import TICK_MS, Cluster, NetConfig

ELECTION_MS = CoreConfig().election_ticks * TICK_MS


def elect(c: Cluster) -> str:
    assert c.run_until(lambda: c.leader() is not None, 10 * ELECTION_MS), f"seed={c.seed}: no leader"
    leader = c.leader()
    assert leader is not None
    return leader.id


def write(c: Cluster, n: int, prefix: str, gap_ms: int = 10) -> None:
    for i in range(n):
        c.propose(f"{prefix}-{i}".encode())
        c.run_for(gap_ms)


def settle(c: Cluster) -> None:
    assert c.run_until(c.converged, 20 * ELECTION_MS), f"seed={c.seed}: did not converge"
    c.check_acked_everywhere()


@pytest.mark.parametrize("size", [3, 5])
@pytest.mark.parametrize("seed", [1, 2])
def test_normal_replication(size: int, seed: int) -> None:
    c = Cluster(seed, [f"n{i}" for i in range(size)], NetConfig(duplicate=0.05))
    elect(c)
    write(c, 150, "w", gap_ms=3)
    settle(c)
    assert len(c.acked) == 150
    leader = c.leader()
    assert leader is not None and leader.term == 2  # one election, no disruption
    assert len({tuple(n.fsm) for n in c.nodes.values()}) == 1


def test_proposals_between_readies_share_one_append() -> None:
    c = Cluster(3, ["a", "b", "c"])
    leader_id = elect(c)
    settle(c)
    core = c.nodes[leader_id].core
    assert core is not None
    for i in range(20):
        core.propose(b"batch-%d" % i)
    rd = core.ready()
    appends = [m for m in rd.messages if type(m).__name__ == "AppendEntries"]
    assert len(appends) == 2 and all(len(m.entries) == 20 for m in appends)
    assert len(rd.entries) == 20  # one persist (one fsync) for the whole batch
    c.nodes[leader_id].storage.save(rd.hard_state, rd.entries, rd.snapshot)
    core.advance(rd)


@pytest.mark.parametrize("seed", [3, 4, 5])
def test_leader_crash_and_restart(seed: int) -> None:
    c = Cluster(seed, ["a", "b", "c", "d", "e"], NetConfig(loss=0.02))
    old = elect(c)
    write(c, 50, "before")
    c.crash(old)
    start = c.now
    new = elect(c)
    assert new != old
    assert c.now - start <= 3 * ELECTION_MS
    write(c, 50, "after")
    c.restart(old)
    settle(c)
    assert sum(1 for d in c.acked if d.startswith(b"after")) >= 45


def test_minority_partition_then_rejoin_cannot_depose_the_leader() -> None:
    c = Cluster(6, ["a", "b", "c", "d", "e"])
    leader_id = elect(c)
    settle(c)
    leader = c.leader()
    assert leader is not None
    term = leader.term
    lonely = [sid for sid in c.nodes if sid != leader_id][:2]
    c.partition([sid for sid in c.nodes if sid not in lonely], lonely[:1], lonely[1:])
    write(c, 40, "during")
    c.run_for(10 * ELECTION_MS)  # the isolated nodes time out over and over (pre-vote fails)
    for sid in lonely:
        core = c.nodes[sid].core
        assert core is not None and core.term == term, "pre-vote must keep a cut-off node's term"
    c.heal()
    c.run_for(5 * ELECTION_MS)
    leader = c.leader()
    assert leader is not None and leader.id == leader_id and leader.term == term
    settle(c)


def test_leader_in_minority_steps_down_and_its_lease_ends_first() -> None:
    c = Cluster(7, ["a", "b", "c", "d", "e"])
    old = elect(c)
    write(c, 20, "x")
    settle(c)
    others = [sid for sid in c.nodes if sid != old]
    c.partition([old, others[0]], others[1:])
    old_core = c.nodes[old].core
    assert old_core is not None
    assert old_core.lease_read_index() is not None
    # a client keeps writing into the stale leader: none of these may be acknowledged
    c.propose(b"stale-1", via=old)
    c.run_until(lambda: old_core.lease_read_index() is None, ELECTION_MS)
    assert old_core.lease_read_index() is None
    new_leader = lambda: any(n.core and n.core.is_leader() and n.id != old for n in c.nodes.values())  # noqa: E731
    assert c.run_until(new_leader, 10 * ELECTION_MS)
    write(c, 20, "majority")
    # check-quorum: the old leader gives up within an election timeout of losing its quorum
    assert c.run_until(lambda: not old_core.is_leader(), 2 * ELECTION_MS)
    c.heal()
    settle(c)
    assert b"stale-1" not in c.acked


def test_rejoining_node_with_longer_stale_log_is_truncated() -> None:
    c = Cluster(8, ["a", "b", "c"])
    old = elect(c)
    settle(c)
    c.partition([old], [sid for sid in c.nodes if sid != old])
    for i in range(30):  # appended to the isolated leader's log only
        c.propose(b"lost-%d" % i, via=old)
    c.run_for(4 * ELECTION_MS)
    write(c, 5, "kept")
    old_core = c.nodes[old].core
    new_core = c.leader()
    assert old_core is not None and new_core is not None and new_core.id != old
    assert old_core.log.last_index() > new_core.log.last_index()
    c.heal()
    settle(c)
    assert not any(d.startswith(b"lost") for d in c.acked)
    assert sum(1 for d in c.acked if d.startswith(b"kept")) == 5
    assert all(not d.startswith(b"lost") for d in c.nodes[old].fsm)


def test_figure_8_old_term_entry_is_not_committed_by_counting() -> None:
    """Raft paper figure 8: an entry of an old term replicated on a majority by a later leader
    must not count as committed; a leader with a newer last term may still overwrite it."""
    ids = ["s1", "s2", "s3", "s4", "s5"]
    # the paper's setting: no pre-vote, no check-quorum (they would make forcing elections slow)
    config = CoreConfig(max_batch_bytes=1, election_ticks=30, lease_ticks=10, pre_vote=False, check_quorum=False)
    c = Cluster(9, ids, config=config)
    s = {sid: (lambda sid=sid: c.nodes[sid].core) for sid in ids}

    def force_leader(sid: str) -> None:
        for _ in range(5):  # a campaign can lose to a vote already given in that term: try again
            s[sid]().campaign()
            if c.run_until(lambda: s[sid]().is_leader(), 300):
                return
        raise AssertionError(f"seed={c.seed}: {sid} could not be elected")

    force_leader("s1")
    settle(c)
    # (a) s1 (term 2) replicates X only to s2
    c.partition(["s1", "s2"], ["s3", "s4", "s5"])
    c.propose(b"XX", via="s1")  # two bytes: with max_batch_bytes=1 every message carries one entry
    c.run_for(200)
    index_x = s["s1"]().log.last_index()
    assert s["s2"]().log.last_index() == index_x
    # (b) s1 crashes; s5 wins term 3 with s3, s4 and appends its no-op at the same index, alone
    c.crash("s1")
    force_leader("s5")
    c.partition(["s5"], ["s1", "s2", "s3", "s4"])
    c.run_for(50)
    assert s["s5"]().log.term(index_x) == s["s5"]().term
    c.crash("s5")
    # (c) s1 restarts and wins term 4 with s2, s3; X reaches s3 (a majority holds it) and s1
    # crashes before its own no-op gets there
    c.restart("s1")
    c.partition(["s1", "s2", "s3"], ["s4", "s5"])
    force_leader("s1")
    assert c.run_until(lambda: s["s1"]().progress["s3"].match >= index_x, 1000)
    c.partition(["s1"], ["s2", "s3", "s4", "s5"])
    assert s["s1"]().committed < index_x, "figure 8: an old-term entry must not commit by counting"
    c.crash("s1")
    # (d) s5 (last term 3) is elected by s2... and overwrites X everywhere: legal, X never committed
    c.restart("s5")
    c.partition(["s2", "s3", "s4", "s5"], ["s1"])
    force_leader("s5")
    settle(c)
    assert s["s3"]().log.term(index_x) != 2
    c.restart("s1")
    c.heal()
    settle(c)
    assert b"XX" not in c.nodes["s2"].fsm


def test_membership_add_learner_promote_and_remove() -> None:
    c = Cluster(10, ["a", "b", "c"], NetConfig(loss=0.01))
    leader_id = elect(c)
    write(c, 40, "w")
    c.add_node("d")
    leader = c.leader()
    assert leader is not None
    leader.add_learner("d")
    c.nodes[leader.id].core and c._drive(c.nodes[leader.id])
    assert c.run_until(lambda: c.nodes["d"].fsm_index >= leader.committed > 0, 5 * ELECTION_MS)
    assert not c.nodes["d"].core.promotable()  # type: ignore[union-attr]
    assert c.run_until(lambda: leader.committed >= leader.pending_conf_index, ELECTION_MS)
    # promote needs the leader to have seen d catch up (the agent's reconcile loop retries it)
    assert c.run_until(lambda: leader.progress["d"].match >= leader.committed, ELECTION_MS)
    leader.promote("d")
    c._drive(c.nodes[leader.id])
    write(c, 20, "x")
    assert c.nodes["d"].core.promotable()  # type: ignore[union-attr]
    follower = next(sid for sid in ["a", "b", "c"] if sid != leader_id)
    assert c.run_until(lambda: leader.committed >= leader.pending_conf_index, ELECTION_MS)
    leader.remove_server(follower)
    c._drive(c.nodes[leader.id])
    write(c, 20, "y")
    assert c.run_until(lambda: leader.committed >= leader.pending_conf_index, ELECTION_MS)
    leader.remove_server(leader_id)  # the leader removes itself and hands over
    c._drive(c.nodes[leader.id])
    assert c.run_until(lambda: (l2 := c.leader()) is not None and l2.id != leader_id, 5 * ELECTION_MS)
    write(c, 20, "z")
    c.crash(follower)
    c.crash(leader_id)
    settle(c)
    final = c.leader()
    assert final is not None and final.membership == Membership.of(
        {"a", "b", "c", "d"} - {follower, leader_id})
    assert sum(1 for d in c.acked if d.startswith(b"z")) >= 18


def test_leadership_transfer() -> None:
    c = Cluster(11, ["a", "b", "c"])
    old = elect(c)
    write(c, 30, "w")
    settle(c)
    leader = c.leader()
    assert leader is not None
    target = next(sid for sid in c.nodes if sid != old)
    term = leader.term
    leader.transfer_leadership(target)
    with pytest.raises(ProposalDropped):
        leader.propose(b"during-transfer")
    assert leader.lease_read_index() is None
    c._drive(c.nodes[old])
    assert c.run_until(lambda: (l2 := c.leader()) is not None and l2.id == target, ELECTION_MS // 2)
    new = c.leader()
    assert new is not None and new.term == term + 1
    write(c, 20, "after")
    settle(c)


def test_snapshot_catch_up() -> None:
    c = Cluster(12, ["a", "b", "c"], snapshot_every=25, trailing=5)
    leader_id = elect(c)
    lagging = next(sid for sid in c.nodes if sid != leader_id)
    c.crash(lagging)
    write(c, 120, "w", gap_ms=5)
    leader = c.leader()
    assert leader is not None and leader.log.snap_index > 0
    c.restart(lagging)
    settle(c)
    node = c.nodes[lagging]
    assert node.storage.snap is not None and node.storage.snap.index >= leader.log.snap_index - 30
    assert node.fsm == c.nodes[leader_id].fsm


def test_consistent_reads_via_follower_and_leader() -> None:
    c = Cluster(13, ["a", "b", "c"], NetConfig(loss=0.02, duplicate=0.05))
    leader_id = elect(c)
    follower = next(sid for sid in c.nodes if sid != leader_id)
    contexts = []
    for i in range(30):
        c.propose(b"r-%d" % i)
        for via in (leader_id, follower):
            ctx = c.read(via)
            if ctx is not None:
                contexts.append(ctx)
        c.run_for(15)
    settle(c)
    c.run_for(ELECTION_MS)
    assert len(c.reads) >= len(contexts) * 0.8  # a few are lost with their messages; none are stale
    leader = c.leader()
    assert leader is not None and leader.role is Role.LEADER
