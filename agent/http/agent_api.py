"""`/v1/agent/*` routes (reference §1) (layer 4): this agent's own services, checks and state.

Contract: writes go through `LocalAgent` (validated, synced to the catalog before answering);
reads show the local state, not the catalog. `GET /v1/agent/service/:id` supports hash-based
blocking (`?hash=&wait=`). Local health answers 200/429/503 by aggregated status.
`GET /v1/agent/check/history/:id` (not in Consul) lists a check's status transitions, oldest
first; 404 for an unknown id, `[]` for checks without a runner (maintenance, catalog-only).
"""

from __future__ import annotations

import asyncio
import hashlib
import json

from aiohttp import web

from agent.decode import decode_check, decode_service
from agent.errors import BadRequest, NotFound
from agent.filter import apply_filter as filter_items
from agent.http.app import CONTEXT
from agent.http.common import (
    json_response,
    parse_blocking,
    query_flag,
    read_json,
    read_json_object,
    text_response,
)
from agent.http.host import host_info
from agent.types import ServiceDefinition, aggregate_status
from checks.definition import Status

HEALTH_CODES = {"passing": 200, "warning": 429, "critical": 503, "maintenance": 503}


def _local(request: web.Request):
    return request.app[CONTEXT].local


def _agent_service(request: web.Request, definition: ServiceDefinition) -> dict:
    out = definition.service.to_api(request.app[CONTEXT].config.datacenter)
    out.pop("CreateIndex")
    out.pop("ModifyIndex")
    return out


def _content_hash(service: dict) -> str:
    return hashlib.sha256(json.dumps(service, sort_keys=True).encode()).hexdigest()[:16]


async def self_info(request: web.Request) -> web.Response:
    return json_response(request, request.app[CONTEXT].self_info())


async def services(request: web.Request) -> web.Response:
    local = _local(request)
    items = {sid: _agent_service(request, d) for sid, d in sorted(local.state.services.items())}
    return json_response(request, filter_items(request.query.get("filter") or None, items))


async def service(request: web.Request) -> web.Response:
    local = _local(request)
    service_id = request.match_info["id"]
    wanted_hash = request.query.get("hash", "")
    _, wait = parse_blocking(request)
    deadline = asyncio.get_running_loop().time() + (wait if wanted_hash else 0)
    loop = asyncio.get_running_loop()
    while True:
        definition = local.state.services.get(service_id)
        if definition is None:
            raise NotFound(f'unknown service ID: {service_id}')
        body = _agent_service(request, definition)
        digest = _content_hash(body)
        if digest != wanted_hash or loop.time() >= deadline:
            break
        await local.wait_for_change(deadline - loop.time())
    body["ContentHash"] = digest
    return json_response(request, body, headers={"X-Consul-ContentHash": digest})


def _instance_health(request: web.Request, definition: ServiceDefinition) -> dict:
    state = _local(request).state
    checks = state.node_checks() + state.service_checks(definition.service.id)
    return {
        "AggregatedStatus": aggregate_status(checks),
        "Service": _agent_service(request, definition),
        "Checks": [c.to_api() for c in checks],
    }


def _health_answer(request: web.Request, status: str, body: object) -> web.Response:
    code = HEALTH_CODES[status]
    if request.query.get("format") == "text" or request.headers.get("Accept", "").startswith("text/plain"):
        return text_response(status, code)
    return json_response(request, body, status=code)


