"""A durable, checksummed log file plus snapshot file for the one-voter driver (layer 2).

Contract:
- Record layout: `>IIQQ` (payload length, CRC32 of index|term|payload, index, term) + payload.
  `append(entries)` writes every record of a batch with one write and one fsync (group commit):
  a batch is durable when it returns. Run it off the loop with `asyncio.to_thread` — the one
  place threads are allowed.
- `open()` reads the log back; a torn or corrupt tail (short record, bad CRC, index gap) is cut
  off and never applied. Entries before the snapshot index are skipped on replay.
- `save_snapshot(index, data)` writes the FSM snapshot atomically (tmp + fsync + rename +
  directory fsync) and then starts a new, empty log: the store's state is the snapshot plus
  the log after it.
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

from agent.raft.log import Entry

HEADER = struct.Struct(">IIQQ")
MAX_RECORD = 64 * 1024 * 1024
log = logging.getLogger("waypost.raft.log")


def _crc(index: int, term: int, payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(struct.pack(">QQ", index, term)))


def encode_record(entry: Entry) -> bytes:
    return HEADER.pack(len(entry.data), _crc(entry.index, entry.term, entry.data), entry.index,
                       entry.term) + entry.data


def decode_records(blob: bytes) -> tuple[list[Entry], int]:
    """Entries of a log image and the byte length of its valid prefix."""
    entries: list[Entry] = []
    pos = 0
    while pos + HEADER.size <= len(blob):
        length, crc, index, term = HEADER.unpack_from(blob, pos)
        end = pos + HEADER.size + length
        if length > MAX_RECORD or end > len(blob):
            break
        payload = blob[pos + HEADER.size:end]
        if _crc(index, term, payload) != crc or (entries and index != entries[-1].index + 1):
            break
        entries.append(Entry(index, term, payload))
        pos = end
    return entries, pos


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileLog:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.log_path = directory / "raft.log"
        self.snapshot_path = directory / "catalog.snapshot"
        self._file = None
        self.snapshot_index = 0
        self.entries_since_snapshot = 0

    def open(self) -> tuple[int, bytes | None, list[Entry]]:
        """Recover: (snapshot index, snapshot bytes or None, entries after the snapshot)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        snapshot: bytes | None = None
        if self.snapshot_path.exists():
            blob = self.snapshot_path.read_bytes()
            records, _ = decode_records(blob)
            if len(records) == 1:
                self.snapshot_index, snapshot = records[0].index, records[0].data
            else:
                log.error("snapshot %s is corrupt; ignoring it", self.snapshot_path)
        entries: list[Entry] = []
        if self.log_path.exists():
            blob = self.log_path.read_bytes()
            entries, valid = decode_records(blob)
            if valid < len(blob):
                log.warning("cutting %d bytes of torn or corrupt log tail", len(blob) - valid)
                with open(self.log_path, "r+b") as handle:
                    handle.truncate(valid)
                    os.fsync(handle.fileno())
        entries = [e for e in entries if e.index > self.snapshot_index]
        if entries and entries[0].index != self.snapshot_index + 1:
            log.error("log starts at %d after snapshot %d; ignoring the log", entries[0].index,
                      self.snapshot_index)
            entries = []
        self.entries_since_snapshot = len(entries)
        self._file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for appends
        return self.snapshot_index, snapshot, entries

    def append(self, entries: list[Entry]) -> None:
        assert self._file is not None, "open() first"
        self._file.write(b"".join(encode_record(e) for e in entries))
        self._file.flush()
        os.fdatasync(self._file.fileno())
        self.entries_since_snapshot += len(entries)

    def save_snapshot(self, index: int, data: bytes) -> None:
        tmp = self.snapshot_path.with_suffix(".tmp")
        with open(tmp, "wb") as handle:
            handle.write(encode_record(Entry(index, 0, data)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.snapshot_path)
        _fsync_dir(self.directory)
        self.snapshot_index = index
        if self._file is not None:
            self._file.close()
        self._file = open(self.log_path, "wb")  # noqa: SIM115 - the old entries live in the snapshot
        os.fsync(self._file.fileno())
        self.entries_since_snapshot = 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
