"""The catalog FSM: applies committed Raft log entries to the state store (layer 1, pure).

Contract:
- `CatalogFSM(store=None)`; `fsm.store` is the current `StateStore` (replaced by `restore`, so hold
  the FSM, not the store, across restores).
- `apply(index, data)` decodes one log entry (`commands.decode`) and applies it synchronously.
  It returns None, or raises `CatalogError` (a rejected command) / `CommandError` (undecodable
  bytes); either way the store's data is unchanged by a failed entry, but `store.last_index`
  still advances to `index` (the entry was applied, with an error result), as does a `NoopCommand`.
- `snapshot() -> bytes` (msgpack of `StateStore.snapshot()`); `restore(data)` replaces the store
  and raises `SnapshotError` for bytes that are not a snapshot (the old store is kept then); on
  success every watcher of the old store fires with the restored last_index (Consul's abandon).
"""

from __future__ import annotations

import msgpack

from agent.catalog.commands import DeregisterCommand, NoopCommand, RegisterCommand, decode
from agent.catalog.snapshot import SnapshotError
from agent.catalog.store import StateStore


class CatalogFSM:
    def __init__(self, store: StateStore | None = None):
        self.store = store if store is not None else StateStore()

    @property
    def last_index(self) -> int:
        return self.store.last_index

    def apply(self, index: int, data: bytes) -> object:
        try:
            command = decode(data)
            if isinstance(command, RegisterCommand):
                self.store.ensure_registration(index, command)
            elif isinstance(command, DeregisterCommand):
                self.store.deregister(index, command)
            elif isinstance(command, NoopCommand):
                pass
        finally:
            self.store.advance(index)
        return None

    def snapshot(self) -> bytes:
        return msgpack.packb(self.store.snapshot(), use_bin_type=True)

    def restore(self, data: bytes) -> None:
        try:
            record = msgpack.unpackb(data, raw=False, strict_map_key=False)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise SnapshotError(f"undecodable catalog snapshot: {exc}") from exc
        old, self.store = self.store, StateStore.restore(record)
        old.abandon(self.store.last_index)  # blocked readers wake and re-read from the new store
