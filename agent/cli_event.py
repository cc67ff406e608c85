"""`waypost event -name NAME [-node RE] [-service RE] [-tag RE] [PAYLOAD]` (reference §6.1) (layer 5).

Contract: fires a user event through `PUT /v1/event/fire/NAME` with the payload (one optional
argument, sent as is) and the filters as query parameters, then prints `Event ID: <uuid>` like
`consul event`. The event reaches every agent of the cluster whose filters match. A missing
name, more than one payload argument or an agent error is one line on stderr, exit 1.
"""

from __future__ import annotations

import asyncio
import urllib.parse

from agent.cli_common import CommandFailed, Ctx, add_http_flags, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError, resolve_http_addr, resolve_token
from agent.cli_lock import Api

USAGE = """Usage: waypost event [options] [payload]

  Dispatches a custom user event. Handlers (e.g. `waypost watch -type event`) can act on it.
  The event is delivered to every agent in the cluster whose node/service/tag filters match.
"""


def cmd_event(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("event", USAGE)
    add_http_flags(fs)
    fs.string("datacenter", "Datacenter to dispatch in (default: the agent's).")
    fs.string("name", "Name of the event.")
    fs.string("node", "Regular expression to filter on node names.")
    fs.string("service", "Regular expression to filter on service instances.")
    fs.string("tag", "Regular expression to filter on service tags. Must be used with -service.")
    values, args = parse_flags(fs, argv)
    name = str(values["name"])
    if not name:
        raise CommandFailed("Event name must be specified")
    if values["tag"] and not values["service"]:
        raise CommandFailed("Cannot provide tag filter without service filter.")
    if len(args) > 1:
        raise CommandFailed(f"Too many arguments (expected 0 or 1, got {len(args)})")
    params = {k: str(values[f]) for k, f in (("node", "node"), ("service", "service"), ("tag", "tag"),
                                              ("dc", "datacenter")) if values.get(f)}
    try:
        base = resolve_http_addr(str(values.get("http-addr", "")), ctx.environ)
    except AgentError as err:
        raise CommandFailed(f"Error connecting to agent: {err}") from None
    token = resolve_token(str(values.get("token", "")), ctx.environ)
    payload = args[0].encode() if args else None
    path = "/v1/event/fire/" + urllib.parse.quote(name, safe="")

    async def fire() -> object:
        async with Api(base, token) as api:
            status, _, body = await api.call("PUT", path, params=params, body=payload)
            if status == 404:
                raise CommandFailed(f"Error firing event: {body}")
            return body

    body = asyncio.run(fire())
    if not isinstance(body, dict) or "ID" not in body:
        raise CommandFailed(f"Error firing event: unexpected answer {body!r}")
    ctx.out(f"Event ID: {body['ID']}")
    return 0
