"""The catalog snapshot format: rows <-> msgpack-able plain data (layer 1, pure).

Contract:
- `dump(last_index, nodes, services, checks, key_index) -> dict` builds the snapshot record from
  rows (sorted, so equal stores give equal snapshots); `load(data) -> SnapshotRows` parses one and
  raises `SnapshotError` (a `WaypostError`) for anything that is not a snapshot of this version.
- Row indexes and per-key modify indexes (tombstones included) are kept, so indexes never go back
  after a restore. The change log is not part of a snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.errors import WaypostError
from agent.types import HealthCheck, Node, NodeService

SNAPSHOT_VERSION = 1


class SnapshotError(WaypostError):
    """Data that is not a catalog snapshot this version can read."""


@dataclass(slots=True)
class SnapshotRows:
    last_index: int
    nodes: list[Node]
    services: list[tuple[str, NodeService]]  # (node name, service row)
    checks: list[HealthCheck]
    key_index: dict[str, int]


def dump(
    last_index: int,
    nodes: Iterable[Node],
    services: Iterable[tuple[str, NodeService]],
    checks: Iterable[HealthCheck],
    key_index: dict[str, int],
) -> dict:
    return {
        "version": SNAPSHOT_VERSION,
        "last_index": last_index,
        "nodes": [n.to_record() for n in sorted(nodes, key=lambda n: n.node)],
        "services": [[node, s.to_record()] for node, s in sorted(services, key=lambda p: (p[0], p[1].id))],
        "checks": [c.to_record() for c in sorted(checks, key=lambda c: (c.node, c.check_id))],
        "indexes": dict(sorted(key_index.items())),
    }


def load(data: object) -> SnapshotRows:
    if not isinstance(data, dict) or data.get("version") != SNAPSHOT_VERSION:
        version = data.get("version") if isinstance(data, dict) else None
        raise SnapshotError(f"not a catalog snapshot of version {SNAPSHOT_VERSION} (got {version!r})")
    try:
        return SnapshotRows(
            last_index=int(data["last_index"]),
            nodes=[Node.from_record(r) for r in data["nodes"]],
            services=[(str(node), NodeService.from_record(r)) for node, r in data["services"]],
            checks=[HealthCheck.from_record(r) for r in data["checks"]],
            key_index={str(k): int(v) for k, v in data["indexes"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SnapshotError(f"corrupt catalog snapshot: {exc}") from exc
