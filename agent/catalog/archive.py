"""The operator snapshot archive: a self-describing header + the FSM snapshot bytes (layer 1, pure).

Contract:
- An archive is `MAGIC` (one line), a JSON header line (`Version`, `ID`, `Index`, `Term`, `Size`,
  `Checksum` = "sha256:<hex of the payload>"), then exactly `Size` payload bytes (the bytes of
  `CatalogFSM.snapshot()`). `encode(payload, index, term, created_ms)` builds one; the ID is
  Consul's shape `<term>-<index>-<created_ms>`.
- `decode(blob) -> (ArchiveHeader, payload)` raises `ArchiveError` for anything else: a wrong
  magic, an unreadable or incomplete header, an unknown version, a size or checksum mismatch.
  It never looks inside the payload (the FSM's restore validates that).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from agent.errors import WaypostError

MAGIC = b"WAYPOST-SNAPSHOT\n"
ARCHIVE_VERSION = 1
MAX_HEADER = 4096  # bytes: the header line is small; anything longer is not an archive


class ArchiveError(WaypostError):
    """Bytes that are not a valid snapshot archive."""


@dataclass(frozen=True, slots=True)
class ArchiveHeader:
    version: int
    id: str
    index: int
    term: int
    size: int
    checksum: str

    def to_api(self) -> dict:
        return {"ID": self.id, "Size": self.size, "Index": self.index, "Term": self.term,
                "Version": self.version, "Checksum": self.checksum}


def checksum(payload: bytes) -> str:
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def encode(payload: bytes, index: int, term: int, created_ms: int) -> bytes:
    header = ArchiveHeader(ARCHIVE_VERSION, f"{term}-{index}-{created_ms}", index, term,
                           len(payload), checksum(payload))
    line = json.dumps(header.to_api(), sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + line + b"\n" + payload


def _int_field(record: dict, name: str) -> int:
    value = record.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ArchiveError(f"snapshot header field {name} is missing or not a non-negative integer")
    return value


def decode_header(blob: bytes) -> tuple[ArchiveHeader, int]:
    """The header and the offset where the payload starts (raises `ArchiveError`)."""
    if not blob.startswith(MAGIC):
        raise ArchiveError("not a waypost snapshot archive (bad magic)")
    end = blob.find(b"\n", len(MAGIC), len(MAGIC) + MAX_HEADER)
    if end < 0:
        raise ArchiveError("snapshot archive header is missing or too long")
    try:
        record = json.loads(blob[len(MAGIC):end])
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArchiveError(f"snapshot archive header is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise ArchiveError("snapshot archive header is not an object")
    version = _int_field(record, "Version")
    if version != ARCHIVE_VERSION:
        raise ArchiveError(f"unsupported snapshot archive version {version} (this agent reads {ARCHIVE_VERSION})")
    sid, digest = record.get("ID"), record.get("Checksum")
    if not isinstance(sid, str) or not isinstance(digest, str):
        raise ArchiveError("snapshot header fields ID and Checksum must be strings")
    header = ArchiveHeader(version, sid, _int_field(record, "Index"), _int_field(record, "Term"),
                           _int_field(record, "Size"), digest)
    return header, end + 1


def decode(blob: bytes) -> tuple[ArchiveHeader, bytes]:
    header, start = decode_header(blob)
    payload = blob[start:]
    if len(payload) != header.size:
        raise ArchiveError(f"snapshot archive payload is {len(payload)} bytes, the header says {header.size}")
    if checksum(payload) != header.checksum:
        raise ArchiveError("snapshot archive checksum mismatch: the file is corrupt")
    return header, payload
