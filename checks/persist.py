"""TTL check state on disk (layer 2: file I/O in a worker thread, atomic replace + fsync).

Contract: `TTLStore(state_dir)`; one JSON file per check, named by the SHA-256 of its id:
`{"check_id", "fingerprint", "status", "output", "expires"}` (`expires` is unix time).
`await save(record)`, `await load(check_id) -> TTLRecord | None` (unreadable/corrupt → None),
`await delete(check_id)`. Writes go to a unique temp file, are fsynced, then `os.replace`d, so a
crash leaves either the old or the new file. `fingerprint(defn)` identifies a definition: state is
restored only for the very same definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

from checks.definition import CheckDefinition, Status

_tmp_seq = itertools.count()


def fingerprint(defn: CheckDefinition) -> str:
    text = json.dumps(dataclasses.asdict(defn), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class TTLRecord:
    check_id: str
    fingerprint: str
    status: Status
    output: str
    expires: float


class TTLStore:
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self._lock = asyncio.Lock()

    def path_for(self, check_id: str) -> Path:
        return self.state_dir / (hashlib.sha256(check_id.encode()).hexdigest() + ".json")

    async def save(self, record: TTLRecord) -> None:
        data = json.dumps(
            {
                "check_id": record.check_id,
                "fingerprint": record.fingerprint,
                "status": str(record.status),
                "output": record.output,
                "expires": record.expires,
            }
        ).encode()
        async with self._lock:
            await asyncio.to_thread(self._write, self.path_for(record.check_id), data)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.{next(_tmp_seq)}.tmp")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    async def load(self, check_id: str) -> TTLRecord | None:
        return await asyncio.to_thread(self._read, check_id)

    def _read(self, check_id: str) -> TTLRecord | None:
        try:
            raw = json.loads(self.path_for(check_id).read_bytes())
            record = TTLRecord(
                check_id=str(raw["check_id"]),
                fingerprint=str(raw["fingerprint"]),
                status=Status(raw["status"]),
                output=str(raw["output"]),
                expires=float(raw["expires"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return record if record.check_id == check_id else None

    async def delete(self, check_id: str) -> None:
        async with self._lock:
            await asyncio.to_thread(self._unlink, self.path_for(check_id))

    @staticmethod
    def _unlink(path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
