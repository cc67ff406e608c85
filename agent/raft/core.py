"""RaftCore: the pure Raft state machine, driven by tick/step/propose and drained by ready/advance
(layer 1; modelled on etcd-io/raft's RawNode, names from hashicorp/raft).

Contract:
- The core never sends, sleeps, reads a clock or touches a disk. Time is `tick()` (one heartbeat
  interval each); randomness is the injected `random.Random`; input is `step(msg)`,
  `propose(data)`, membership and transfer requests, `read_index(context)`.
- `ready()` returns a `Ready`: the hard state and entries (and a received snapshot) to persist,
  messages to send, committed entries to apply, read states that became valid. The driver must
  persist (fsync) everything in it BEFORE sending its messages, then apply the committed entries
  in order, then call `advance(ready)`. Nothing else may be called between `ready()` and
  `advance()`. A persisted entry list may start below the stored last index: cut the stored log
  there first (a follower's conflicting suffix). Proposals made since the last `ready()` go out as
  one AppendEntries per follower in the next `ready()` — never waiting for a tick. A new commit
  index rides the next AppendEntries; when `commit_unannounced()` the driver calls
  `announce_commit()` a moment later (heartbeats to the followers not yet told). A follower that
  forwarded a now-committed entry (`propose(data, origin)`) is told at once.
- Role behaviour is the bound `_step` (`_step_follower`, `_step_candidate`, `_step_leader`).
  Elections use pre-vote and check-quorum (config), so a node that was partitioned away or
  restarted cannot depose a leader that still hears from a quorum.
- Membership (`add_learner`, `promote`, `remove_server`) changes one server at a time with a
  CONFIG entry carrying the whole new membership; it takes effect when appended (Raft thesis
  §4.1); a new change waits until the previous one and an entry of the leader's term committed.
- Reads: `read_index(ctx)` yields `ReadState(ctx, index)` after a quorum heartbeat round (any
  server may ask; followers forward to the leader); every request queued since the last `ready()`
  shares one round, carrying the newest context; `lease_read_index()` answers at once on a
  leader whose quorum acknowledged a heartbeat sent less than `lease_ticks` ago.
- Snapshots: the driver saves `snapshot_at(index, data)` and calls `compact(index)`; a follower
  whose next entry is compacted is sent `storage.snapshot()`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from agent.raft.errors import NotLeader
from agent.raft.leader import LeaderMixin, Role
from agent.raft.messages import (
    AppendEntries,
    AppendResp,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    InstallSnapshotResp,
    LogEntry,
    Membership,
    Message,
    ReadIndex,
    ReadIndexResp,
    RequestVote,
    Snapshot,
    TimeoutNow,
    VoteResp,
)
from agent.raft.progress import Progress
from agent.raft.raftlog import RaftLog
from agent.raft.readonly import ReadOnly, ReadState


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Timing is in ticks; the driver picks the tick length (one heartbeat interval)."""

    heartbeat_ticks: int = 1       # leader heartbeats every tick
    election_ticks: int = 10       # follower timeout is random in [election, 2·election) ticks
    lease_ticks: int = 5           # leader lease; must stay below election_ticks (hashicorp: ½)
    max_inflight: int = 256        # unacknowledged AppendEntries per follower (pipelining window)
    max_batch_bytes: int = 1 << 20  # payload bytes per AppendEntries (at least one entry)
    pre_vote: bool = True
    check_quorum: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_ticks < self.election_ticks:
            raise ValueError("heartbeat_ticks must be positive and below election_ticks")
        if not 0 < self.lease_ticks < self.election_ticks:
            raise ValueError("lease_ticks must be positive and below election_ticks")
        if self.max_inflight < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_inflight and max_batch_bytes must be positive")


class Storage(Protocol):
    """What the core reads from durable storage (the driver writes it from `Ready`)."""

    def initial_state(self) -> tuple[HardState, Snapshot | None, list[LogEntry]]: ...
    def snapshot(self) -> Snapshot | None: ...


@dataclass(frozen=True, slots=True)
class SoftState:
    leader: str
    role: Role


@dataclass(slots=True)
class Ready:
    hard_state: HardState | None
    entries: list[LogEntry]
    snapshot: Snapshot | None
    messages: list[Message]
    committed: list[LogEntry]
    read_states: list[ReadState]
    soft_state: SoftState | None

    @property
    def must_sync(self) -> bool:
        return bool(self.entries or self.snapshot or self.hard_state)


