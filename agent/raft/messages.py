"""Raft wire messages, log entries, membership and snapshots as plain records (layer 0).

Contract:
- Every message is a frozen dataclass whose first three fields are `term`, `src`, `dst` (server
  ids). `to_record(msg)` turns it into a list of ints, strs, bytes, bools and nested lists that
  msgpack (or any similar codec) carries unchanged; `from_record(rec)` is its inverse and raises
  `MalformedMessage` on anything it cannot read. The first item of a record is the message's tag.
- `LogEntry.kind` says what the payload is: a catalog COMMAND, the leader's NOOP at the start of
  its term, or a CONFIG entry whose data is an encoded `Membership` (the whole new configuration).
- `Membership` keeps voters and learners as sorted tuples, so no set order ever leaks into output.
- `HardState` (term, vote, commit) is what must be durable before messages depending on it leave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any


class MalformedMessage(ValueError):
    """A record that is not a valid Raft message (bad tag, arity or field type)."""


class EntryKind(IntEnum):
    COMMAND = 0
    NOOP = 1
    CONFIG = 2


@dataclass(frozen=True, slots=True)
class LogEntry:
    index: int
    term: int
    kind: int = EntryKind.COMMAND
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class Membership:
    voters: tuple[str, ...] = ()
    learners: tuple[str, ...] = ()

    @staticmethod
    def of(voters: Any = (), learners: Any = ()) -> Membership:
        v = tuple(sorted(set(voters)))
        return Membership(v, tuple(sorted(set(learners) - set(v))))

    def members(self) -> tuple[str, ...]:
        return tuple(sorted(self.voters + self.learners))

    def is_voter(self, server_id: str) -> bool:
        return server_id in self.voters

    def encode(self) -> bytes:
        return json.dumps({"voters": list(self.voters), "learners": list(self.learners)}).encode()

    @staticmethod
    def decode(data: bytes) -> Membership:
        try:
            raw = json.loads(data)
            return Membership.of(raw["voters"], raw["learners"])
        except (ValueError, KeyError, TypeError) as exc:
            raise MalformedMessage(f"bad membership record: {exc}") from exc


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: str = ""
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image at `index` (whose entry had `term`) with the membership at that index."""

    index: int
    term: int
    membership: Membership
    data: bytes = b""


# --- messages -------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AppendEntries:
    term: int
    src: str
    dst: str
    prev_index: int
    prev_term: int
    entries: tuple[LogEntry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendResp:
    """Accept: `index` is the follower's last index known to match. Reject: `index` is the
    rejected prev_index, with a hint — the follower's first index of `conflict_term` (or its
    last index + 1 when its log is too short, conflict_term 0)."""

    term: int
    src: str
    dst: str
    index: int
    reject: bool = False
    conflict_index: int = 0
    conflict_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """`tick` is the leader's tick counter when sent; the answer echoes it (the lease's clock)."""

    term: int
    src: str
    dst: str
    commit: int
    context: bytes = b""
    tick: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResp:
    term: int
    src: str
    dst: str
    context: bytes = b""
    tick: int = 0


@dataclass(frozen=True, slots=True)
class RequestVote:
    """`pre_vote`: a trial round that changes no one's term or vote. `transfer`: sent after a
    TimeoutNow, so voters ignore the leader they still hear from."""

    term: int
    src: str
    dst: str
    last_index: int
    last_term: int
    pre_vote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResp:
    term: int
    src: str
    dst: str
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    term: int
    src: str
    dst: str
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class InstallSnapshotResp:
    term: int
    src: str
    dst: str
    index: int
    reject: bool = False


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    term: int
    src: str
    dst: str


@dataclass(frozen=True, slots=True)
class ReadIndex:
    """A follower asks the leader for a read index on behalf of request `context`."""

    term: int
    src: str
    dst: str
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResp:
    term: int
    src: str
    dst: str
    context: bytes
    index: int
    reject: bool = False


Message = (AppendEntries | AppendResp | Heartbeat | HeartbeatResp | RequestVote | VoteResp | InstallSnapshot
           | InstallSnapshotResp | TimeoutNow | ReadIndex | ReadIndexResp)

# the tag of a type is its position here: append new types at the end, never reorder
MESSAGE_TYPES: tuple[type, ...] = (AppendEntries, AppendResp, Heartbeat, HeartbeatResp, RequestVote, VoteResp,
                                   InstallSnapshot, InstallSnapshotResp, TimeoutNow, ReadIndex, ReadIndexResp)
_TAGS = {cls: tag for tag, cls in enumerate(MESSAGE_TYPES)}
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in MESSAGE_TYPES}
_FIELD_TYPES: dict[str, type] = {
    "term": int, "src": str, "dst": str, "prev_index": int, "prev_term": int, "commit": int, "index": int,
    "reject": bool, "conflict_index": int, "conflict_term": int, "context": bytes, "last_index": int,
    "last_term": int, "pre_vote": bool, "transfer": bool, "granted": bool, "tick": int,
}


