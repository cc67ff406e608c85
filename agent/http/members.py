"""Gossip routes (layer 4): `/v1/agent/members`, `/v1/agent/join/:address`,
`/v1/agent/force-leave/:node`, `/v1/operator/keyring` — Consul's shapes and status codes.

Contract:
- `GossipAccess` is what these routes use of the agent's `GossipNode` (HttpContext.gossip).
  Without one (an agent built without gossip) members fall back to `HttpContext.members()` and
  the other routes answer 500 saying gossip is not running.
- `member_json(member)` is one `/v1/agent/members` entry: Name, Addr, Port (gossip port), Tags,
  Status (serf's int: 1 alive/suspect, 3 left, 4 failed), and Consul's protocol fields.
  `GET /v1/agent/members` lists every member this agent knows, sorted by name; `?wan` → `[]`
  (waypost has no WAN pool); `?segment` other than ""/"_all" → 400; `?filter=` applies.
- `PUT /v1/agent/join/:address[?wan]` → 200 empty; a bad address (`provider=...`, bad port) → 400;
  a join nobody answered → 500 with the reason per address (Consul answers 500); `?wan` → 500.
- `PUT /v1/agent/force-leave/:node[?prune][&wan]` → 200; an unknown node → 500
  `agent: No node found with name '<node>'` (Consul's text).
- `/v1/operator/keyring`: GET lists, POST installs, PUT uses, DELETE removes (`{"Key": "..."}`).
  The answer is one LAN pool entry `[{WAN, Datacenter, Segment, Keys, PrimaryKeys, NumNodes,
  Messages}]`. A bad key or body → 400; nodes that failed → 500 with Consul's multierror text
  (`N errors occurred:` / `\t* dc1 (LAN) error: k/n nodes reported failure` / `\t* node: why`).
  Without gossip encryption every keyring call is a 500 naming this node with serf's text
  (`Keyring is empty (encryption not enabled)`, `No keyring to modify (...)`).
  `?relay-factor` (0..5) and `?local-only` (GET only) are validated and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Literal, Protocol

from aiohttp import web

from agent.errors import BadRequest
from agent.gossip.errors import GossipJoinError
from agent.gossip.joiner import normalize_all
from agent.gossip.keyring import parse_key
from agent.http.app import CONTEXT
from agent.http.common import apply_filter, json_response, query_flag, read_json, text_response

if TYPE_CHECKING:
    from agent.gossip.keyring import Keyring, KeyringReport
    from agent.gossip.messages import Member

# Consul's protocol fields of a LAN member (memberlist protocol 1..5 speaking 2, delegate 2..5 at 4)
PROTOCOL_FIELDS = {"ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                   "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}  # fmt: skip
MAX_RELAY_FACTOR = 5  # Consul's limit for ?relay-factor
KEYRING_METHODS = {"GET": "list", "POST": "install", "PUT": "use", "DELETE": "remove"}
NO_GOSSIP = "gossip is not running on this agent"
KEYRING_EMPTY = "Keyring is empty (encryption not enabled)"  # serf's answers when there is no keyring
NO_KEYRING_TO_MODIFY = "No keyring to modify (encryption not enabled)"


class GossipAccess(Protocol):
    """The GossipNode methods the HTTP API uses (agent/gossip/node.py)."""

    keyring: Keyring | None  # None: gossip encryption is off

    def members(self) -> list[Member]: ...

    def local_member(self) -> Member: ...

    async def join(self, addresses: Sequence[str]) -> int: ...

    def force_leave(self, name: str, prune: bool = False) -> bool: ...

    async def keyring_operation(self, op: Literal["list", "install", "use", "remove"],
                                key: str = "") -> KeyringReport: ...


def member_json(member: Member) -> dict[str, object]:
    return {"Name": member.name, "Addr": member.address, "Port": member.port,
            "Tags": dict(member.tags), "Status": member.serf_status(), **PROTOCOL_FIELDS}


def _gossip(request: web.Request) -> GossipAccess | None:
    return request.app[CONTEXT].gossip


async def members(request: web.Request) -> web.Response:
    wan = query_flag(request, "wan")
    segment = request.query.get("segment", "")
    if wan and segment:
        raise BadRequest("Cannot provide a segment with wan=true")
    if segment not in ("", "_all"):
        raise BadRequest("Network segments are not supported in this version of waypost")
    gossip = _gossip(request)
    if wan:
        items: list[dict] = []
    elif gossip is None:
        items = request.app[CONTEXT].members()
    else:
        items = [member_json(m) for m in sorted(gossip.members(), key=lambda m: m.name)]
    return json_response(request, apply_filter(request, items))


async def join(request: web.Request) -> web.Response:
    address = request.match_info["address"]
    if query_flag(request, "wan"):
        return text_response("WAN join is not supported: waypost has no WAN gossip pool", 500)
    gossip = _gossip(request)
    if gossip is None:
        return text_response(NO_GOSSIP, 500)
    targets = normalize_all(gossip, [address])
    try:
        await gossip.join(targets)
    except GossipJoinError as err:
        return text_response(_join_failure(err), 500)
    except OSError as err:
        return text_response(f"Failed to join {targets[0]}: {err}", 500)
    return web.Response(status=200, content_type="text/plain")


def _join_failure(err: GossipJoinError) -> str:
    if not err.reasons:
        return str(err)
    return _multierror([f"Failed to join {addr}: {why}" for addr, why in err.reasons.items()])


async def force_leave(request: web.Request) -> web.Response:
    node = request.match_info["node"]
    prune = query_flag(request, "prune")
    wan = query_flag(request, "wan")
    gossip = _gossip(request)
    if gossip is None:
        return text_response(NO_GOSSIP, 500)
    found = False if wan else gossip.force_leave(node, prune=prune)  # no WAN pool: nobody there
    if not found:
        return text_response(f"agent: No node found with name '{node}'", 500)
    return web.Response(status=200, content_type="text/plain")


def _relay_factor(request: web.Request) -> None:
    raw = request.query.get("relay-factor", "")
    if not raw:
        return
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"Error parsing relay factor: invalid value {raw!r}") from None
    if not 0 <= value <= MAX_RELAY_FACTOR:
        raise BadRequest(f"Invalid relay-factor: Relay factor must be in range: [0, {MAX_RELAY_FACTOR}]")


def _local_only(request: web.Request) -> None:
    if "local-only" not in request.query:
        return
    if query_flag(request, "local-only") and request.method != "GET":
        raise BadRequest("Invalid use of local-only: local-only can only be set for GET requests")


async def _key_from_body(request: web.Request) -> str:
    body = await read_json(request)
    if not isinstance(body, Mapping):
        raise BadRequest(f"Request decode failed: expected a JSON object, got {type(body).__name__}")
    key = body.get("Key", body.get("key", ""))
    if not isinstance(key, str) or not key:
        raise BadRequest('Request decode failed: missing "Key" (base64 of a 16, 24 or 32-byte key)')
    parse_key(key)  # a bad key is a KeyringError: 400 with the reason, before anything is sent
    return key


async def keyring(request: web.Request) -> web.Response:
    op = KEYRING_METHODS[request.method]
    _relay_factor(request)
    _local_only(request)
    key = await _key_from_body(request) if op != "list" else ""
    gossip = _gossip(request)
    if gossip is None:
        return text_response(NO_GOSSIP, 500)
    datacenter = request.app[CONTEXT].config.datacenter
    if gossip.keyring is None:
        why = KEYRING_EMPTY if op == "list" else NO_KEYRING_TO_MODIFY
        return text_response(_multierror([f"{datacenter} (LAN) error: 1/1 nodes reported failure",
                                          f"{gossip.local_member().name}: {why}"]), 500)
    report = await gossip.keyring_operation(op, key)
    if report.errors:
        return text_response(_keyring_failure(report, datacenter), 500)
    if op == "list":
        return json_response(request, [report.to_json(datacenter)])
    return web.Response(status=200, content_type="text/plain")


def _keyring_failure(report: KeyringReport, datacenter: str) -> str:
    errors = report.errors
    lines = [f"{datacenter} (LAN) error: {len(errors)}/{report.num_nodes} nodes reported failure"]
    lines += [f"{node}: {errors[node]}" for node in sorted(errors)]
    return _multierror(lines)


def _multierror(errors: Sequence[str]) -> str:
    """hashicorp/go-multierror's text, as Consul puts it in a 500 body."""
    head = "1 error occurred:" if len(errors) == 1 else f"{len(errors)} errors occurred:"
    return head + "".join(f"\n\t* {e}" for e in errors) + "\n\n"


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/agent/members", members)
    router.add_put("/v1/agent/join/{address}", join)
    router.add_put("/v1/agent/force-leave/{node}", force_leave)
    for method in KEYRING_METHODS:
        router.add_route(method, "/v1/operator/keyring", keyring)
