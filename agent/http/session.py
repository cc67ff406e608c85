"""`/v1/session/*` routes (reference §5.1–5.4) (layer 4).

Contract:
- `PUT create` decodes Consul's body (`Name`, `Node` = this agent's node by default, `LockDelay`
  as a duration string or a number — < 1000 means seconds, else nanoseconds — capped at 60 s,
  `Behavior` release|delete, `TTL` 10s–24h or empty, `NodeChecks` default `["serfHealth"]`, an
  explicit `[]` for none, `ServiceChecks` `[{"ID": ...}]`, deprecated `Checks`), proposes a
  `SessionCreateCommand` with a fresh UUID and answers `{"ID": id}`. Bad fields → 400.
- `PUT destroy/:id` → `true` (idempotent); `GET info/:id` → `[session]` or `[]`; `GET node/:node`,
  `GET list` → lists; reads are blocking on the sessions table. `PUT renew/:id` re-arms the TTL
  timer on the session driver and answers `[session]`, or 404 `Session id '<id>' not found`.
- Session ids must be UUIDs: anything else is a 400.
"""

from __future__ import annotations

import uuid

import aiohttp
from aiohttp import web

from agent.catalog.commands import SessionCreateCommand, SessionDestroyCommand
from agent.catalog.sessions import BEHAVIORS, SESSIONS
from agent.errors import BadRequest, NoLeader, NotFound
from agent.http.app import CONTEXT
from agent.http.common import json_response, read_json
from agent.http.kvwait import table_read
from agent.sessions_driver import MAX_LOCK_DELAY, SESSION_TTL_MAX, SESSION_TTL_MIN, ttl_seconds
from agent.types import SERF_CHECK_ID
from checks.definition import DurationError, parse_duration

DEFAULT_LOCK_DELAY_NS = 15_000_000_000
FORWARDED_HEADER = "X-Waypost-Forwarded"  # a renew a follower handed to the leader (never forwarded again)
RENEW_FORWARD_TIMEOUT = 5.0


def session_id(request: web.Request) -> str:
    raw = request.match_info.get("id", "")
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequest(f"Invalid session ID {raw!r}: must be a UUID") from None


def lock_delay_ns(value: object) -> int:
    if isinstance(value, bool) or value is None:
        raise BadRequest(f"Invalid LockDelay {value!r}")
    if isinstance(value, int | float):
        seconds = float(value) if value < 1000 else value / 1e9
    elif isinstance(value, str):
        try:
            seconds = parse_duration(value)
        except DurationError:
            raise BadRequest(f"Invalid LockDelay {value!r}") from None
    else:
        raise BadRequest(f"Invalid LockDelay {value!r}")
    if seconds < 0:
        raise BadRequest(f"Invalid LockDelay {value!r}")
    return int(min(seconds, MAX_LOCK_DELAY) * 1e9)


def _string_list(body: dict, name: str) -> list[str] | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"Invalid {name}: want a list of check IDs")
    return value