class RaftCore(LeaderMixin):
    def __init__(self, server_id: str, storage: Storage, rng: random.Random,
                 config: CoreConfig | None = None, bootstrap: Membership | None = None) -> None:
        self.id = server_id
        self.config = config or CoreConfig()
        self.storage = storage
        self.rng = rng
        hard, snap, entries = storage.initial_state()
        fresh = hard == HardState() and snap is None and not entries
        if fresh and bootstrap is not None:  # every bootstrap server writes the same entry 1
            hard = HardState(1, "", 0)
            entries = [LogEntry(1, 1, EntryKind.CONFIG, bootstrap.encode())]
        self.log = RaftLog(snap, entries, hard.commit)
        if fresh and bootstrap is not None:
            self.log.stabled = 0
        self.term, self.vote = hard.term, hard.vote
        self._persisted = HardState(hard.term, hard.vote, hard.commit) if not fresh else HardState()
        self.leader = ""
        self.role = Role.FOLLOWER
        self._soft = SoftState("", Role.FOLLOWER)
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.progress: dict[str, Progress] = {}
        self.readonly = ReadOnly()
        self.votes: dict[str, bool] = {}
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.config.election_ticks
        self.tick_count = 0
        self.transferee = ""
        self.pending_conf_index = 0
        self._bcast_pending = False
        self._read_round_pending = False
        self.commit_watchers: dict[int, str] = {}  # leader: entry index → follower that forwarded it
        self._received_snapshot: Snapshot | None = None
        self._config_key = (-1, -1)
        self.membership = Membership()
        self._step: Callable[[Message], None] = self._step_follower
        self._refresh_membership()
        self._become_follower(self.term, "")

    # --- public state ---
    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def is_leader(self) -> bool:
        return self.role is Role.LEADER

    def promotable(self) -> bool:
        return self.membership.is_voter(self.id)

    def snapshot_at(self, index: int, data: bytes) -> Snapshot:
        """The snapshot record for state-machine `data` taken at applied `index`."""
        term = self.log.term(index)
        if term is None or index > self.log.applied:
            raise ValueError(f"no applied entry at {index} to snapshot")
        return Snapshot(index, term, self.log.membership_at(index), data)

    def compact(self, index: int) -> None:
        self.log.compact(index)

    # --- input ---
    def tick(self) -> None:
        self.tick_count += 1
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self._campaign(pre_vote=self.config.pre_vote)

    def campaign(self) -> None:
        """Start an election now (tests and `-bootstrap` use it; pre-vote still applies)."""
        self._campaign(pre_vote=self.config.pre_vote)

    def step(self, m: Message) -> None:
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = self.config.check_quorum and self.leader != "" and \
                    self.election_elapsed < self.config.election_ticks
                if in_lease and not m.transfer:
                    return  # we hear from a live leader: ignore the disruptor
            if (isinstance(m, RequestVote) and m.pre_vote) or (isinstance(m, VoteResp) and m.pre_vote and m.granted):
                pass  # pre-votes change no one's term
            else:
                is_leader_msg = isinstance(m, AppendEntries | Heartbeat | InstallSnapshot)
                self._become_follower(m.term, m.src if is_leader_msg else "")
        elif m.term < self.term:
            if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
                self._send(AppendResp(self.term, self.id, m.src, 0))  # tell a stale leader our term
            elif isinstance(m, RequestVote) and m.pre_vote:
                self._send(VoteResp(self.term, self.id, m.src, False, pre_vote=True))
            return
        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
            return
        self._step(m)

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; a `ReadState(context, index)` follows in a Ready."""
        if self.role is Role.LEADER:
            self._leader_read_index(context, self.id)
        elif self.role is Role.FOLLOWER and self.leader:
            self._send(ReadIndex(self.term, self.id, self.leader, context))
        else:
            raise NotLeader(self.leader)

    # --- ready / advance ---
    def has_ready(self) -> bool:
        # field by field, without building HardState/SoftState: the driver asks twice per cycle
        log, hard, soft = self.log, self._persisted, self._soft
        return bool(self.msgs or self._bcast_pending or self._read_round_pending or self.read_states
                    or self._received_snapshot or log.stabled < log.last_index()
                    or log.has_to_apply()
                    or self.term != hard.term or self.vote != hard.vote or log.committed != hard.commit
                    or self.leader != soft.leader or self.role is not soft.role)

    def ready(self) -> Ready:
        if self._bcast_pending:
            self._bcast_pending = False
            if self.role is Role.LEADER:
                self._bcast_append()
        if self._read_round_pending:
            self._read_round_pending = False
            if self.role is Role.LEADER and self.readonly.queue:
                self._bcast_heartbeat(self.readonly.last_context())
        hard = self._hard_state()
        soft = SoftState(self.leader, self.role)
        rd = Ready(hard_state=hard if hard != self._persisted else None, entries=self.log.unstable(),
                   snapshot=self._received_snapshot, messages=self.msgs, committed=self.log.to_apply(),
                   read_states=self.read_states, soft_state=soft if soft != self._soft else None)
        self.msgs, self.read_states = [], []
        return rd

    def advance(self, rd: Ready) -> None:
        if rd.hard_state is not None:
            self._persisted = rd.hard_state
        if rd.soft_state is not None:
            self._soft = rd.soft_state
        if rd.snapshot is not None and rd.snapshot is self._received_snapshot:
            self._received_snapshot = None
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed:
            self.log.applied_to(rd.committed[-1].index)
        if self.role is Role.LEADER:
            self.progress[self.id].maybe_update(self.log.stabled)
            self._maybe_commit()

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    # --- roles ---
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term, self.vote = term, ""
        self.leader = ""
        self.election_elapsed = self.heartbeat_elapsed = 0
        self.randomized_timeout = self.config.election_ticks + self.rng.randrange(self.config.election_ticks)
        self.votes = {}
        self.transferee = ""
        self.readonly.clear()
        self.progress = {}
        self.commit_watchers.clear()

    def _become_follower(self, term: int, leader: str) -> None:
        self._reset(term)
        self.leader = leader
        self.role = Role.FOLLOWER
        self._step = self._step_follower

    def _campaign(self, pre_vote: bool, transfer: bool = False) -> None:
        if not self.promotable():
            return
        if pre_vote:
            self._reset(self.term)
            self.role, self._step = Role.PRE_CANDIDATE, self._step_candidate
            vote_term = self.term + 1
        else:
            self._reset(self.term + 1)
            self.vote = self.id
            self.role, self._step = Role.CANDIDATE, self._step_candidate
            vote_term = self.term
        self.votes = {self.id: True}
        if self._has_quorum({self.id}):
            self._won_votes()
            return
        for peer in self.membership.voters:
            if peer != self.id:
                self._send(RequestVote(vote_term, self.id, peer, self.log.last_index(), self.log.last_term(),
                                       pre_vote=pre_vote, transfer=transfer))

    def _won_votes(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._campaign(pre_vote=False)
        else:
            self._become_leader()

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = self.vote == m.src or (self.vote == "" and self.leader == "") or \
            (m.pre_vote and m.term > self.term)
        if can_vote and self.log.is_up_to_date(m.last_index, m.last_term):
            self._send(VoteResp(m.term if m.pre_vote else self.term, self.id, m.src, True, pre_vote=m.pre_vote))
            if not m.pre_vote:
                self.vote = m.src
                self.election_elapsed = 0
        else:
            self._send(VoteResp(self.term, self.id, m.src, False, pre_vote=m.pre_vote))

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            self.election_elapsed = 0
            self.leader = m.src
            if isinstance(m, AppendEntries):
                self._handle_append(m)
            elif isinstance(m, Heartbeat):
                self.log.commit_to(m.commit)
                self._send(HeartbeatResp(self.term, self.id, m.src, m.context, m.tick))
            else:
                self._handle_snapshot(m)
        elif isinstance(m, TimeoutNow):
            self._campaign(pre_vote=False, transfer=True)
        elif isinstance(m, ReadIndexResp) and not m.reject:
            self.read_states.append(ReadState(m.context, m.index))
        elif isinstance(m, ReadIndex) and self.leader:
            self._send(ReadIndexResp(self.term, self.id, m.src, m.context, 0, reject=True))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, AppendEntries | Heartbeat | InstallSnapshot):
            self._become_follower(self.term, m.src)  # a leader of our term exists
            self._step_follower(m)
        elif isinstance(m, VoteResp) and m.pre_vote == (self.role is Role.PRE_CANDIDATE):
            if m.src in self.membership.voters:
                self.votes.setdefault(m.src, m.granted)
            granted = {v for v, ok in self.votes.items() if ok}
            rejected = {v for v, ok in self.votes.items() if not ok}
            if self._has_quorum(granted):
                self._won_votes()
            elif self._has_quorum(rejected):
                self._become_follower(self.term, "")

    def _handle_append(self, m: AppendEntries) -> None:
        log = self.log
        if m.prev_index < log.committed:
            self._send(AppendResp(self.term, self.id, m.src, log.committed))
            return
        if log.match_term(m.prev_index, m.prev_term):
            last_new = log.append_new(m.prev_index, m.entries)
            self._refresh_membership()
            log.commit_to(min(m.commit, last_new))
            self._send(AppendResp(self.term, self.id, m.src, last_new))
            return
        if m.prev_index > log.last_index():
            hint_index, hint_term = log.last_index() + 1, 0
        else:
            hint_term = log.term(m.prev_index) or 0
            hint_index = log.first_index_of_term(m.prev_index)
        self._send(AppendResp(self.term, self.id, m.src, m.prev_index, reject=True,
                              conflict_index=hint_index, conflict_term=hint_term))

    def _handle_snapshot(self, m: InstallSnapshot) -> None:
        snap = m.snapshot
        if snap.index <= self.log.committed:
            self._send(InstallSnapshotResp(self.term, self.id, m.src, self.log.committed))
            return
        if self.log.match_term(snap.index, snap.term):
            self.log.commit_to(snap.index)  # we hold that prefix already: just fast-forward
        else:
            self.log.restore(snap)
            self._received_snapshot = snap
            self._refresh_membership()
        self._send(InstallSnapshotResp(self.term, self.id, m.src, snap.index))

    # --- helpers shared with the leader ---
    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _has_quorum(self, ids: set[str]) -> bool:
        voters = self.membership.voters
        return bool(voters) and sum(1 for v in voters if v in ids) >= len(voters) // 2 + 1

    def _refresh_membership(self) -> None:
        index = self.log.last_config_index()
        key = (index, self.log.term(index) or 0)
        if key == self._config_key:
            return
        self._config_key = key
        self.membership = self.log.membership()
        if self.role is Role.LEADER:
            self._sync_progress()