async def health_by_name(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    state = _local(request).state
    found = [_instance_health(request, d) for _, d in sorted(state.services.items())
             if d.service.service == name]
    if not found:
        return text_response(f"ServiceName {name} Not Found", 404)
    worst = _worst([f["AggregatedStatus"] for f in found])
    return _health_answer(request, worst, found)


async def health_by_id(request: web.Request) -> web.Response:
    service_id = request.match_info["id"]
    definition = _local(request).state.services.get(service_id)
    if definition is None:
        return text_response(f"ServiceId {service_id} not found", 404)
    found = _instance_health(request, definition)
    return _health_answer(request, found["AggregatedStatus"], found)


def _worst(statuses: list[str]) -> str:
    for status in ("maintenance", "critical", "warning"):
        if status in statuses:
            return status
    return "passing"


async def checks(request: web.Request) -> web.Response:
    state = _local(request).state
    items = {cid: lc.check.to_api() for cid, lc in sorted(state.checks.items())}
    return json_response(request, filter_items(request.query.get("filter") or None, items))


async def service_register(request: web.Request) -> web.Response:
    definition = decode_service(await read_json_object(request), path="service", strict_names=False)
    definition.source = "api"
    await _local(request).register_service(
        definition, replace_existing_checks=query_flag(request, "replace-existing-checks"))
    return web.Response(status=200, content_type="text/plain")


async def service_deregister(request: web.Request) -> web.Response:
    await _local(request).deregister_service(request.match_info["id"])
    return web.Response(status=200, content_type="text/plain")


def _enable_param(request: web.Request) -> bool:
    if "enable" not in request.query:
        raise BadRequest("Missing value for enable")
    value = request.query["enable"].lower()
    if value not in ("true", "false", "1", "0"):
        raise BadRequest(f"Invalid value for enable: {request.query['enable']!r}")
    return value in ("true", "1")


async def service_maintenance(request: web.Request) -> web.Response:
    await _local(request).set_service_maintenance(
        request.match_info["id"], _enable_param(request), request.query.get("reason", ""))
    return web.Response(status=200, content_type="text/plain")


async def node_maintenance(request: web.Request) -> web.Response:
    await _local(request).set_node_maintenance(_enable_param(request), request.query.get("reason", ""))
    return web.Response(status=200, content_type="text/plain")


async def check_register(request: web.Request) -> web.Response:
    definition = decode_check(await read_json_object(request), path="check")
    await _local(request).register_check(definition)
    return web.Response(status=200, content_type="text/plain")


async def check_deregister(request: web.Request) -> web.Response:
    await _local(request).deregister_check(request.match_info["id"])
    return web.Response(status=200, content_type="text/plain")


def _ttl_route(status: Status):
    async def handler(request: web.Request) -> web.Response:
        await _local(request).ttl_update(request.match_info["id"], status, request.query.get("note", ""))
        return web.Response(status=200, content_type="text/plain")
    return handler


async def check_update(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest("Request decode failed: expected a JSON object")
    fields = {k.lower(): v for k, v in body.items()}
    unknown = set(fields) - {"status", "output"}
    if unknown:
        raise BadRequest(f"Request decode failed: unknown field {sorted(unknown)[0]!r}")
    raw_status = fields.get("status", "")
    if raw_status not in {s.value for s in Status}:
        raise BadRequest(f'Invalid check status: "{raw_status}"')
    output = fields.get("output", "")
    if not isinstance(output, str):
        raise BadRequest("Request decode failed: Output must be a string")
    await _local(request).ttl_update(request.match_info["id"], Status(raw_status), output)
    return web.Response(status=200, content_type="text/plain")


async def check_history(request: web.Request) -> web.Response:
    """Status transitions of a local check, oldest first (waypost's addition; consul#461)."""
    history = _local(request).check_history(request.match_info["id"])
    return json_response(request, [t.to_api() for t in history])


async def reload(request: web.Request) -> web.Response:
    problems = await request.app[CONTEXT].reload()
    if problems:
        return text_response("\n".join(problems), 400)
    return web.Response(status=200, content_type="text/plain")


async def leave(request: web.Request) -> web.Response:
    await request.app[CONTEXT].leave()
    return web.Response(status=200, content_type="text/plain")


async def host(request: web.Request) -> web.Response:
    return json_response(request, await host_info(request.app[CONTEXT].config.data_dir))


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/agent/self", self_info)
    router.add_get("/v1/agent/services", services)
    router.add_get("/v1/agent/service/{id}", service)
    router.add_get("/v1/agent/health/service/name/{name}", health_by_name)
    router.add_get("/v1/agent/health/service/id/{id}", health_by_id)
    router.add_get("/v1/agent/checks", checks)
    router.add_get("/v1/agent/check/history/{id}", check_history)
    router.add_get("/v1/agent/host", host)
    router.add_put("/v1/agent/service/register", service_register)
    router.add_put("/v1/agent/service/deregister/{id}", service_deregister)
    router.add_put("/v1/agent/service/maintenance/{id}", service_maintenance)
    router.add_put("/v1/agent/maintenance", node_maintenance)
    router.add_put("/v1/agent/check/register", check_register)
    router.add_put("/v1/agent/check/deregister/{id}", check_deregister)
    router.add_put("/v1/agent/check/pass/{id}", _ttl_route(Status.PASSING))
    router.add_put("/v1/agent/check/warn/{id}", _ttl_route(Status.WARNING))
    router.add_put("/v1/agent/check/fail/{id}", _ttl_route(Status.CRITICAL))
    router.add_put("/v1/agent/check/update/{id}", check_update)
    router.add_put("/v1/agent/reload", reload)
    router.add_put("/v1/agent/leave", leave)