def decode_create(body: dict, default_node: str, sid: str) -> SessionCreateCommand:
    name = body.get("Name") or ""
    node = body.get("Node") or default_node
    behavior = body.get("Behavior") or "release"
    ttl = body.get("TTL") or ""
    if not isinstance(name, str) or not isinstance(node, str) or not isinstance(ttl, str):
        raise BadRequest("Invalid Name, Node or TTL: want strings")
    if behavior not in BEHAVIORS:
        raise BadRequest(f"Invalid Behavior setting {behavior!r}")
    if ttl:
        try:
            seconds = ttl_seconds(ttl)
        except ValueError:
            raise BadRequest(f"Invalid Session TTL {ttl!r}") from None
        if not SESSION_TTL_MIN <= seconds <= SESSION_TTL_MAX:
            raise BadRequest(f"Invalid Session TTL '{seconds:g}s', must be between "
                             f"[{SESSION_TTL_MIN:g}s={SESSION_TTL_MAX / 3600:g}h]")
    delay = lock_delay_ns(body["LockDelay"]) if "LockDelay" in body else DEFAULT_LOCK_DELAY_NS
    node_checks = _string_list(body, "NodeChecks")
    if node_checks is None:
        node_checks = _string_list(body, "Checks")
    if node_checks is None:
        node_checks = [SERF_CHECK_ID]
    raw_service = body.get("ServiceChecks") or []
    if not isinstance(raw_service, list) or not all(
            isinstance(c, dict) and isinstance(c.get("ID"), str) and c["ID"] for c in raw_service):
        raise BadRequest('Invalid ServiceChecks: want a list of {"ID": "<check id>"}')
    return SessionCreateCommand(id=sid, node=node, name=name, lock_delay_ns=delay, behavior=behavior,
                                ttl=ttl, node_checks=node_checks,
                                service_checks=[c["ID"] for c in raw_service])


async def create(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    body = await read_json(request, required=False)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise BadRequest("Request decode failed: expected a JSON object")
    command = decode_create(body, ctx.config.node_name, str(uuid.uuid4()))
    await ctx.server.apply(command)
    return json_response(request, {"ID": command.id})


async def destroy(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    await ctx.server.apply(SessionDestroyCommand(session_id(request)))
    return json_response(request, True)


async def renew(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    sid = session_id(request)
    if ctx.sessions is not None and not ctx.server.raft.is_leader():
        return await _renew_on_leader(request, sid)
    row = ctx.sessions.renew(sid) if ctx.sessions is not None else ctx.server.fsm.sessions.get(sid)
    if row is None:
        raise NotFound(f"Session id '{sid}' not found")
    return json_response(request, [row.to_api()])


async def _renew_on_leader(request: web.Request, sid: str) -> web.Response:
    """A follower hands a renew to the leader's HTTP API on its server port (only the leader's
    timers count); one hop only."""
    leader = request.app[CONTEXT].server.leader_address()
    if not leader or FORWARDED_HEADER in request.headers:
        raise NoLeader()
    headers = {FORWARDED_HEADER: "1"}
    if "X-Consul-Token" in request.headers:
        headers["X-Consul-Token"] = request.headers["X-Consul-Token"]
    try:
        timeout = aiohttp.ClientTimeout(total=RENEW_FORWARD_TIMEOUT)
        async with (aiohttp.ClientSession(timeout=timeout) as http,
                    http.put(f"http://{leader}/v1/session/renew/{sid}", headers=headers) as resp):
            body = await resp.read()
            return web.Response(status=resp.status, body=body, content_type=resp.content_type)
    except (aiohttp.ClientError, TimeoutError):
        raise NoLeader() from None


def _read(request: web.Request, rows) -> web.StreamResponse:  # type: ignore[no-untyped-def]
    ctx = request.app[CONTEXT]

    def table():
        return ctx.server.fsm.sessions

    def produce() -> tuple[int, object]:
        index, found = rows(table())
        return index, [r.to_api() for r in found]

    return table_read(request, lambda: table().table_index,
                      lambda cb: table().watch([SESSIONS], cb), produce)


async def info(request: web.Request) -> web.StreamResponse:
    sid = session_id(request)
    return await _read(request, lambda t: t.info(sid))


async def node(request: web.Request) -> web.StreamResponse:
    name = request.match_info["node"]
    return await _read(request, lambda t: t.node(name))


async def listing(request: web.Request) -> web.StreamResponse:
    return await _read(request, lambda t: t.all())


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_put("/v1/session/create", create)
    router.add_put("/v1/session/destroy/{id}", destroy)
    router.add_put("/v1/session/renew/{id}", renew)
    router.add_get("/v1/session/info/{id}", info)
    router.add_get("/v1/session/node/{node}", node)
    router.add_get("/v1/session/list", listing)
