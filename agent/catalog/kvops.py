"""KV verbs, transactions and session life cycle over the KV and sessions tables (layer 1, pure).

Contract (reference §4, §5):
- `apply_kv(index, kv, sessions, op) -> bool`: one KV write; False when its condition fails
  (cas, lock held, unlock by a non-holder, a stale fencing token), nothing changed then.
- `run_op(index, kv, sessions, op)`: stage one op (raises one of `OP_ERRORS`); `txnops` builds
  transactions mixing KV and catalog verbs on it.
- `apply_txn(index, kv, sessions, ops) -> TxnResult`: all ops or none; every failing op is
  reported as `(op index, what)` with Consul's wording, and any failure rolls everything back.
  `read_txn(kv, sessions, ops)` runs read-only ops against the current state (nothing staged).
- `create_session(index, catalog, sessions, cmd)`: the node must exist and every linked check
  must exist and not be critical (`SessionError`, a 400, otherwise).
- `invalidate(index, kv, sessions, id) -> [(key, lock_delay_ns)]`: destroy a session, releasing
  (or deleting, Behavior=delete) every key it holds; the returned keys are under lock-delay. The
  FSM runs `check_sessions` after every catalog write so a session dies with its node or checks.
- Fencing token: `"LockIndex:ModifyIndex:LockKey"` (see `fence_token`); a write carrying one applies
  only while LockKey is still locked with that LockIndex (no acquisition since).
- Errors: `KVOpError` (a 400: malformed op), `InvalidSession` (lock with an unknown session).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Protocol

from agent.catalog.commands import KVOp, SessionCreateCommand
from agent.catalog.kv import KVEntry, KVStore
from agent.catalog.sessions import BEHAVIORS, Session, SessionTable
from agent.errors import BadRequest, WaypostError
from agent.types import HealthCheck, Node, NodeService
from checks.definition import Status

WRITE_VERBS = frozenset({"set", "cas", "lock", "unlock", "delete", "delete-tree", "delete-cas"})
READ_VERBS = frozenset({"get", "get-tree", "check-index", "check-session", "check-not-exists"})
KV_VERBS = WRITE_VERBS | READ_VERBS
NEEDS_SESSION = frozenset({"lock", "unlock", "check-session"})
PREFIX_VERBS = frozenset({"get-tree", "delete-tree"})


def _q(text: str) -> str:
    """Go's %q: a double-quoted string (Consul's messages quote keys this way)."""
    return json.dumps(text)


class KVOpError(BadRequest):
    """A KV operation that is malformed (unknown verb, missing key or session)."""


class SessionError(BadRequest):
    """A session that cannot be created (missing node or check, critical check, bad field)."""


class InvalidSession(WaypostError):
    """A lock or check-session naming a session that does not exist (Consul: 500)."""


class _Failed(Exception):
    """A conditional op whose condition does not hold (internal)."""


class Catalog(Protocol):
    def node(self, name: str) -> tuple[int, Node | None, list[NodeService]]: ...
    def check(self, node: str, check_id: str) -> HealthCheck | None: ...


TxnRow = KVEntry | Node | NodeService | HealthCheck


def _result_api(row: TxnRow, with_value: bool) -> dict[str, object]:
    if isinstance(row, KVEntry):
        return {"KV": row.to_api(with_value)}
    if isinstance(row, Node):
        return {"Node": row.to_api()}
    if isinstance(row, NodeService):
        return {"Service": row.to_api()}
    return {"Check": row.to_api()}


@dataclass(slots=True)
class TxnResult:
    results: list[tuple[TxnRow, bool]] = field(default_factory=list)  # (row, with KV value)
    errors: list[tuple[int, str]] = field(default_factory=list)

    def to_api(self) -> dict[str, object]:
        if self.errors:
            return {"Results": None, "Errors": [{"OpIndex": i, "What": w} for i, w in self.errors]}
        return {"Results": [_result_api(r, v) for r, v in self.results], "Errors": None}


def fence_token(entry: KVEntry) -> str:
    return f"{entry.lock_index}:{entry.modify_index}:{entry.key}"


def parse_fence(token: str) -> tuple[str, int]:
    """(lock key, lock index) of a fencing token; `KVOpError` if it is not one."""
    lock_index, _, rest = token.partition(":")
    modify_index, sep, key = rest.partition(":")
    if not (sep and key and lock_index.isdigit() and modify_index.isdigit()):
        raise KVOpError(f"Invalid fence token {_q(token)}: want LockIndex:ModifyIndex:Key")
    return key, int(lock_index)


def validate_op(op: KVOp) -> None:
    if op.verb not in KV_VERBS:
        raise KVOpError(f"Invalid KV verb {_q(op.verb)}")
    if not op.key and op.verb not in PREFIX_VERBS:
        raise KVOpError("Missing key name")
    if op.verb in NEEDS_SESSION and not op.session:
        raise KVOpError(f"Missing session for verb {_q(op.verb)}")
    if op.fence:
        parse_fence(op.fence)


def _check_fence(kv: KVStore, op: KVOp) -> None:
    if not op.fence:
        return
    key, lock_index = parse_fence(op.fence)
    holder = kv.entry(key)
    if holder is None or not holder.session or holder.lock_index != lock_index:
        raise _Failed(f"fencing token for key {_q(key)} is stale: the lock was lost or re-acquired")


def _write(index: int, kv: KVStore, op: KVOp, session: str | None = None, lock_index: int | None = None) -> KVEntry:
    old = kv.entry(op.key)
    entry = KVEntry(
        key=op.key, value=op.value, flags=op.flags,
        session=(old.session if old else "") if session is None else session,
        lock_index=(old.lock_index if old else 0) if lock_index is None else lock_index,
        create_index=old.create_index if old else index, modify_index=index)
    kv.put(entry)
    return entry


def _run(index: int, kv: KVStore, sessions: SessionTable, op: KVOp) -> list[tuple[KVEntry, bool]]:
    """Apply or evaluate one op; raises `_Failed` (condition) or `InvalidSession`."""
    validate_op(op)
    key, verb = op.key, op.verb
    current = kv.entry(key)
    if verb in WRITE_VERBS:
        _check_fence(kv, op)
    if verb == "set":
        return [(_write(index, kv, op), False)]
    if verb == "cas":
        if (op.index == 0 and current is not None) or (
                op.index != 0 and (current is None or current.modify_index != op.index)):
            raise _Failed(f"failed to set key {_q(key)}, index is stale")
        return [(_write(index, kv, op), False)]
    if verb == "lock":
        if sessions.get(op.session) is None:
            raise InvalidSession(f"failed to lock key {_q(key)}: invalid session {_q(op.session)}")
        if current is not None and current.session == op.session:
            return [(_write(index, kv, op), False)]
        if current is not None and current.session:
            raise _Failed(f"failed to lock key {_q(key)}, lock is already held")
        lock_index = (current.lock_index if current else 0) + 1
        return [(_write(index, kv, op, session=op.session, lock_index=lock_index), False)]
    if verb == "unlock":
        if current is None or current.session != op.session:
            raise _Failed(f"failed to unlock key {_q(key)}, lock isn't held, or is held by another session")
        return [(_write(index, kv, op, session=""), False)]
    if verb == "delete":
        kv.remove(index, key)
        return []
    if verb == "delete-tree":
        for entry in kv.list(key)[1]:
            kv.remove(index, entry.key)
        return []
    if verb == "delete-cas":
        if current is not None:
            if current.modify_index != op.index:
                raise _Failed(f"failed to delete key {_q(key)}, index is stale")
            kv.remove(index, key)
        return []
    if verb == "get-tree":
        return [(e, True) for e in kv.list(key)[1]]
    if verb == "check-not-exists":
        if current is not None:
            raise _Failed(f"key {_q(key)} exists")
        return []
    if current is None:
        raise _Failed(f"key {_q(key)} doesn't exist")
    if verb == "check-index" and current.modify_index != op.index:
        raise _Failed(f"current modify index {current.modify_index} != {op.index}")
    if verb == "check-session" and current.session != op.session:
        raise _Failed(f"failed session check for key {_q(key)}, current session "
                      f"{_q(current.session)} != {_q(op.session)}")
    return [(current, verb == "get")]


def run_op(index: int, kv: KVStore, sessions: SessionTable, op: KVOp) -> list[tuple[KVEntry, bool]]:
    """Stage (or evaluate) one op without committing; raises one of `OP_ERRORS` when it fails."""
    return _run(index, kv, sessions, op)


def apply_kv(index: int, kv: KVStore, sessions: SessionTable, op: KVOp) -> bool:
    try:
        _run(index, kv, sessions, op)
    except _Failed:
        kv.rollback()
        return False
    except BaseException:
        kv.rollback()
        raise
    kv.commit(index)
    return True


OP_ERRORS = (_Failed, InvalidSession, KVOpError)


def _run_all(index: int, kv: KVStore, sessions: SessionTable, ops: list[KVOp]) -> TxnResult:
    out = TxnResult()
    for position, op in enumerate(ops):
        try:
            out.results.extend(_run(index, kv, sessions, op))
        except OP_ERRORS as exc:
            out.errors.append((position, str(exc)))
    return out


def apply_txn(index: int, kv: KVStore, sessions: SessionTable, ops: list[KVOp]) -> TxnResult:
    try:
        out = _run_all(index, kv, sessions, ops)
    except BaseException:
        kv.rollback()
        raise
    if out.errors:
        kv.rollback()
        out.results = []
    else:
        kv.commit(index)
    return out


def read_txn(kv: KVStore, sessions: SessionTable, ops: list[KVOp]) -> TxnResult:
    if any(op.verb in WRITE_VERBS for op in ops):
        raise KVOpError("read_txn given a write op")
    return _run_all(0, kv, sessions, ops)


# ---------------------------------------------------------------------- sessions


def _unhealthy(catalog: Catalog, node: str, check_ids: tuple[str, ...]) -> str:
    """Why a session on `node` with these checks cannot live ("" if it can)."""
    if catalog.node(node)[1] is None:
        return f"Missing node registration {_q(node)}"
    for check_id in check_ids:
        check = catalog.check(node, check_id)
        if check is None:
            return f"Missing check {_q(check_id)} registration"
        if check.status == Status.CRITICAL:
            return f"Check {_q(check_id)} is in critical state"
    return ""


def create_session(index: int, catalog: Catalog, sessions: SessionTable, cmd: SessionCreateCommand) -> Session:
    if not cmd.id or sessions.get(cmd.id) is not None:
        raise SessionError(f"Invalid or duplicate session ID {_q(cmd.id)}")
    if cmd.behavior not in BEHAVIORS:
        raise SessionError(f"Invalid Behavior setting {_q(cmd.behavior)}")
    if not cmd.node:
        raise SessionError("Must provide Node")
    row = Session(id=cmd.id, node=cmd.node, name=cmd.name, lock_delay_ns=cmd.lock_delay_ns,
                  behavior=cmd.behavior, ttl=cmd.ttl, node_checks=tuple(dict.fromkeys(cmd.node_checks)),
                  service_checks=tuple(dict.fromkeys(cmd.service_checks)),
                  create_index=index, modify_index=index)
    problem = _unhealthy(catalog, row.node, row.checks)
    if problem:
        raise SessionError(problem)
    sessions.add(row)
    sessions.commit(index)
    return row


def invalidate(index: int, kv: KVStore, sessions: SessionTable, session_id: str) -> list[tuple[str, int]]:
    row = sessions.remove(session_id)
    if row is None:
        return []
    delayed: list[tuple[str, int]] = []
    for key in kv.held_by(session_id):
        entry = kv.entry(key)
        assert entry is not None
        if row.behavior == "delete":
            kv.remove(index, key)
        else:
            kv.put(replace(entry, session="", modify_index=index))
        if row.lock_delay_ns > 0:
            delayed.append((key, row.lock_delay_ns))
    kv.commit(index)
    sessions.commit(index)
    return delayed


def check_sessions(index: int, catalog: Catalog, kv: KVStore, sessions: SessionTable,
                   node: str) -> list[tuple[str, int]]:
    """Invalidate every session on `node` whose node or linked checks are gone or critical."""
    delayed: list[tuple[str, int]] = []
    for session_id in sessions.by_node(node):
        row = sessions.get(session_id)
        if row is not None and _unhealthy(catalog, node, row.checks):
            delayed.extend(invalidate(index, kv, sessions, session_id))
    return delayed
