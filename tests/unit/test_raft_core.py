"""RaftCore and its pieces (log, progress) driven by hand: no network, no clock."""

from __future__ import annotations

import random

import pytest

from agent.raft.core import CoreConfig, RaftCore, Role
from agent.raft.errors import ConfigChangeRejected, NotLeader, TransferRejected
from agent.raft.memstore import MemoryStorage
from agent.raft.messages import (
    AppendEntries,
    AppendResp,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResp,
    LogEntry,
    Membership,
    RequestVote,
    VoteResp,
)
from agent.raft.progress import Progress, State
from agent.raft.raftlog import LogInvariantError, RaftLog


def persist(core: RaftCore, storage: MemoryStorage) -> list:
    msgs = []
    while core.has_ready():
        rd = core.ready()
        storage.save(rd.hard_state, rd.entries, rd.snapshot)
        msgs.extend(rd.messages)
        core.advance(rd)
    return msgs


def make(sid: str = "a", voters: str = "abc", **cfg: object) -> tuple[RaftCore, MemoryStorage]:
    storage = MemoryStorage()
    core = RaftCore(sid, storage, random.Random(1), CoreConfig(**cfg), bootstrap=Membership.of(voters))  # type: ignore[arg-type]
    persist(core, storage)
    return core, storage


def make_leader() -> tuple[RaftCore, MemoryStorage]:
    core, storage = make(pre_vote=False)
    core.campaign()
    persist(core, storage)
    core.step(VoteResp(core.term, "b", "a", True))
    assert core.is_leader()
    return core, storage


def test_config_rejects_a_lease_not_below_the_election_timeout() -> None:
    with pytest.raises(ValueError):
        CoreConfig(election_ticks=10, lease_ticks=10)


def test_single_voter_elects_itself_and_commits_on_persist() -> None:
    core, storage = make(voters="a")
    for _ in range(25):
        core.tick()
    persist(core, storage)
    assert core.is_leader()
    index = core.propose(b"x")
    persist(core, storage)
    assert core.committed == index == core.applied
    assert core.lease_read_index() == index


def test_pre_vote_does_not_raise_the_term_and_a_follower_in_lease_ignores_it() -> None:
    core, storage = make("b")
    core.step(Heartbeat(1, "a", "b", 0))
    persist(core, storage)
    core.step(RequestVote(5, "c", "b", 9, 4, pre_vote=True))
    assert persist(core, storage) == [] and core.term == 1  # in lease: ignored entirely
    for _ in range(10):
        core.tick()
    core.step(RequestVote(2, "c", "b", 9, 4, pre_vote=True))
    [resp] = persist(core, storage)
    assert isinstance(resp, VoteResp) and resp.granted and resp.pre_vote and core.term == 1 and core.vote == ""


def test_check_quorum_makes_a_cut_off_leader_step_down() -> None:
    core, storage = make_leader()
    for _ in range(2 * core.config.election_ticks):
        core.tick()
    persist(core, storage)
    assert core.role is Role.FOLLOWER


def test_figure_8_rule_old_term_entries_commit_only_with_a_current_term_entry() -> None:
    storage = MemoryStorage()
    storage.save(HardState(3, "", 1), [LogEntry(1, 1, EntryKind.CONFIG, Membership.of("abc").encode()),
                                       LogEntry(2, 2, EntryKind.COMMAND, b"old")], None)
    core = RaftCore("a", storage, random.Random(2), CoreConfig(pre_vote=False))
    core.campaign()
    persist(core, storage)
    core.step(VoteResp(core.term, "b", "a", True))
    persist(core, storage)
    assert core.is_leader() and core.log.last_index() == 3  # the no-op of term 4
    core.step(AppendResp(core.term, "b", "a", 2))  # b holds the old entry: a majority has it
    persist(core, storage)
    assert core.committed == 1
    core.step(AppendResp(core.term, "b", "a", 3))
    persist(core, storage)
    assert core.committed == 3


def test_conflict_hint_skips_a_whole_term_in_one_round_trip() -> None:
    core, storage = make_leader()
    for i in range(30):
        core.propose(b"%d" % i)
    persist(core, storage)
    last = core.log.last_index()
    # c rejects prev=last, its log holds 20 entries of an old term 1 from index 2 on
    core.progress["c"].next = last + 1
    core.step(AppendResp(core.term, "c", "a", last, reject=True, conflict_index=2, conflict_term=1))
    msgs = [m for m in persist(core, storage) if isinstance(m, AppendEntries) and m.dst == "c"]
    assert msgs and msgs[-1].prev_index == 1  # straight past the conflicting term


