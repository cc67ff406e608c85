"""The catalog state store: tables, secondary indexes, modify indexes, watchers (layer 1, pure).

Contract:
- Written only by the FSM, synchronously, with the Raft log index: `ensure_registration`,
  `deregister`, `advance` (a log entry that changes nothing). A command is atomic: it is validated
  fully before anything is touched, and a `CatalogError` (a `BadRequest`) leaves the store unchanged.
- Rows follow Consul (reference §2.2, §2.3, §3): a re-registered node or service keeps its
  create_index; `skip_node_update` leaves an existing node alone; a check's service_name/tags come
  from its service row and follow it; deregistering a node/service removes what hangs off it;
  deregistering something missing is a no-op. A write equal to the stored row apart from indexes
  changes nothing: no index moves and no watcher wakes.
- Every read returns `(index, answer)`; index = max(1, modify index of the watch key it depends on).
  Key indexes never decrease; deleted keys keep their last index (tombstones).
- `watch(keys, callback)` calls `callback(index)` once, at the end of the first apply that changes a
  key. Reads of one service cost O(its instances): secondary indexes by service name, node and
  (node, service id); rows are immutable and shared with readers, who must not mutate them.
  `abandon(index)` wakes every watcher when the store is replaced by a restored one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields, replace

from agent.catalog import snapshot as snap
from agent.catalog.commands import DeregisterCommand, RegisterCommand
from agent.catalog.watch import (
    CHECKS,
    DEFAULT_HISTORY,
    NODES,
    SERVICES,
    Change,
    ChangeLog,
    Watchers,
    WatchHandle,
    node_key,
    service_key,
)
from agent.errors import BadRequest
from agent.types import HealthCheck, Node, NodeService
from checks.definition import Status

__all__ = ["CatalogError", "Change", "StateStore", "WatchHandle", "node_key", "service_key"]

_INDEX_FIELDS = ("create_index", "modify_index")
_NODE_FIELDS = tuple(f.name for f in fields(Node) if f.name not in _INDEX_FIELDS)
_SERVICE_FIELDS = tuple(f.name for f in fields(NodeService) if f.name not in _INDEX_FIELDS)
CHECK_STATES = ("any", *(str(s) for s in Status))

Ref = tuple[str, str]  # (node name, service id or check id)


class CatalogError(BadRequest):
    """A catalog write that cannot be applied (e.g. a check for a missing service)."""


def _same(a: object, b: object, names: tuple[str, ...]) -> bool:
    return all(getattr(a, n) == getattr(b, n) for n in names)


class StateStore:
    def __init__(self, history: int = DEFAULT_HISTORY):
        self.last_index = 0
        self._history = history
        self._nodes: dict[str, Node] = {}
        self._services: dict[str, dict[str, NodeService]] = {}  # node -> service id -> row
        self._checks: dict[str, dict[str, HealthCheck]] = {}  # node -> check id -> row
        self._instances: dict[str, set[Ref]] = {}  # service name -> {(node, service id)}
        self._tags: dict[str, dict[str, int]] = {}  # service name -> tag -> instances carrying it
        self._check_ids: dict[Ref, set[str]] = {}  # (node, service id or "") -> check ids
        self._by_status: dict[Status, set[Ref]] = {s: set() for s in Status}  # -> (node, check id)
        self._key_index: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._watchers = Watchers()
        self._log = ChangeLog(history)
        self._nodes_view: list[Node] | None = None
        self._services_view: dict[str, list[str]] | None = None

    # ------------------------------------------------------------------ writes (FSM only)

    def advance(self, index: int) -> None:
        """Record that log entry `index` was applied without changing the catalog."""
        self.last_index = max(self.last_index, index)

    def ensure_registration(self, index: int, cmd: RegisterCommand) -> None:
        node, service, checks = self._validate(cmd)
        if not cmd.skip_node_update or node.node not in self._nodes:
            self._put_node(index, node)
        if service is not None:
            self._put_service(index, node.node, service)
        for check in checks:
            self._put_check(index, node.node, check)
        self._commit(index)

    def deregister(self, index: int, cmd: DeregisterCommand) -> None:
        name = cmd.node
        if cmd.service_id:
            if cmd.service_id in self._services.get(name, {}):
                self._remove_service(name, cmd.service_id)
        elif cmd.check_id:
            if cmd.check_id in self._checks.get(name, {}):
                self._remove_check(name, cmd.check_id)
        elif name in self._nodes:
            self._remove_node(name)
        self._commit(index)

    def _validate(self, cmd: RegisterCommand) -> tuple[Node, NodeService | None, list[HealthCheck]]:
        node = cmd.node
        if not node.node:
            raise CatalogError("Must provide node")
        if not node.address and not cmd.skip_node_update:
            raise CatalogError("Must provide address if SkipNodeUpdate is not set")
        service = cmd.service
        if service is not None:
            if not service.service:
                raise CatalogError("Must provide service name")
            if not service.id:
                service = replace(service, id=service.service)
        existing = self._services.get(node.node, {})
        checks: dict[str, HealthCheck] = {}  # by check id: the last of duplicate ids wins
        for check in cmd.checks:
            if check.node and check.node != node.node:
                raise CatalogError(f"Check node {check.node!r} does not match node {node.node!r}")
            check_id = check.check_id or check.name
            if not check_id:
                raise CatalogError("Must provide check ID or name")
            try:
                status = Status(check.status) if check.status else Status.CRITICAL
            except ValueError:
                raise CatalogError(f"Invalid check status {check.status!r}") from None
            sid = check.service_id
            if sid and sid not in existing and (service is None or service.id != sid):
                raise CatalogError(f"Missing service registration for check {check_id!r}: "
                                   f"no service {sid!r} on node {node.node!r}")
            checks.pop(check_id, None)
            checks[check_id] = replace(check, node=node.node, check_id=check_id, status=status)
        return node, service, list(checks.values())

    def _put_node(self, index: int, new: Node) -> None:
        old = self._nodes.get(new.node)
        if old is not None and _same(old, new, _NODE_FIELDS):
            return
        created = index if old is None else old.create_index
        self._nodes[new.node] = replace(new, create_index=created, modify_index=index)
        self._dirty.update((NODES, node_key(new.node)))
        self._dirty.update(self._service_keys_of(new.node))

    def _put_service(self, index: int, node: str, new: NodeService) -> None:
        table = self._services.setdefault(node, {})
        old = table.get(new.id)
        if old is not None and _same(old, new, _SERVICE_FIELDS):
            return
        row = replace(new, create_index=index if old is None else old.create_index, modify_index=index)
        table[row.id] = row
        ref = (node, row.id)
        if old is None:
            self._add_instance(row.service, ref, row.tags)
        elif old.service != row.service:
            self._drop_instance(old.service, ref, old.tags)
            self._add_instance(row.service, ref, row.tags)
            self._dirty.add(service_key(old.service))
        else:
            self._retag(row.service, old.tags, row.tags)
        self._dirty.update((node_key(node), service_key(row.service)))
        if old is not None and (old.service != row.service or old.tags != row.tags):
            for check_id in self._check_ids.get(ref, ()):
                checks = self._checks[node]
                checks[check_id] = replace(checks[check_id], service_name=row.service,
                                           service_tags=row.tags, modify_index=index)
                self._dirty.add(CHECKS)

    def _put_check(self, index: int, node: str, new: HealthCheck) -> None:
        if new.service_id:
            service = self._services[node][new.service_id]
            if new.service_name != service.service or new.service_tags != service.tags:
                new = replace(new, service_name=service.service, service_tags=service.tags)
        elif new.service_name or new.service_tags:
            new = replace(new, service_name="", service_tags=())
        table = self._checks.setdefault(node, {})
        old = table.get(new.check_id)
        if old is not None and old.same_state(new):
            return
        created = index if old is None else old.create_index
        row = replace(new, create_index=created, modify_index=index)
        table[row.check_id] = row
        if old is not None:
            self._unindex_check(old)
        self._index_check(row)

    def _remove_check(self, node: str, check_id: str) -> None:
        table = self._checks[node]
        row = table.pop(check_id)
        if not table:
            del self._checks[node]
        self._unindex_check(row)

    def _remove_service(self, node: str, service_id: str) -> None:
        for check_id in sorted(self._check_ids.get((node, service_id), ())):
            self._remove_check(node, check_id)
        table = self._services[node]
        row = table.pop(service_id)
        if not table:
            del self._services[node]
        self._drop_instance(row.service, (node, service_id), row.tags)
        self._dirty.update((node_key(node), service_key(row.service)))

    def _remove_node(self, node: str) -> None:
        for check_id in sorted(self._checks.get(node, ())):
            self._remove_check(node, check_id)
        for service_id in sorted(self._services.get(node, ())):
            self._remove_service(node, service_id)
        del self._nodes[node]
        self._dirty.update((NODES, node_key(node)))

    # --- secondary indexes

    def _service_keys_of(self, node: str) -> set[str]:
        return {service_key(s.service) for s in self._services.get(node, {}).values()}

    def _check_keys(self, row: HealthCheck) -> Iterable[str]:
        if row.service_id:
            return (CHECKS, node_key(row.node), service_key(row.service_name))
        return (CHECKS, node_key(row.node), *self._service_keys_of(row.node))

    def _index_check(self, row: HealthCheck) -> None:
        self._check_ids.setdefault((row.node, row.service_id), set()).add(row.check_id)
        self._by_status[row.status].add((row.node, row.check_id))
        self._dirty.update(self._check_keys(row))

    def _unindex_check(self, row: HealthCheck) -> None:
        scope = (row.node, row.service_id)
        ids = self._check_ids[scope]
        ids.discard(row.check_id)
        if not ids:
            del self._check_ids[scope]
        self._by_status[row.status].discard((row.node, row.check_id))
        self._dirty.update(self._check_keys(row))

    def _add_instance(self, name: str, ref: Ref, tags: tuple[str, ...]) -> None:
        refs = self._instances.get(name)
        if refs is None:
            refs = self._instances[name] = set()
            self._tags[name] = {}
            self._dirty.add(SERVICES)
        refs.add(ref)
        self._retag(name, (), tags)

    def _drop_instance(self, name: str, ref: Ref, tags: tuple[str, ...]) -> None:
        self._retag(name, tags, ())
        refs = self._instances[name]
        refs.discard(ref)
        if not refs:
            del self._instances[name]
            del self._tags[name]
            self._dirty.add(SERVICES)

    def _retag(self, name: str, old_tags: Iterable[str], new_tags: Iterable[str]) -> None:
        counts = self._tags[name]
        old, new = set(old_tags), set(new_tags)
        for tag in new - old:
            seen = counts.get(tag, 0)
            counts[tag] = seen + 1
            if not seen:
                self._dirty.add(SERVICES)
        for tag in old - new:
            left = counts[tag] - 1
            if left:
                counts[tag] = left
            else:
                del counts[tag]
                self._dirty.add(SERVICES)

    def _commit(self, index: int) -> None:
        self.advance(index)
        if not self._dirty:
            return
        keys = frozenset(self._dirty)
        self._dirty = set()
        for key in keys:
            if self._key_index.get(key, 0) < index:
                self._key_index[key] = index
        if NODES in keys:
            self._nodes_view = None
        if SERVICES in keys:
            self._services_view = None
        self._log.append(Change(index, keys))
        self._watchers.fire(keys, index)

    # ------------------------------------------------------------------ reads

    def index_of(self, *keys: str) -> int:
        """Max modify index of these watch keys (0 if none of them was ever written)."""
        return max((self._key_index.get(k, 0) for k in keys), default=0)

    def _index(self, key: str) -> int:
        return max(1, self._key_index.get(key, 0))

    def nodes(self) -> tuple[int, list[Node]]:
        if self._nodes_view is None:
            self._nodes_view = [self._nodes[n] for n in sorted(self._nodes)]
        return self._index(NODES), list(self._nodes_view)

    def node(self, name: str) -> tuple[int, Node | None, list[NodeService]]:
        services = self._services.get(name, {})
        return self._index(node_key(name)), self._nodes.get(name), [services[s] for s in sorted(services)]

    def services(self) -> tuple[int, dict[str, list[str]]]:
        if self._services_view is None:
            self._services_view = {name: sorted(self._tags[name]) for name in sorted(self._instances)}
        return self._index(SERVICES), {name: list(tags) for name, tags in self._services_view.items()}

    def service_nodes(self, service: str) -> tuple[int, list[tuple[Node, NodeService]]]:
        refs = sorted(self._instances.get(service, ()))
        return self._index(service_key(service)), [(self._nodes[n], self._services[n][s]) for n, s in refs]

    def check_service_nodes(
        self, service: str
    ) -> tuple[int, list[tuple[Node, NodeService, list[HealthCheck]]]]:
        out = []
        for node, sid in sorted(self._instances.get(service, ())):
            checks = self._checks.get(node, {})
            ids = self._check_ids.get((node, ""), set()) | self._check_ids.get((node, sid), set())
            out.append((self._nodes[node], self._services[node][sid], [checks[c] for c in sorted(ids)]))
        return self._index(service_key(service)), out

    def node_checks(self, node: str) -> tuple[int, list[HealthCheck]]:
        checks = self._checks.get(node, {})
        return self._index(node_key(node)), [checks[c] for c in sorted(checks)]

    def service_checks(self, service: str) -> tuple[int, list[HealthCheck]]:
        out = []
        for node, sid in sorted(self._instances.get(service, ())):
            checks = self._checks.get(node, {})
            out.extend(checks[c] for c in sorted(self._check_ids.get((node, sid), ())))
        return self._index(service_key(service)), out

    def checks_in_state(self, state: str) -> tuple[int, list[HealthCheck]]:
        """Checks with this status ("any" = all), sorted by (node, check id)."""
        if state == "any":
            refs: Iterable[Ref] = ((n, c) for n, table in self._checks.items() for c in table)
        elif state in CHECK_STATES:
            refs = self._by_status[Status(state)]
        else:
            raise BadRequest(f"Invalid check state {state!r}: want one of {', '.join(CHECK_STATES)}")
        return self._index(CHECKS), [self._checks[n][c] for n, c in sorted(refs)]

    def node_row(self, name: str) -> Node | None:
        return self._nodes.get(name)

    def node_service(self, node: str, service_id: str) -> NodeService | None:
        return self._services.get(node, {}).get(service_id)

    def check(self, node: str, check_id: str) -> HealthCheck | None:
        return self._checks.get(node, {}).get(check_id)

    # ------------------------------------------------------------------ watching and history

    def watch(self, keys: Iterable[str], callback: Callable[[int], None]) -> WatchHandle:
        """Call `callback(index)` once, at the end of the first apply changing any of `keys`."""
        return self._watchers.add(keys, callback)

    def abandon(self, index: int) -> None:
        """Wake every watcher: this store is being replaced (snapshot restore); readers re-read."""
        self._watchers.fire_all(index)

    @property
    def watchers(self) -> Watchers:
        return self._watchers

    @property
    def history_floor(self) -> int:
        """The oldest index `changes_since` can still answer from."""
        return self._log.floor

    def changes_since(self, index: int) -> list[Change] | None:
        """Changes with an index above `index`, oldest first; None if the history no longer reaches."""
        return self._log.since(index)

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict:
        services = ((n, s) for n, table in self._services.items() for s in table.values())
        checks = (c for table in self._checks.values() for c in table.values())
        return snap.dump(self.last_index, self._nodes.values(), services, checks, self._key_index)

    @classmethod
    def restore(cls, data: dict, history: int = DEFAULT_HISTORY) -> StateStore:
        """A new store holding a snapshot's rows and indexes (raises `SnapshotError`)."""
        rows = snap.load(data)
        store = cls(history)
        for node in rows.nodes:
            store._nodes[node.node] = node
        for node_name, service in rows.services:
            if node_name not in store._nodes:
                raise snap.SnapshotError(f"service {service.id!r} on unknown node {node_name!r}")
            store._services.setdefault(node_name, {})[service.id] = service
            store._add_instance(service.service, (node_name, service.id), service.tags)
        for check in rows.checks:
            if check.node not in store._nodes or (
                check.service_id and check.service_id not in store._services.get(check.node, {})
            ):
                raise snap.SnapshotError(f"check {check.check_id!r} on unknown node or service")
            store._checks.setdefault(check.node, {})[check.check_id] = check
            store._index_check(check)
        store._dirty.clear()
        store._key_index = dict(rows.key_index)
        store.last_index = rows.last_index
        store._log = ChangeLog(history, floor=rows.last_index)
        return store
