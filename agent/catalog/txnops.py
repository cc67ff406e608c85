"""Transactions mixing KV and catalog (Node, Service, Check) verbs (layer 1, pure).

Contract (reference §4.6):
- `apply_txn(index, store, kv, sessions, ops) -> (TxnResult, touched nodes)`: every op is
  evaluated in order, then either all of them apply or none does. Catalog verbs are `set`, `cas`,
  `get`, `delete`, `delete-cas`; they run first against a scratch `StateStore` holding only the
  nodes the transaction names (so later ops see earlier ones, and the store's own validation in
  `ensure_registration`/`deregister` decides what is valid), and only when no op failed — KV or
  catalog — are the same commands replayed on the real store and the KV stage committed. A
  failing op is `(op index, what)` with Consul's wording; then nothing changes. The touched nodes
  are returned so the FSM can check their sessions.
- `read_txn(store, kv, sessions, ops)`: a transaction of read verbs only (`is_read_only`),
  evaluated against the current state. Results are the rows after the op (`get`, `set`, `cas`);
  deletes produce none.
"""

from __future__ import annotations

import json

from agent.catalog import kvops
from agent.catalog import snapshot as snap
from agent.catalog.commands import CatalogOp, DeregisterCommand, KVOp, RegisterCommand
from agent.catalog.kv import KVStore
from agent.catalog.kvops import TxnResult, TxnRow
from agent.catalog.sessions import SessionTable
from agent.catalog.store import CatalogError, StateStore
from agent.types import HealthCheck, Node, NodeService

CATALOG_KINDS = ("Node", "Service", "Check")
CATALOG_VERBS = frozenset({"set", "cas", "get", "delete", "delete-cas"})
Op = KVOp | CatalogOp
StoreCommand = RegisterCommand | DeregisterCommand


class _OpFailed(Exception):
    """A catalog op that cannot apply (internal; becomes a txn error)."""


def _q(text: str) -> str:
    return json.dumps(text)


def is_read_only(ops: list[Op]) -> bool:
    return all(op.verb in kvops.READ_VERBS if isinstance(op, KVOp) else op.verb == "get" for op in ops)


def _scratch(store: StateStore, names: set[str]) -> StateStore:
    """A store holding just these nodes' rows (with their indexes)."""
    nodes: list[Node] = []
    services: list[tuple[str, NodeService]] = []
    checks: list[HealthCheck] = []
    for name in names:
        _, row, node_services = store.node(name)
        if row is None:
            continue
        nodes.append(row)
        services.extend((name, s) for s in node_services)
        checks.extend(store.node_checks(name)[1])
    return StateStore.restore(snap.dump(store.last_index, nodes, services, checks, {}), history=1)


def _current(store: StateStore, op: CatalogOp) -> Node | NodeService | HealthCheck | None:
    if op.kind == "Node":
        return store.node_row(op.node)
    if op.kind == "Service":
        assert isinstance(op.row, NodeService)
        return store.node_service(op.node, op.row.id)
    assert isinstance(op.row, HealthCheck)
    return store.check(op.node, op.row.check_id)


def _what(op: CatalogOp) -> str:
    if isinstance(op.row, NodeService):
        return f"service {_q(op.row.id)} on node {_q(op.node)}"
    if isinstance(op.row, HealthCheck):
        return f"check {_q(op.row.check_id)} on node {_q(op.node)}"
    return f"node {_q(op.node)}"


def _register(store: StateStore, op: CatalogOp) -> RegisterCommand:
    if isinstance(op.row, Node):
        return RegisterCommand(node=op.row)
    node = store.node_row(op.node)
    if isinstance(op.row, NodeService):
        if node is None:
            raise _OpFailed("failed inserting service: Missing node registration")
        return RegisterCommand(node=node, service=op.row, skip_node_update=True)
    if node is None:
        raise _OpFailed("Missing node registration")
    return RegisterCommand(node=node, checks=[op.row], skip_node_update=True)


def _deregister(op: CatalogOp) -> DeregisterCommand:
    if isinstance(op.row, NodeService):
        return DeregisterCommand(op.node, service_id=op.row.id)
    if isinstance(op.row, HealthCheck):
        return DeregisterCommand(op.node, check_id=op.row.check_id)
    return DeregisterCommand(op.node)


def _apply_command(index: int, store: StateStore, command: StoreCommand) -> None:
    if isinstance(command, RegisterCommand):
        store.ensure_registration(index, command)
    else:
        store.deregister(index, command)


def _run_catalog(index: int, store: StateStore, op: CatalogOp,
                 staged: list[StoreCommand]) -> list[tuple[TxnRow, bool]]:
    """Apply one catalog op to `store` (a scratch store for writes); raises `_OpFailed`."""
    if op.verb not in CATALOG_VERBS:
        raise _OpFailed(f"unknown {op.kind} verb {_q(op.verb)}")
    current = _current(store, op)
    if op.verb == "get":
        if current is None:
            raise _OpFailed(f"{_what(op)} doesn't exist")
        return [(current, True)]
    if op.verb == "cas" and ((op.index == 0 and current is not None) or (
            op.index != 0 and (current is None or current.modify_index != op.index))):
        raise _OpFailed(f"failed to set {_what(op)}, index is stale")
    if op.verb == "delete-cas" and (current is None or current.modify_index != op.index):
        raise _OpFailed(f"failed to delete {_what(op)}, index is stale")
    command: StoreCommand = _register(store, op) if op.verb in ("set", "cas") else _deregister(op)
    try:
        _apply_command(index, store, command)
    except CatalogError as exc:
        raise _OpFailed(str(exc)) from None
    staged.append(command)
    if isinstance(command, DeregisterCommand):
        return []
    row = _current(store, op)
    assert row is not None
    return [(row, True)]


def _evaluate(index: int, store: StateStore, kv: KVStore, sessions: SessionTable,
              ops: list[Op], staged: list[StoreCommand]) -> TxnResult:
    out = TxnResult()
    for position, op in enumerate(ops):
        try:
            if isinstance(op, KVOp):
                out.results.extend(kvops.run_op(index, kv, sessions, op))
            else:
                out.results.extend(_run_catalog(index, store, op, staged))
        except (_OpFailed, *kvops.OP_ERRORS) as exc:
            out.errors.append((position, str(exc)))
    return out


def apply_txn(index: int, store: StateStore, kv: KVStore, sessions: SessionTable,
              ops: list[Op]) -> tuple[TxnResult, set[str]]:
    names = {op.node for op in ops if isinstance(op, CatalogOp)}
    writes = not is_read_only([op for op in ops if isinstance(op, CatalogOp)])
    scratch = _scratch(store, names) if writes else store
    staged: list[StoreCommand] = []
    try:
        out = _evaluate(index, scratch, kv, sessions, ops, staged)
        if out.errors:
            kv.rollback()
            out.results = []
            return out, set()
        for command in staged:  # validated on identical rows: cannot fail here
            _apply_command(index, store, command)
    except BaseException:
        kv.rollback()
        raise
    kv.commit(index)
    return out, {c.node.node if isinstance(c, RegisterCommand) else c.node for c in staged}


def read_txn(store: StateStore, kv: KVStore, sessions: SessionTable, ops: list[Op]) -> TxnResult:
    if not is_read_only(ops):
        raise kvops.KVOpError("read_txn given a write op")
    return _evaluate(0, store, kv, sessions, ops, [])
