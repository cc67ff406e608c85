"""`waypost snapshot save | restore | inspect` (layer 5): operator snapshots of the whole state.

Contract:
- `snapshot save FILE` (`-stale` lets any server answer) fetches `GET /v1/snapshot`, verifies the
  archive (header, size, checksum) before anything is written, writes FILE atomically (a temp file
  renamed into place) and prints `Saved and verified snapshot to index N`.
- `snapshot restore FILE` verifies the archive locally, then `PUT /v1/snapshot`; prints
  `Restored snapshot`. The agent validates again and changes nothing on a bad archive.
- `snapshot inspect FILE` reads the file only (no agent) and prints Consul's key/value table
  (ID, Size, Index, Term, Version) plus the row counts of the snapshot.
- A file that is not a valid archive is `Error verifying snapshot file: ...`, exit 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import msgpack

from agent.catalog import archive
from agent.cli_common import CommandFailed, Ctx, add_http_flags, make_client, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError
from agent.cli_kv import raw_request

SNAPSHOT_TIMEOUT = 300.0


def _file_arg(args: list[str]) -> Path:
    if len(args) != 1:
        raise CommandFailed(f"Expected exactly one FILE argument, got {len(args)}")
    return Path(args[0])


def _verify(blob: bytes) -> tuple[archive.ArchiveHeader, bytes]:
    try:
        return archive.decode(blob)
    except archive.ArchiveError as err:
        raise CommandFailed(f"Error verifying snapshot file: {err}") from None


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise CommandFailed(f"Error opening snapshot file: {err.strerror}: {path}") from None


def cmd_snapshot_save(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("snapshot save", "Usage: waypost snapshot save [options] FILE\n\n"
                 "  Retrieves an atomic, point-in-time snapshot of the state of the servers.")
    add_http_flags(fs)
    fs.bool("stale", "Let any server answer (not just the leader).")
    values, args = parse_flags(fs, argv)
    path = _file_arg(args)
    params = [("stale", "")] if values["stale"] else []
    try:
        _, _, blob = raw_request(make_client(values, ctx), "GET", "/v1/snapshot", params, timeout=SNAPSHOT_TIMEOUT)
    except AgentError as err:
        raise CommandFailed(f"Error saving snapshot: {err}") from None
    header, _ = _verify(blob)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        raise CommandFailed(f"Error writing snapshot file: {err.strerror}: {path}") from None
    ctx.out(f"Saved and verified snapshot to index {header.index}")
    return 0


def cmd_snapshot_restore(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("snapshot restore", "Usage: waypost snapshot restore [options] FILE\n\n"
                 "  Restores the servers' state (catalog, KV, sessions) from a snapshot file.")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    blob = _read(_file_arg(args))
    _verify(blob)
    try:
        raw_request(make_client(values, ctx), "PUT", "/v1/snapshot", body=blob, timeout=SNAPSHOT_TIMEOUT)
    except AgentError as err:
        raise CommandFailed(f"Error restoring snapshot: {err}") from None
    ctx.out("Restored snapshot")
    return 0


def snapshot_counts(payload: bytes) -> list[tuple[str, int]]:
    """Row counts of an FSM snapshot payload (empty if it cannot be read)."""
    try:
        record = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        kv = record.get("kv") or {}
        sessions = record.get("sessions") or {}
        return [("Nodes", len(record["nodes"])), ("Services", len(record["services"])),
                ("Checks", len(record["checks"])), ("KV entries", len(kv.get("entries", []))),
                ("Tombstones", len(kv.get("tombstones", {}))), ("Sessions", len(sessions.get("rows", [])))]
    except (ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException):
        return []


def format_inspect(header: archive.ArchiveHeader, payload: bytes) -> str:
    rows: list[tuple[str, object]] = [("ID", header.id), ("Size", header.size), ("Index", header.index),
                                      ("Term", header.term), ("Version", header.version)]
    lines = [f" {name:<12} {value}" for name, value in rows]
    counts = snapshot_counts(payload)
    if counts:
        lines += ["", f" {'Type':<12} Count", f" {'----':<12} -----"]
        lines += [f" {name:<12} {count}" for name, count in counts]
    return "\n".join(lines)


def cmd_snapshot_inspect(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("snapshot inspect", "Usage: waypost snapshot inspect FILE\n\n"
                 "  Displays information about a snapshot file (no agent is contacted).")
    _, args = parse_flags(fs, argv)
    header, payload = _verify(_read(_file_arg(args)))
    ctx.out(format_inspect(header, payload))
    return 0


SNAPSHOT = {
    "save": ("Saves snapshot of the servers' state", cmd_snapshot_save),
    "restore": ("Restores snapshot of the servers' state", cmd_snapshot_restore),
    "inspect": ("Displays information about a snapshot file", cmd_snapshot_inspect),
}
