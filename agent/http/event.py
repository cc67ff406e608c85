"""`/v1/event/fire/:name` and `/v1/event/list` — user events (reference §6.1) (layer 4).

Contract:
- `PUT /v1/event/fire/:name`: the body is the opaque payload (empty = null); `?node=`, `?service=`,
  `?tag=` are regex filters (`tag` needs `service`). Answers the event as Consul does (new UUID `ID`,
  `Version` 1, `LTime` 0, as Consul's answer). The event reaches every agent in the cluster: it
  enters this agent's ring when the filters match this node and its local services, and the
  agent's gossip layer (agent.gossip.userevents, through `EventRing.publisher`) sends it to every
  other member, each of which keeps it only when the filters match its own node and services.
  Bad names/filters are 400, name + payload over 512 bytes is 413.
- `GET /v1/event/list[?name=]`: the ring, oldest first. `X-Consul-Index` is Consul's agent-local,
  non-monotonic index (derived from the newest matching event's ID, 1 when none). With `?index=N`
  the request blocks (`wait`, default 5 min, max 10 min, + jitter) only while N equals the current
  index — any other N answers at once, because these indexes are not ordered.
"""

from __future__ import annotations

import asyncio
import uuid

from aiohttp import web

from agent.errors import BadRequest
from agent.events import UserEvent, event_index, local_view, validate
from agent.http.app import CONTEXT
from agent.http.blocking import jittered
from agent.http.catalog import _check_dc
from agent.http.common import json_response, parse_blocking


async def fire(request: web.Request) -> web.Response:
    _check_dc(request)
    ctx = request.app[CONTEXT]
    body = await request.read()
    event = UserEvent(id=str(uuid.uuid4()), name=request.match_info.get("name", ""),
                      payload=body or None, node_filter=request.query.get("node", ""),
                      service_filter=request.query.get("service", ""), tag_filter=request.query.get("tag", ""))
    validate(event)
    node, services = local_view(ctx.local.state)
    ctx.events.fire(event, node, services)
    return json_response(request, event.to_api())


async def missing_name(request: web.Request) -> web.Response:
    raise BadRequest("Missing name")


async def list_events(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    name = request.query.get("name", "")
    wanted, wait = parse_blocking(request)
    ring = ctx.events
    loop = asyncio.get_running_loop()
    deadline = loop.time() + jittered(wait)
    added = asyncio.Event()
    while True:
        events = ring.list(name)
        index = event_index(events)
        remaining = deadline - loop.time()
        if wanted <= 0 or index != wanted or remaining <= 0:
            break
        added.clear()
        handle = ring.watch(lambda _ltime: added.set())
        try:
            await asyncio.wait_for(added.wait(), remaining)
        except TimeoutError:
            pass
        finally:
            handle.cancel()
    return json_response(request, [e.to_api() for e in events], headers={"X-Consul-Index": str(index)})


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_put("/v1/event/fire/{name}", fire)
    router.add_put("/v1/event/fire/", missing_name)
    router.add_get("/v1/event/list", list_events)
