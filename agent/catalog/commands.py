"""Catalog write commands: the only things the FSM applies (layer 0).

Contract: every catalog change is one of these dataclasses. `encode(cmd) -> bytes` and
`decode(bytes) -> cmd` are the Raft log format (msgpack, a tagged record); `decode` raises
`CommandError` for bytes that are not a command. Commands never carry config or clocks.
KV, session and transaction commands (`KVCommand`, `TxnCommand` of `KVOp`/`CatalogOp`, `SessionCreateCommand`,
`SessionDestroyCommand`, `TombstoneReapCommand`) carry plain data; the session id is chosen by
the proposer, never by the FSM. `RestoreCommand` carries a whole FSM snapshot (operator restore):
every server replaces its tables with it at the same log index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from agent.errors import WaypostError
from agent.types import HealthCheck, Node, NodeService


class CommandError(WaypostError):
    """Bytes in the log that do not decode to a known command."""


@dataclass(slots=True)
class RegisterCommand:
    """Upsert a node, optionally one service, and any checks (Consul's RegisterRequest)."""

    node: Node
    service: NodeService | None = None
    checks: list[HealthCheck] = field(default_factory=list)
    skip_node_update: bool = False


@dataclass(slots=True)
class DeregisterCommand:
    """Remove a whole node, or one service (and its checks), or one check."""

    node: str
    service_id: str = ""
    check_id: str = ""


@dataclass(slots=True)
class NoopCommand:
    """Written by a new leader at the start of its term; changes nothing."""


@dataclass(slots=True)
class KVOp:
    """One KV verb (Consul's txn verbs: set, cas, lock, unlock, get, get-tree, check-index,
    check-session, check-not-exists, delete, delete-tree, delete-cas). `fence` is an optional
    fencing token (`LockIndex:ModifyIndex:LockKey`) guarding a write."""

    verb: str
    key: str
    value: bytes = b""
    flags: int = 0
    index: int = 0
    session: str = ""
    fence: str = ""


@dataclass(slots=True)
class CatalogOp:
    """One Node, Service or Check verb inside a transaction (set, cas, get, delete, delete-cas).

    `kind` is "Node", "Service" or "Check"; `node` the node name the op concerns; `row` the
    decoded Node / NodeService / HealthCheck (for get and delete only its names matter); `index`
    the ModifyIndex a cas / delete-cas compares with."""

    kind: str
    verb: str
    node: str
    row: Node | NodeService | HealthCheck
    index: int = 0


@dataclass(slots=True)
class KVCommand:
    """One KV write (`PUT`/`DELETE /v1/kv/:key`); the FSM result is True/False."""

    op: KVOp


@dataclass(slots=True)
class TxnCommand:
    """An atomic list of KV and catalog ops (`PUT /v1/txn`); the FSM result is a `TxnResult`."""

    ops: list[KVOp | CatalogOp]


@dataclass(slots=True)
class SessionCreateCommand:
    id: str
    node: str
    name: str = ""
    lock_delay_ns: int = 15_000_000_000
    behavior: str = "release"
    ttl: str = ""
    node_checks: list[str] = field(default_factory=lambda: ["serfHealth"])
    service_checks: list[str] = field(default_factory=list)


@dataclass(slots=True)
class SessionDestroyCommand:
    """Destroy (invalidate) a session: its locks are released or its keys deleted."""

    id: str


@dataclass(slots=True)
class TombstoneReapCommand:
    """Forget KV tombstones written at or below `up_to` (proposed by the leader's reaper)."""

    up_to: int


@dataclass(slots=True)
class RestoreCommand:
    """Replace catalog, KV and sessions with an FSM snapshot (`PUT /v1/snapshot`), atomically."""

    snapshot: bytes


Command = (RegisterCommand | DeregisterCommand | NoopCommand | KVCommand | TxnCommand
           | SessionCreateCommand | SessionDestroyCommand | TombstoneReapCommand | RestoreCommand)

_KV_FIELDS = ("verb", "key", "value", "flags", "index", "session", "fence")


def _op_record(op: KVOp) -> list:
    return [getattr(op, f) for f in _KV_FIELDS]


def _op_from(record: list) -> KVOp:
    verb, key, value, flags, index, session, fence = record
    return KVOp(str(verb), str(key), bytes(value), int(flags), int(index), str(session), str(fence))


_ROW_TYPES: dict[str, type[Node] | type[NodeService] | type[HealthCheck]] = {
    "Node": Node, "Service": NodeService, "Check": HealthCheck}


def _txn_op_record(op: KVOp | CatalogOp) -> list | dict:
    if isinstance(op, KVOp):
        return _op_record(op)
    return {"kind": op.kind, "verb": op.verb, "node": op.node, "row": op.row.to_record(), "index": op.index}


def _txn_op_from(record: list | dict) -> KVOp | CatalogOp:
    if isinstance(record, list):
        return _op_from(record)
    kind = str(record["kind"])
    row = _ROW_TYPES[kind].from_record(record["row"])
    return CatalogOp(kind, str(record["verb"]), str(record["node"]), row, int(record["index"]))


def encode(command: Command) -> bytes:
    if isinstance(command, RegisterCommand):
        record: dict = {
            "t": "register",
            "node": command.node.to_record(),
            "service": command.service.to_record() if command.service else None,
            "checks": [c.to_record() for c in command.checks],
            "skip_node_update": command.skip_node_update,
        }
    elif isinstance(command, DeregisterCommand):
        record = {"t": "deregister", "node": command.node, "service_id": command.service_id,
                  "check_id": command.check_id}
    elif isinstance(command, NoopCommand):
        record = {"t": "noop"}
    elif isinstance(command, KVCommand):
        record = {"t": "kv", "op": _op_record(command.op)}
    elif isinstance(command, TxnCommand):
        record = {"t": "txn", "ops": [_txn_op_record(op) for op in command.ops]}
    elif isinstance(command, SessionCreateCommand):
        record = {"t": "session-create", "id": command.id, "node": command.node, "name": command.name,
                  "lock_delay_ns": command.lock_delay_ns, "behavior": command.behavior,
                  "ttl": command.ttl, "node_checks": list(command.node_checks),
                  "service_checks": list(command.service_checks)}
    elif isinstance(command, SessionDestroyCommand):
        record = {"t": "session-destroy", "id": command.id}
    elif isinstance(command, TombstoneReapCommand):
        record = {"t": "tombstone-reap", "up_to": command.up_to}
    elif isinstance(command, RestoreCommand):
        record = {"t": "restore", "snapshot": command.snapshot}
    else:  # pragma: no cover - the type checker forbids this
        raise CommandError(f"not a command: {command!r}")
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> Command:
    try:
        record = msgpack.unpackb(data, raw=False)
        kind = record["t"]
        if kind == "register":
            service = record["service"]
            return RegisterCommand(
                node=Node.from_record(record["node"]),
                service=NodeService.from_record(service) if service else None,
                checks=[HealthCheck.from_record(c) for c in record["checks"]],
                skip_node_update=bool(record["skip_node_update"]),
            )
        if kind == "deregister":
            return DeregisterCommand(record["node"], record["service_id"], record["check_id"])
        if kind == "noop":
            return NoopCommand()
        if kind == "kv":
            return KVCommand(_op_from(record["op"]))
        if kind == "txn":
            return TxnCommand([_txn_op_from(r) for r in record["ops"]])
        if kind == "session-create":
            return SessionCreateCommand(
                id=record["id"], node=record["node"], name=record["name"],
                lock_delay_ns=int(record["lock_delay_ns"]), behavior=record["behavior"],
                ttl=record["ttl"], node_checks=list(record["node_checks"]),
                service_checks=list(record["service_checks"]))
        if kind == "session-destroy":
            return SessionDestroyCommand(record["id"])
        if kind == "tombstone-reap":
            return TombstoneReapCommand(int(record["up_to"]))
        if kind == "restore":
            return RestoreCommand(bytes(record["snapshot"]))
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise CommandError(f"undecodable command: {exc}") from exc
    raise CommandError(f"unknown command type {kind!r}")
