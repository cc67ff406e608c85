"""The catalog FSM: applies committed Raft log entries to the state store (layer 1, pure).

Contract:
- `CatalogFSM(store=None)`; `fsm.store` is the current `StateStore`, `fsm.kv` the `KVStore` and
  `fsm.sessions` the `SessionTable` (all replaced by `restore`, so hold the FSM, not the tables,
  across restores).
- `apply(index, data)` decodes one log entry (`commands.decode`) and applies it synchronously.
  It returns the command's result (KV writes: True/False; txn: `TxnResult`; session create: the
  `Session`; otherwise None), or raises `CatalogError`/`KVOpError`/`SessionError` (a rejected
  command) / `CommandError` (undecodable bytes); either way the tables are unchanged by a failed
  entry, but `store.last_index` still advances to `index` (the entry was applied, with an error
  result), as does a `NoopCommand`.
- A `TxnCommand` (KV and catalog ops) applies all or nothing through `txnops.apply_txn`.
- After every catalog write the sessions of the touched node are checked: a session whose node is
  gone or whose linked check is missing or critical is invalidated in the same entry. Keys released
  by an invalidation are reported to `on_lock_delay(key, delay_ns)` (the driver enforces lock-delay
  on its own clock; nothing time-dependent happens here).
- `snapshot() -> bytes` (msgpack of `StateStore.snapshot()` plus "kv" and "sessions"); `restore(data)`
  replaces the tables and raises `SnapshotError` for bytes that are not a snapshot (the old tables
  are kept then); on success every watcher of the old tables fires with the restored last_index.
- A `RestoreCommand` applied at log index N restores its snapshot rebased to N: last_index, every
  watch-key and table index (the old tables' keys included) become N and the change histories
  start at N, so indexes never go back and a watcher older than N gets "history gone", never a
  silent gap. Row Create/Modify indexes are kept as in the snapshot. A bad snapshot is a
  `SnapshotError` result and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from agent.catalog import kvops, txnops
from agent.catalog.commands import (
    DeregisterCommand,
    KVCommand,
    NoopCommand,
    RegisterCommand,
    RestoreCommand,
    SessionCreateCommand,
    SessionDestroyCommand,
    TombstoneReapCommand,
    TxnCommand,
    decode,
)
from agent.catalog.kv import KVStore
from agent.catalog.sessions import SessionTable
from agent.catalog.snapshot import SnapshotError
from agent.catalog.store import StateStore


class CatalogFSM:
    def __init__(self, store: StateStore | None = None):
        self.store = store if store is not None else StateStore()
        self.kv = KVStore()
        self.sessions = SessionTable()
        self.on_lock_delay: Callable[[str, int], None] | None = None

    @property
    def last_index(self) -> int:
        return self.store.last_index

    def apply(self, index: int, data: bytes) -> object:
        try:
            command = decode(data)
            if isinstance(command, RegisterCommand):
                self.store.ensure_registration(index, command)
                self._check_sessions(index, command.node.node)
            elif isinstance(command, DeregisterCommand):
                self.store.deregister(index, command)
                self._check_sessions(index, command.node)
            elif isinstance(command, KVCommand):
                return kvops.apply_kv(index, self.kv, self.sessions, command.op)
            elif isinstance(command, TxnCommand):
                result, touched = txnops.apply_txn(index, self.store, self.kv, self.sessions, command.ops)
                for node in sorted(touched):
                    self._check_sessions(index, node)
                return result
            elif isinstance(command, SessionCreateCommand):
                return kvops.create_session(index, self.store, self.sessions, command)
            elif isinstance(command, SessionDestroyCommand):
                self._delayed(kvops.invalidate(index, self.kv, self.sessions, command.id))
            elif isinstance(command, TombstoneReapCommand):
                return self.kv.reap(command.up_to)
            elif isinstance(command, RestoreCommand):
                self.restore(command.snapshot, at_index=index)
            elif isinstance(command, NoopCommand):
                pass
        finally:
            self.store.advance(index)
        return None

    def _check_sessions(self, index: int, node: str) -> None:
        if self.sessions.by_node(node):
            self._delayed(kvops.check_sessions(index, self.store, self.kv, self.sessions, node))

    def _delayed(self, keys: list[tuple[str, int]]) -> None:
        if self.on_lock_delay is not None:
            for key, delay_ns in keys:
                self.on_lock_delay(key, delay_ns)

    def snapshot(self) -> bytes:
        record = self.store.snapshot()
        record["kv"] = self.kv.snapshot()
        record["sessions"] = self.sessions.snapshot()
        return msgpack.packb(record, use_bin_type=True)

    def restore(self, data: bytes, at_index: int = 0) -> None:
        try:
            record = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise SnapshotError(f"undecodable catalog snapshot: {exc}") from exc
        if at_index > 0:
            self._rebase(record, at_index)
        store = StateStore.restore(record)
        try:
            kv = KVStore.restore(record.get("kv"), store.last_index)
            sessions = SessionTable.restore(record.get("sessions"))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise SnapshotError(f"corrupt KV or sessions in snapshot: {exc}") from exc
        old = (self.store, self.kv, self.sessions)
        self.store, self.kv, self.sessions = store, kv, sessions
        for table in old:  # blocked readers wake and re-read from the new tables
            table.abandon(store.last_index)

    def _rebase(self, record: object, index: int) -> None:
        """Make a snapshot record restore as of log index `index` (see the contract)."""
        if not isinstance(record, dict) or not isinstance(record.get("indexes"), dict):
            return  # not a snapshot: StateStore.restore says so
        try:
            index = max(index, int(record.get("last_index", 0)))
        except (TypeError, ValueError) as exc:
            raise SnapshotError(f"corrupt catalog snapshot: {exc}") from exc
        keys = set(record["indexes"]) | set(self.store.snapshot()["indexes"])
        record["last_index"] = index
        record["indexes"] = {key: index for key in keys}
        for table in ("kv", "sessions"):
            if isinstance(record.get(table), dict):
                record[table]["table_index"] = index
