"""The leader half of RaftCore: replication, commit, membership, transfer, reads (layer 1, pure).

Contract: `LeaderMixin` is only ever mixed into `RaftCore` (agent/raft/core.py), whose contract
applies. Here: a new leader appends a NOOP of its term and may change membership only after an
entry of its term committed; entries commit only by counting voters' `match` at an index of the
current term; a follower that rejects is moved back using its conflict hint (one round trip per
conflicting term, not per entry); a follower whose next entry was compacted gets a snapshot;
replication pipelines up to `max_inflight` messages per follower in REPLICATE state.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from agent.raft.errors import ConfigChangeRejected, NotLeader, ProposalDropped, TransferRejected
from agent.raft.messages import (
    AppendEntries,
    AppendResp,
    EntryKind,
    Heartbeat,
    HeartbeatResp,
    InstallSnapshot,
    InstallSnapshotResp,
    LogEntry,
    Membership,
    Message,
    ReadIndex,
    ReadIndexResp,
    TimeoutNow,
)
from agent.raft.progress import Progress, State
from agent.raft.readonly import ReadState

if TYPE_CHECKING:
    from agent.raft.core import RaftCore


class Role(Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre-candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class LeaderMixin:
    # --- becoming leader, ticking ---
    def _become_leader(self: RaftCore) -> None:
        self._reset(self.term)
        self.leader = self.id
        self.role = Role.LEADER
        self._step = self._step_leader
        self._sync_progress()
        me = self.progress[self.id]
        me.maybe_update(self.log.stabled)
        me.become_replicate()
        self.log.append([LogEntry(self.log.last_index() + 1, self.term, EntryKind.NOOP)])
        self.pending_conf_index = self.log.last_index()  # no membership change before this commits
        self._bcast_pending = True

    def _tick_leader(self: RaftCore) -> None:
        cfg = self.config
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= cfg.election_ticks:
            self.election_elapsed = 0
            if cfg.check_quorum:
                active = {sid for sid, pr in self.progress.items() if pr.recent_active or sid == self.id}
                if not self._has_quorum(active):
                    self._become_follower(self.term, "")
                    return
                for pr in self.progress.values():
                    pr.recent_active = False
            self.transferee = ""  # a transfer that did not finish within an election timeout is abandoned
        for sid, pr in self.progress.items():
            if pr.state is State.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= cfg.election_ticks:  # the snapshot (or its answer) was lost
                    pr.become_probe()
                    self._send_append(sid)
        if self.heartbeat_elapsed >= cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(self.readonly.last_context())

    # --- proposals and membership ---
    def propose(self: RaftCore, data: bytes, origin: str = "") -> int:
        """Append a command; returns its index (it is committed when applied with this term).
        `origin`: the follower that forwarded it and waits to apply it — it hears of the commit
        at once instead of with the next AppendEntries or heartbeat."""
        index = self._append_entry(EntryKind.COMMAND, data)
        if origin and origin != self.id:
            self.commit_watchers[index] = origin
        return index

    def _append_entry(self: RaftCore, kind: int, data: bytes) -> int:
        if not self.is_leader():
            raise NotLeader(self.leader)
        if self.transferee:
            raise ProposalDropped(f"leadership is moving to {self.transferee}")
        index = self.log.last_index() + 1
        self.log.append([LogEntry(index, self.term, kind, data)])
        self._bcast_pending = True
        return index

    def add_learner(self: RaftCore, server_id: str) -> int:
        m = self.membership
        if server_id in m.members():
            raise ConfigChangeRejected(f"{server_id} is already a member")
        return self._change_membership(Membership.of(m.voters, (*m.learners, server_id)))

    def promote(self: RaftCore, server_id: str) -> int:
        """Make a caught-up learner a voter (its match must have reached the commit index)."""
        m = self.membership
        if server_id not in m.learners:
            raise ConfigChangeRejected(f"{server_id} is not a learner")
        pr = self.progress.get(server_id)
        if pr is None or pr.match < self.log.committed:
            raise ConfigChangeRejected(f"{server_id} has not caught up yet")
        return self._change_membership(Membership.of((*m.voters, server_id), set(m.learners) - {server_id}))

    def remove_server(self: RaftCore, server_id: str) -> int:
        m = self.membership
        if server_id not in m.members():
            raise ConfigChangeRejected(f"{server_id} is not a member")
        if m.voters == (server_id,):
            raise ConfigChangeRejected("cannot remove the last voter")
        return self._change_membership(Membership.of(set(m.voters) - {server_id}, set(m.learners) - {server_id}))

    def _change_membership(self: RaftCore, new: Membership) -> int:
        if not self.is_leader():
            raise NotLeader(self.leader)
        if self.pending_conf_index > self.log.committed or self.log.term(self.log.committed) != self.term:
            raise ConfigChangeRejected("a membership change (or this term's first entry) is still uncommitted")
        index = self._append_entry(EntryKind.CONFIG, new.encode())
        self.pending_conf_index = index
        self._refresh_membership()
        return index

    def _sync_progress(self: RaftCore) -> None:
        """Give every member a Progress (new ones probe from our last index); drop removed ones."""
        members = set(self.membership.members()) | {self.id}
        for sid in members - self.progress.keys():
            self.progress[sid] = Progress(self.log.last_index() + 1, self.config.max_inflight)
        for sid in self.progress.keys() - members:
            del self.progress[sid]
        if self.transferee and self.transferee not in self.membership.voters:
            self.transferee = ""

    def transfer_leadership(self: RaftCore, target: str) -> None:
        if not self.is_leader():
            raise NotLeader(self.leader)
        if target == self.id:
            return
        if target not in self.membership.voters:
            raise TransferRejected(f"{target} is not a voter")
        self.transferee = target
        self.election_elapsed = 0  # the transfer gets one election timeout to finish
        if self.progress[target].match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, target))
        else:
            self._send_append(target)

    # --- reads ---
    def lease_read_index(self: RaftCore) -> int | None:
        """The commit index if a default (lease) read may be served now, else None. The lease is
        only sound with check-quorum (voters then ignore candidates while they hear a leader)."""
        if not self.config.check_quorum or not self.is_leader() or self.transferee \
                or self.log.term(self.log.committed) != self.term:
            return None
        horizon = self.tick_count - self.config.lease_ticks
        fresh = {sid for sid, pr in self.progress.items() if sid == self.id or pr.ack_tick > horizon}
        return self.log.committed if self._has_quorum(fresh) else None

    def _leader_read_index(self: RaftCore, context: bytes, origin: str) -> None:
        if self.log.term(self.log.committed) != self.term:
            self.readonly.pending_until_commit.append((context, origin))
            return
        if self._has_quorum({self.id}):
            self._release_reads([(context, self.log.committed, origin)])
            return
        if self.readonly.add(context, self.log.committed, origin, self.id):
            self._read_round_pending = True  # one heartbeat round in the next ready() serves them all

    def _release_reads(self: RaftCore, released: list[tuple[bytes, int, str]]) -> None:
        for context, index, origin in released:
            if origin == self.id:
                self.read_states.append(ReadState(context, index))
            else:
                self._send(ReadIndexResp(self.term, self.id, origin, context, index))

    # --- steps ---
    def _step_leader(self: RaftCore, m: Message) -> None:
        if isinstance(m, ReadIndex):
            self._leader_read_index(m.context, m.src)
            return
        pr = self.progress.get(m.src)
        if pr is None:
            return
        if isinstance(m, AppendResp):
            pr.recent_active = True
            self._handle_append_resp(m, pr)
        elif isinstance(m, HeartbeatResp):
            pr.recent_active = True
            pr.ack_tick = max(pr.ack_tick, m.tick)
            pr.paused = False
            if pr.state is State.REPLICATE and pr.is_paused():
                pr.free_one()
            if pr.match < self.log.last_index():
                self._send_append(m.src)
            if m.context:
                done = self.readonly.ack(m.context, m.src, self._has_quorum)
                self._release_reads([(r.context, r.index, r.origin) for r in done])
        elif isinstance(m, InstallSnapshotResp):
            pr.recent_active = True
            if pr.state is State.SNAPSHOT:
                pr.become_probe()
            if not m.reject and pr.maybe_update(m.index):
                pr.become_replicate()
            self._send_more(m.src)

    def _handle_append_resp(self: RaftCore, m: AppendResp, pr: Progress) -> None:
        if m.reject:
            hint = m.conflict_index
            if m.conflict_term:
                ours = self.log.last_index_of_term(m.conflict_term)
                if ours:
                    hint = ours + 1
            if pr.maybe_decrease(m.index, hint):
                if pr.state is State.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src)
            return
        if pr.maybe_update(m.index):
            if pr.state is State.PROBE or (pr.state is State.SNAPSHOT and pr.match >= pr.pending_snapshot):
                pr.become_replicate()
            self._maybe_commit()
            if m.src == self.transferee and pr.match == self.log.last_index():
                self._send(TimeoutNow(self.term, self.id, m.src))
        self._send_more(m.src)

    def _send_more(self: RaftCore, to: str) -> None:
        while self._send_append(to, send_if_empty=False):
            pass

    # --- sending ---
    def _send_append(self: RaftCore, to: str, send_if_empty: bool = True) -> bool:
        pr = self.progress.get(to)
        if pr is None or to == self.id or pr.is_paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term(prev)
        if prev_term is None:  # compacted away: only a snapshot can catch this follower up
            snap = self.storage.snapshot()
            if snap is None or snap.index < self.log.snap_index:
                return False
            self._send(InstallSnapshot(self.term, self.id, to, snap))
            pr.become_snapshot(snap.index)
            return True
        last = self.log.last_index()
        entries = self.log.slice(pr.next, last + 1, self.config.max_batch_bytes) if pr.next <= last else []
        if not entries and not send_if_empty:
            return False
        self._send(AppendEntries(self.term, self.id, to, prev, prev_term, tuple(entries), self.log.committed))
        pr.sent(entries[-1].index if entries else prev, len(entries))
        pr.commit_sent = self.log.committed
        return True

    def _bcast_append(self: RaftCore) -> None:
        for sid in sorted(self.progress):
            self._send_append(sid)

    def _bcast_heartbeat(self: RaftCore, context: bytes) -> None:
        for sid in sorted(self.progress):
            if sid != self.id:
                self._send_heartbeat(sid, context)

    def _send_heartbeat(self: RaftCore, to: str, context: bytes = b"") -> None:
        pr = self.progress[to]
        commit = min(pr.match, self.log.committed)
        self._send(Heartbeat(self.term, self.id, to, commit, context, self.tick_count))
        pr.commit_sent = max(pr.commit_sent, commit)

    # --- telling followers the commit index ---
    def commit_unannounced(self: RaftCore) -> bool:
        """Leader: some follower holds committed entries it has not been told are committed."""
        if self.role is not Role.LEADER:
            return False
        committed = self.log.committed
        return any(min(pr.match, committed) > pr.commit_sent for sid, pr in self.progress.items() if sid != self.id)

    def announce_commit(self: RaftCore) -> None:
        """Tell each such follower now, by heartbeat (the driver calls this when no AppendEntries
        carried the commit within a moment: a commit travels lazily, see `_tell_commit_watchers`)."""
        if self.role is not Role.LEADER:
            return
        committed = self.log.committed
        for sid in sorted(self.progress):
            pr = self.progress[sid]
            if sid != self.id and min(pr.match, committed) > pr.commit_sent:
                self._send_heartbeat(sid)

    # --- commit ---
    def _maybe_commit(self: RaftCore) -> bool:
        voters = self.membership.voters
        if not voters:
            return False
        matches = sorted((self.progress[v].match if v in self.progress else 0 for v in voters), reverse=True)
        index = matches[len(voters) // 2]
        if index <= self.log.committed or self.log.term(index) != self.term:
            return False
        self.log.commit_to(index)
        self._tell_commit_watchers()
        if self.readonly.pending_until_commit:
            waiting, self.readonly.pending_until_commit = self.readonly.pending_until_commit, []
            for context, origin in waiting:
                self._leader_read_index(context, origin)
        if not self.promotable() and self.log.committed >= self.pending_conf_index:
            self._step_down_removed()
        return True

    def _tell_commit_watchers(self: RaftCore) -> None:
        """A new commit index travels lazily, with the next AppendEntries, or a heartbeat when the
        driver calls `announce_commit` a moment later (a commit-only AppendEntries to every
        follower after every commit would double the messages and follower Ready cycles per write
        under light load); followers waiting on a forwarded entry that just committed get an
        AppendEntries now."""
        if not self.commit_watchers:
            return
        done = [i for i in self.commit_watchers if i <= self.log.committed]
        for sid in sorted({self.commit_watchers.pop(i) for i in done}):
            self._send_append(sid)

    def _step_down_removed(self: RaftCore) -> None:
        """Our removal committed: hand over to the most caught-up voter and stop leading."""
        self._bcast_append()  # let followers learn the commit before we go quiet
        best = max(self.membership.voters, key=lambda v: (self.progress[v].match if v in self.progress else 0, v))
        if best in self.progress and self.progress[best].match == self.log.last_index():
            self._send(TimeoutNow(self.term, self.id, best))
        self._become_follower(self.term, "")
