"""The sessions table (reference §5) (layer 1, pure).

Contract:
- `Session` is one row, rendered by `to_api()` as Consul's session object (`LockDelay` in ns).
- `SessionTable` is written only by the FSM path (`add`, `remove`, each followed by `commit(index)`);
  reads return `(index, answer)` where index is the sessions table index (max 1).
- Watch keys: `SESSIONS` (any change), `session_key(id)`, `node_sessions_key(node)`; `watch(keys,
  callback)` is a one-shot watcher fired by the commit that changes one of them.
- `by_node(node)` and `by_check(node, check_id)` are secondary indexes used for invalidation.
- Validation that needs the catalog (node and checks must exist and not be critical) lives in
  `agent.catalog.kvops`; this module knows no catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

from agent.catalog.watch import Watchers, WatchHandle

SESSIONS = "sessions"
BEHAVIORS = ("release", "delete")


def session_key(session_id: str) -> str:
    return f"session.{session_id}"


def node_sessions_key(node: str) -> str:
    return f"sessions.node.{node}"


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    node: str
    name: str = ""
    lock_delay_ns: int = 15_000_000_000
    behavior: str = "release"
    ttl: str = ""
    node_checks: tuple[str, ...] = ("serfHealth",)
    service_checks: tuple[str, ...] = ()
    create_index: int = 0
    modify_index: int = 0

    @property
    def checks(self) -> tuple[str, ...]:
        return self.node_checks + self.service_checks

    def to_api(self) -> dict[str, object]:
        return {
            "ID": self.id,
            "Name": self.name,
            "Node": self.node,
            "LockDelay": self.lock_delay_ns,
            "Behavior": self.behavior,
            "TTL": self.ttl,
            "NodeChecks": list(self.node_checks),
            "ServiceChecks": [{"ID": c, "Namespace": ""} for c in self.service_checks] or None,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    def to_record(self) -> dict[str, object]:
        record = asdict(self)
        record["node_checks"] = list(self.node_checks)
        record["service_checks"] = list(self.service_checks)
        return record

    @classmethod
    def from_record(cls, record: dict) -> Session:
        return cls(**{**record, "node_checks": tuple(record["node_checks"]),
                      "service_checks": tuple(record["service_checks"])})


class SessionTable:
    def __init__(self) -> None:
        self.table_index = 0
        self._rows: dict[str, Session] = {}
        self._by_node: dict[str, set[str]] = {}
        self._by_check: dict[tuple[str, str], set[str]] = {}
        self._dirty: set[str] = set()
        self._watchers = Watchers()

    # ------------------------------------------------------------------ writes (FSM path only)

    def add(self, row: Session) -> None:
        self._rows[row.id] = row
        self._by_node.setdefault(row.node, set()).add(row.id)
        for check in row.checks:
            self._by_check.setdefault((row.node, check), set()).add(row.id)
        self._dirty.update((SESSIONS, session_key(row.id), node_sessions_key(row.node)))

    def remove(self, session_id: str) -> Session | None:
        row = self._rows.pop(session_id, None)
        if row is None:
            return None
        _discard(self._by_node, row.node, row.id)
        for check in row.checks:
            _discard(self._by_check, (row.node, check), row.id)
        self._dirty.update((SESSIONS, session_key(row.id), node_sessions_key(row.node)))
        return row

    def commit(self, index: int) -> None:
        if not self._dirty:
            return
        keys, self._dirty = self._dirty, set()
        self.table_index = max(self.table_index, index)
        self._watchers.fire(keys, index)

    # ------------------------------------------------------------------ reads

    def get(self, session_id: str) -> Session | None:
        return self._rows.get(session_id)

    def info(self, session_id: str) -> tuple[int, list[Session]]:
        row = self._rows.get(session_id)
        return max(1, self.table_index), [row] if row else []

    def all(self) -> tuple[int, list[Session]]:
        return max(1, self.table_index), [self._rows[i] for i in sorted(self._rows)]

    def node(self, node: str) -> tuple[int, list[Session]]:
        return max(1, self.table_index), [self._rows[i] for i in sorted(self._by_node.get(node, ()))]

    def by_node(self, node: str) -> list[str]:
        return sorted(self._by_node.get(node, ()))

    def by_check(self, node: str, check_id: str) -> list[str]:
        return sorted(self._by_check.get((node, check_id), ()))

    def __len__(self) -> int:
        return len(self._rows)

    def watch(self, keys: Iterable[str], callback: Callable[[int], None]) -> WatchHandle:
        return self._watchers.add(keys, callback)

    def abandon(self, index: int) -> None:
        self._watchers.fire_all(index)

    # ------------------------------------------------------------------ snapshot

    def snapshot(self) -> dict:
        return {"table_index": self.table_index,
                "rows": [self._rows[i].to_record() for i in sorted(self._rows)]}

    @classmethod
    def restore(cls, data: dict | None) -> SessionTable:
        table = cls()
        if data:
            table.table_index = int(data["table_index"])
            for record in data["rows"]:
                table.add(Session.from_record(record))
            table._dirty.clear()
        return table


def _discard(index: dict, key: object, value: str) -> None:
    group = index.get(key)
    if group is not None:
        group.discard(value)
        if not group:
            del index[key]
