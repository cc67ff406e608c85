"""`/v1/operator/raft/*` routes (layer 4): the Raft configuration, removing a peer, moving leadership.

Contract (Consul's shapes):
- `GET /v1/operator/raft/configuration` → `{"Servers": [{"ID", "Node", "Address", "Leader",
  "Voter", "ProtocolVersion"}], "Index": n}` (Index: the last applied Raft index).
- `DELETE /v1/operator/raft/peer?id=ID` or `?address=IP:port` → 200 with an empty body; neither
  given → 400; a server that is not a member → 404; the leader's refusal → 500 with its reason.
- `POST` (or `PUT`) `/v1/operator/raft/transfer-leader[?id=ID]` → `{"Success": true}`; without an
  id the most caught-up other voter is chosen.
- Followers hand both changes to the leader; with no leader the answer is 500 "No cluster leader".
"""

from __future__ import annotations

from aiohttp import web

from agent.errors import BadRequest, NotFound
from agent.http.app import CONTEXT
from agent.http.common import json_response, text_response
from agent.raft.cluster import OperatorError


async def configuration(request: web.Request) -> web.Response:
    server = request.app[CONTEXT].server
    return json_response(request, {"Servers": server.cluster.configuration(),
                                   "Index": server.raft.applied_index()})


async def remove_peer(request: web.Request) -> web.Response:
    cluster = request.app[CONTEXT].server.cluster
    wanted = request.query.get("id") or request.query.get("address") or ""
    if not wanted:
        raise BadRequest("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove")
    server_id = cluster.resolve(wanted)
    if not server_id:
        raise NotFound(f"{wanted} was not found in the Raft configuration")
    try:
        await cluster.remove_peer(server_id)
    except OperatorError as exc:
        return text_response(str(exc), 500)
    return web.Response(status=200)


async def transfer_leader(request: web.Request) -> web.Response:
    cluster = request.app[CONTEXT].server.cluster
    wanted = request.query.get("id", "")
    server_id = cluster.resolve(wanted) if wanted else ""
    if wanted and not server_id:
        raise NotFound(f"{wanted} was not found in the Raft configuration")
    try:
        await cluster.transfer_leader(server_id)
    except OperatorError as exc:
        return text_response(str(exc), 500)
    return json_response(request, {"Success": True})


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/operator/raft/configuration", configuration)
    router.add_delete("/v1/operator/raft/peer", remove_peer)
    router.add_post("/v1/operator/raft/transfer-leader", transfer_leader)
    router.add_put("/v1/operator/raft/transfer-leader", transfer_leader)
