"""`/v1/snapshot` routes (layer 4): operator save and restore of the whole replicated state.

Contract:
- `GET /v1/snapshot` answers an archive (`agent.catalog.archive`: header with version, ID, index,
  term, checksum + the FSM snapshot of catalog, KV and sessions) as `application/octet-stream`,
  with `X-Consul-Index` = the snapshot's index. Consistency params as on every read (`?stale`
  serves this server's state without asking the leader).
- `PUT /v1/snapshot` (body: an archive, at most `MAX_ARCHIVE_BYTES`) validates the header, size,
  checksum and the snapshot itself first — any problem is a 400 and nothing changes — then
  proposes one `RestoreCommand` through Raft, so every server replaces its tables at the same
  log index, atomically. 200 with an empty body once applied; 413 for a body over the limit.
"""

from __future__ import annotations

import time

from aiohttp import web

from agent.catalog import archive
from agent.catalog.commands import RestoreCommand
from agent.catalog.fsm import CatalogFSM
from agent.catalog.snapshot import SnapshotError
from agent.errors import BadRequest
from agent.http.app import CONTEXT
from agent.http.common import parse_consistency, read_body_limited, read_headers
from agent.raft.transport import MAX_FRAME

MAX_ARCHIVE_BYTES = MAX_FRAME // 2  # a restore is one Raft entry: it must fit a transport frame
SNAPSHOT_TYPE = "application/octet-stream"


async def save(request: web.Request) -> web.Response:
    consistency = parse_consistency(request)
    server = request.app[CONTEXT].server
    await server.read_barrier(consistency)
    fsm = server.fsm
    index, payload = fsm.last_index, fsm.snapshot()  # synchronous: one consistent point
    blob = archive.encode(payload, index, server.raft.term(), int(time.time() * 1000))
    return web.Response(body=blob, content_type=SNAPSHOT_TYPE,
                        headers=read_headers(request, index, consistency))


async def _read_body(request: web.Request) -> bytes:
    """The request body, refusing more than `MAX_ARCHIVE_BYTES` (the app's JSON body limit does
    not apply: snapshots are bigger than any JSON request)."""
    return await read_body_limited(request, MAX_ARCHIVE_BYTES, "Snapshot too large")


async def restore(request: web.Request) -> web.Response:
    blob = await _read_body(request)
    try:
        _, payload = archive.decode(blob)
        CatalogFSM().restore(payload)  # a scratch FSM: a bad snapshot never reaches the log
    except (archive.ArchiveError, SnapshotError) as exc:
        raise BadRequest(f"Invalid snapshot: {exc}") from exc
    try:
        await request.app[CONTEXT].server.apply(RestoreCommand(payload))
    except SnapshotError as exc:  # pragma: no cover - validated above; kept for the contract
        raise BadRequest(f"Invalid snapshot: {exc}") from exc
    return web.Response(status=200, content_type="text/plain")


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/snapshot", save)
    router.add_put("/v1/snapshot", restore)