def test_inflight_window_limits_pipelining() -> None:
    pr = Progress(1, max_inflight=2)
    pr.become_replicate()
    pr.sent(5, 5)
    pr.sent(9, 4)
    assert pr.is_paused()
    pr.maybe_update(5)
    assert not pr.is_paused() and pr.next == 10
    assert not pr.maybe_decrease(4, 1)  # stale rejection ignored
    assert pr.maybe_decrease(9, 6) and pr.next == 6
    pr.become_snapshot(50)
    assert pr.is_paused() and pr.state is State.SNAPSHOT


def test_refusals_are_exception_classes() -> None:
    follower, _ = make("b")
    with pytest.raises(NotLeader):
        follower.propose(b"x")
    leader, _ = make_leader()
    with pytest.raises(ConfigChangeRejected):  # this term's no-op is not committed yet
        leader.add_learner("d")
    with pytest.raises(TransferRejected):
        leader.transfer_leadership("zz")
    with pytest.raises(ConfigChangeRejected):
        leader.promote("b")


def test_raftlog_append_truncates_conflicts_but_never_committed() -> None:
    log = RaftLog(entries=[LogEntry(i, 1) for i in range(1, 6)], committed=2)
    log.append([LogEntry(4, 2), LogEntry(5, 2), LogEntry(6, 2)])
    assert [e.term for e in log.entries] == [1, 1, 1, 2, 2, 2]
    with pytest.raises(LogInvariantError):
        log.append([LogEntry(2, 3)])
    log.applied = 4
    log.compact(3)
    assert log.first_index() == 4 and log.term(3) == 1 and log.term(2) is None
    assert log.first_index_of_term(6) == 4 and log.last_index_of_term(1) == 0


def test_reads_queued_in_one_cycle_share_one_heartbeat_round() -> None:
    """Every read_index asked between two ready() calls rides one quorum round (the newest
    context); one answer from a quorum releases them all, in order."""
    core, storage = make_leader()
    persist(core, storage)
    core.step(AppendResp(core.term, "b", "a", core.log.last_index()))  # the no-op commits
    persist(core, storage)
    for i in range(5):
        core.read_index(f"r{i}".encode())
    beats = [m for m in persist(core, storage) if isinstance(m, Heartbeat)]
    assert sorted(m.dst for m in beats) == ["b", "c"] and {m.context for m in beats} == {b"r4"}
    core.step(HeartbeatResp(core.term, "c", "a", b"r4", beats[0].tick))
    rd = core.ready()
    assert [rs.context for rs in rd.read_states] == [f"r{i}".encode() for i in range(5)]
    assert {rs.index for rs in rd.read_states} == {core.committed}


def test_a_commit_travels_lazily_except_to_the_follower_that_forwarded_the_entry() -> None:
    """No commit-only AppendEntries to every follower after each commit (they learn it with the
    next append, or a heartbeat a moment later); the follower waiting on a forwarded entry is
    told at once."""
    core, storage = make_leader()
    persist(core, storage)
    core.step(AppendResp(core.term, "b", "a", core.log.last_index()))  # the no-op commits
    core.step(AppendResp(core.term, "c", "a", core.log.last_index()))
    persist(core, storage)
    mine = core.propose(b"x")
    forwarded = core.propose(b"y", origin="c")
    appends = [m for m in persist(core, storage) if isinstance(m, AppendEntries)]
    assert {m.dst for m in appends} == {"b", "c"}
    core.step(AppendResp(core.term, "b", "a", mine))
    after_mine = persist(core, storage)
    assert core.committed == mine and not [m for m in after_mine if isinstance(m, AppendEntries)]
    core.step(AppendResp(core.term, "b", "a", forwarded))
    told = [m for m in persist(core, storage) if isinstance(m, AppendEntries)]
    assert core.committed == forwarded
    assert [(m.dst, m.commit) for m in told] == [("c", forwarded)]
    assert core.commit_unannounced()  # b holds both entries but was not told they committed
    core.announce_commit()  # the driver's timer, when no AppendEntries carried the commit
    beats = [m for m in persist(core, storage) if isinstance(m, Heartbeat)]
    assert [(m.dst, m.commit) for m in beats] == [("b", forwarded)]
    assert not core.commit_unannounced()
