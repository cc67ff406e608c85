"""Durable storage for the Raft core: a write-ahead log of entries and hard states plus a snapshot
file, all CRC-checked (layer 2).

Contract:
- `FileStorage(directory)` implements the core's `Storage` read side (`initial_state`,
  `snapshot`) and the same write side as `MemoryStorage`: `save(hard, entries, snapshot)` and
  `save_snapshot(snapshot)`. Both are blocking (write + fdatasync): the driver runs them with
  `asyncio.to_thread`, one `save` per `Ready` (group commit: every entry and the hard state of a
  Ready share one write and one fsync).
- Files: `wal` holds records `>IIB` (payload length, CRC32 of type|payload, type) + payload;
  type ENTRY is `>QQB` (index, term, kind) + data, type HARD is msgpack [term, vote, commit].
  Replay applies records in order: an entry at or below the last one cuts the suffix first (a
  follower's conflicting tail), a gap or a bad record ends the valid prefix. `snapshot` is one
  record of type SNAP (msgpack of `messages.snapshot_to_record`), replaced atomically (tmp, fsync,
  rename, directory fsync).
- The driver does not write a Ready that only moves the commit index (persist.py): the stored
  commit index is the one written with the last entries or term/vote change. After a restart the
  leader tells the commit index again; entries are never applied beyond the known one.
- The open wal is preallocated `WAL_PREALLOCATE` bytes ahead of its records (zeros, which replay
  treats as the end) so an fdatasync need not also commit a file-size change; `close()` trims it.
- `open()` (called by the constructor) cuts a torn or corrupt wal tail and never returns it; wal
  entries that do not continue the snapshot (a crash between writing a received snapshot and
  resetting the wal) are dropped.
- `save_snapshot` writes the snapshot, then rewrites the wal with only the entries after it
  (log truncation); a crash between the two leaves a valid, merely longer, wal.
- `recover_peers(path, storage)`: outage recovery as Consul's `raft/peers.json` — when quorum is
  lost for good, the operator stops every remaining server, writes the same file
  `[{"id": ..., "address": "host:port", "non_voter": false}, ...]` into each data dir's `raft/`
  and starts them: a CONFIG entry with exactly those servers is appended to the log (it takes
  effect at once), the file is renamed `peers.json.applied`, and the addresses are returned.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import zlib
from pathlib import Path

import msgpack

from agent.raft.memstore import MemoryStorage
from agent.raft.messages import (
    EntryKind,
    HardState,
    LogEntry,
    MalformedMessage,
    Membership,
    Snapshot,
    snapshot_from_record,
    snapshot_to_record,
)

RECORD = struct.Struct(">IIB")
ENTRY = struct.Struct(">QQB")
T_ENTRY, T_HARD, T_SNAP = 1, 2, 3
MAX_RECORD = 256 * 1024 * 1024
WAL_PREALLOCATE = 4 * 1024 * 1024  # bytes reserved ahead of the wal's records
log = logging.getLogger("waypost.raft.storage")


class StorageCorrupt(Exception):
    """The snapshot file exists but cannot be read: refuse to start rather than lose data."""


def _record(rtype: int, payload: bytes) -> bytes:
    crc = zlib.crc32(payload, zlib.crc32(bytes([rtype])))
    return RECORD.pack(len(payload), crc, rtype) + payload


def encode_entry(entry: LogEntry) -> bytes:
    return _record(T_ENTRY, ENTRY.pack(entry.index, entry.term, int(entry.kind)) + entry.data)


def encode_hard(hard: HardState) -> bytes:
    return _record(T_HARD, msgpack.packb([hard.term, hard.vote, hard.commit], use_bin_type=True))


def read_records(blob: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """(type, payload) of each valid record and the byte length of the valid prefix."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while pos + RECORD.size <= len(blob):
        length, crc, rtype = RECORD.unpack_from(blob, pos)
        end = pos + RECORD.size + length
        if length > MAX_RECORD or end > len(blob):
            break
        payload = blob[pos + RECORD.size:end]
        if zlib.crc32(payload, zlib.crc32(bytes([rtype]))) != crc or rtype not in (T_ENTRY, T_HARD, T_SNAP):
            break
        out.append((rtype, payload))
        pos = end
    return out, pos


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class FileStorage(MemoryStorage):
    """`MemoryStorage`'s in-memory view (the core's read side), kept durable in two files."""

    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory
        self.wal_path = directory / "wal"
        self.snap_path = directory / "snapshot"
        self._fd: int | None = None
        self._end = 0        # bytes of valid records in the wal; appends go here
        self._allocated = 0  # bytes reserved for the wal (its size while open)
        self.open()

    @property
    def entries_since_snapshot(self) -> int:
        return len(self.entries)

    @property
    def wal_bytes(self) -> int:
        """Bytes of valid records in the wal (the file itself is longer while open: preallocated)."""
        return self._end

    # --- open / recover ---
    def open(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.snap_path.exists():
            records, _ = read_records(self.snap_path.read_bytes())
            if len(records) != 1 or records[0][0] != T_SNAP:
                raise StorageCorrupt(f"snapshot {self.snap_path} is corrupt")
            try:
                self.snap = snapshot_from_record(msgpack.unpackb(records[0][1], raw=False))
            except (ValueError, MalformedMessage) as exc:
                raise StorageCorrupt(f"snapshot {self.snap_path} is unreadable: {exc}") from exc
        entries: list[LogEntry] = []
        valid = 0
        if self.wal_path.exists():
            blob = self.wal_path.read_bytes()
            records, valid = read_records(blob)
            valid = self._replay(records, blob, valid, entries)
            if blob.count(0, valid) != len(blob) - valid:  # zeros after the records: preallocated space
                log.warning("cutting %d bytes of torn or corrupt raft log tail", len(blob) - valid)
            if valid < len(blob):
                with open(self.wal_path, "r+b") as handle:
                    handle.truncate(valid)
                    os.fsync(handle.fileno())
        self.entries = self._after_snapshot(entries)
        self._open_wal(valid)

    def _open_wal(self, end: int) -> None:
        """Open the wal for writes at `end` (the file is exactly that long), reserving space ahead."""
        self._fd = os.open(self.wal_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._end = self._allocated = end
        self._reserve(0)

    def _replay(self, records: list[tuple[int, bytes]], blob: bytes, valid: int, entries: list[LogEntry]) -> int:
        pos = 0
        for rtype, payload in records:
            if rtype == T_ENTRY:
                if len(payload) < ENTRY.size:
                    return pos
                index, term, kind = ENTRY.unpack_from(payload)
                if entries and index > entries[-1].index + 1:
                    return pos  # a gap: nothing after it can be trusted
                if entries and index <= entries[-1].index:
                    del entries[max(index - entries[0].index, 0):]
                entries.append(LogEntry(index, term, kind, payload[ENTRY.size:]))
            elif rtype == T_HARD:
                try:
                    term, vote, commit = msgpack.unpackb(payload, raw=False)
                except (ValueError, TypeError):
                    return pos
                self.hard = HardState(term, vote, commit)
            pos += RECORD.size + len(payload)
        return valid

    def _after_snapshot(self, entries: list[LogEntry]) -> list[LogEntry]:
        if self.snap is None:
            if entries and entries[0].index != 1:
                log.error("raft log starts at %d without a snapshot; ignoring it", entries[0].index)
                return []
            return entries
        s = self.snap
        at = [e for e in entries if e.index == s.index]
        if at and at[0].term != s.term:
            return []  # the wal predates a received snapshot that replaced it
        out = [e for e in entries if e.index > s.index]
        if out and out[0].index != s.index + 1:
            return []
        return out

    # --- write side ---
    def save(self, hard_state: HardState | None, entries: list[LogEntry], snapshot: Snapshot | None) -> None:
        if snapshot is not None:
            self._write_snapshot(snapshot)
            self.entries = []
            self._rewrite_wal()
        chunks = [encode_entry(e) for e in self._keep(entries)]
        if hard_state is not None:
            self.hard = hard_state
            chunks.append(encode_hard(hard_state))
        if chunks:
            self._append(b"".join(chunks))

    def save_snapshot(self, snapshot: Snapshot) -> None:
        if self.snap is not None and snapshot.index <= self.snap.index:
            return
        self._write_snapshot(snapshot)
        self.entries = [e for e in self.entries if e.index > snapshot.index]
        self._rewrite_wal()

    def close(self) -> None:
        """Close the wal, giving back the reserved space beyond its records."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._end)
                os.fsync(self._fd)
            self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _reserve(self, more: int) -> None:
        """Preallocate (zero-filled) so that `more` bytes fit after the records: an fdatasync of
        data written inside the file's size need not commit a size change too (etcd does the same
        with its 64 MB segments); replay stops at the zeros, as at any invalid record."""
        if self._end + more <= self._allocated:
            return
        assert self._fd is not None
        target = self._end + more + WAL_PREALLOCATE
        try:
            os.posix_fallocate(self._fd, 0, target)
        except OSError:  # a filesystem without fallocate: plain appends grow the file
            return
        self._allocated = target

    def _append(self, data: bytes) -> None:
        assert self._fd is not None, "storage is closed"
        self._reserve(len(data))
        written = os.pwrite(self._fd, data, self._end)
        if written != len(data):
            raise OSError(f"short write to {self.wal_path}: {written} of {len(data)} bytes")
        self._end += written
        os.fdatasync(self._fd)

    def _write_snapshot(self, snapshot: Snapshot) -> None:
        payload = msgpack.packb(snapshot_to_record(snapshot), use_bin_type=True)
        _write_atomic(self.snap_path, _record(T_SNAP, payload))
        self.snap = snapshot

    def _rewrite_wal(self) -> None:
        self._close_fd()  # the file is replaced whole: no point trimming it first
        data = b"".join(encode_entry(e) for e in self.entries) + encode_hard(self.hard)
        _write_atomic(self.wal_path, data)
        self._open_wal(len(data))


class PeersFileError(Exception):
    """`raft/peers.json` exists but is not a list of {"id", "address"[, "non_voter"]} objects."""


def recover_peers(path: Path, storage: FileStorage) -> dict[str, str]:
    """Apply an outage-recovery `peers.json` (see the module contract); {} when there is none."""
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        servers = [(str(s["id"]), str(s["address"]), bool(s.get("non_voter", False))) for s in raw]
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise PeersFileError(f"{path}: {exc}") from exc
    if not servers or all(non_voter for _, _, non_voter in servers):
        raise PeersFileError(f"{path}: at least one voter is required")
    membership = Membership.of([i for i, _, nv in servers if not nv], [i for i, _, nv in servers if nv])
    last = storage.last_index()
    if last > 0:
        term = storage.entries[-1].term if storage.entries else (storage.snap.term if storage.snap else 0)
        storage.save(None, [LogEntry(last + 1, term, EntryKind.CONFIG, membership.encode())], None)
        log.warning("recovered raft membership from %s: %s", path, ", ".join(membership.members()))
    os.replace(path, path.with_name("peers.json.applied"))
    return {i: address for i, address, _ in servers}