def entry_to_record(entry: LogEntry) -> list[Any]:
    return [entry.index, entry.term, int(entry.kind), entry.data]


def entry_from_record(rec: Any) -> LogEntry:
    if not isinstance(rec, list | tuple) or len(rec) != 4:
        raise MalformedMessage("an entry is [index, term, kind, data]")
    index, term, kind, data = rec
    if not (_is_int(index) and _is_int(term) and _is_int(kind) and isinstance(data, bytes)):
        raise MalformedMessage("bad entry field types")
    if kind not in EntryKind.__members__.values():
        raise MalformedMessage(f"unknown entry kind {kind}")
    return LogEntry(index, term, kind, data)


def snapshot_to_record(snap: Snapshot) -> list[Any]:
    return [snap.index, snap.term, list(snap.membership.voters), list(snap.membership.learners), snap.data]


def snapshot_from_record(rec: Any) -> Snapshot:
    if not isinstance(rec, list | tuple) or len(rec) != 5:
        raise MalformedMessage("a snapshot is [index, term, voters, learners, data]")
    index, term, voters, learners, data = rec
    ok_ids = all(isinstance(v, list | tuple) and all(isinstance(x, str) for x in v) for v in (voters, learners))
    if not (_is_int(index) and _is_int(term) and ok_ids and isinstance(data, bytes)):
        raise MalformedMessage("bad snapshot field types")
    return Snapshot(index, term, Membership.of(voters, learners), data)


def to_record(msg: Message) -> list[Any]:
    cls = type(msg)
    out: list[Any] = [_TAGS[cls]]
    for name in _FIELDS[cls]:
        value = getattr(msg, name)
        if name == "entries":
            out.append([entry_to_record(e) for e in value])
        elif name == "snapshot":
            out.append(snapshot_to_record(value))
        else:
            out.append(value)
    return out


def from_record(rec: Any) -> Message:
    if not isinstance(rec, list | tuple) or not rec or not _is_int(rec[0]) or not 0 <= rec[0] < len(MESSAGE_TYPES):
        raise MalformedMessage("a message record starts with a known tag")
    cls = MESSAGE_TYPES[rec[0]]
    names = _FIELDS[cls]
    if len(rec) != len(names) + 1:
        raise MalformedMessage(f"{cls.__name__} has {len(names)} fields, got {len(rec) - 1}")
    values: list[Any] = []
    for name, value in zip(names, rec[1:], strict=True):
        if name == "entries":
            if not isinstance(value, list | tuple):
                raise MalformedMessage("entries is a list")
            values.append(tuple(entry_from_record(e) for e in value))
        elif name == "snapshot":
            values.append(snapshot_from_record(value))
        else:
            want = _FIELD_TYPES[name]
            ok = _is_int(value) if want is int else isinstance(value, want)
            if not ok:
                raise MalformedMessage(f"{cls.__name__}.{name} must be {want.__name__}")
            values.append(value)
    return cls(*values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
