"""`waypost operator raft list-peers | remove-peer | transfer-leader` (layer 5, stdlib only).

Contract: each command takes the HTTP client flags; `list-peers` prints Consul's table (Node, ID,
Address, State, Voter, RaftProtocol) from `/v1/operator/raft/configuration`; `remove-peer` takes
`-id` or `-address` and calls `DELETE /v1/operator/raft/peer`; `transfer-leader` takes an
optional `-id` and calls `/v1/operator/raft/transfer-leader`. Agent errors are one line on
stderr with exit 1.
"""

from __future__ import annotations

from collections.abc import Callable

from agent.cli_common import CommandFailed, Ctx, add_http_flags, make_client, no_positional, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError


def _call(what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    try:
        return fn(*args, **kwargs)
    except AgentError as err:
        raise CommandFailed(f"Error {what}: {err}") from None


def format_peers(servers: list[dict]) -> str:
    rows = [["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]]
    for s in servers:
        rows.append([str(s.get("Node", "")), str(s.get("ID", "")), str(s.get("Address", "")),
                     "leader" if s.get("Leader") else "follower", str(bool(s.get("Voter"))).lower(),
                     str(s.get("ProtocolVersion", ""))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def cmd_list_peers(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("operator raft list-peers", "Usage: waypost operator raft list-peers [options]\n\n"
                 "  Displays the current Raft peer configuration.")  # fmt: skip
    add_http_flags(fs)
    fs.bool("stale", "Permit any server to answer the request, not just the leader.")
    values, args = parse_flags(fs, argv)
    no_positional(args)
    client = make_client(values, ctx)
    params = [("stale", "")] if values.get("stale") else []
    reply = _call("getting peers", client.get, "/v1/operator/raft/configuration", params)
    servers = reply.get("Servers", []) if isinstance(reply, dict) else []
    ctx.out(format_peers([s for s in servers if isinstance(s, dict)]))
    return 0


def cmd_remove_peer(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("operator raft remove-peer", "Usage: waypost operator raft remove-peer [options]\n\n"
                 "  Removes the Raft peer with the given -id or -address from the configuration.")  # fmt: skip
    add_http_flags(fs)
    fs.string("id", "The ID of the server to remove.", placeholder="id")
    fs.string("address", "The address (IP:port) of the server to remove.", placeholder="address")
    values, args = parse_flags(fs, argv)
    no_positional(args)
    server_id, address = str(values.get("id") or ""), str(values.get("address") or "")
    if bool(server_id) == bool(address):
        raise CommandFailed("Error: exactly one of -id or -address is required")
    client = make_client(values, ctx)
    params = [("id", server_id)] if server_id else [("address", address)]
    _call("removing peer", client.request, "DELETE", "/v1/operator/raft/peer", params=params)
    ctx.out(f'Removed peer with {"id" if server_id else "address"} "{server_id or address}"')
    return 0


def cmd_transfer_leader(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("operator raft transfer-leader", "Usage: waypost operator raft transfer-leader [options]\n\n"
                 "  Moves Raft leadership to the server with -id (default: the most caught-up voter).")  # fmt: skip
    add_http_flags(fs)
    fs.string("id", "The ID of the server to transfer leadership to.", placeholder="id")
    values, args = parse_flags(fs, argv)
    no_positional(args)
    client = make_client(values, ctx)
    params = [("id", str(values["id"]))] if values.get("id") else []
    _call("transferring leadership", client.request, "POST", "/v1/operator/raft/transfer-leader", params=params)
    ctx.out("Success")
    return 0


RAFT = {
    "list-peers": ("Display the current Raft peer configuration", cmd_list_peers),
    "remove-peer": ("Remove a Consul server from the Raft configuration", cmd_remove_peer),
    "transfer-leader": ("Transfer Raft leadership to another server", cmd_transfer_leader),
}
