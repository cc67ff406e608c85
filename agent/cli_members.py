"""CLI commands for the gossip pool: members, join, force-leave, keygen, keyring (layer 5).

Contract (Consul's flags, output and exit codes; agent calls through agent/cli_http.py, so
`-http-addr`, `WAYPOST_HTTP_ADDR` and `CONSUL_HTTP_ADDR` apply):
- `members [-detailed] [-status REGEX] [-wan] [-segment S] [-filter F]` prints Consul's table
  (agent/cli_format.py); exit 2 when no member matches.
- `join [-wan] ADDR...` joins each address (one `PUT /v1/agent/join/:addr` each), printing
  `Successfully joined cluster by contacting N nodes.`; every failure is one line on stderr; exit 1
  when none joined.
- `force-leave [-prune] [-wan] NODE` → `PUT /v1/agent/force-leave/:node`; silent on success
  (as Consul), `Error force leaving: <reason>` and exit 1 on failure.
- `keygen` prints a new base64 32-byte key; it needs no agent.
- `keyring -list | -list-primary | -install KEY | -use KEY | -remove KEY [-relay-factor N]
  [-local-only]`: exactly one action; `==> Gathering installed encryption keys...` style info
  lines, then per pool `\\n<dc> (LAN):`, one `  ===> node: message` line per node message and
  `  <key> [count/nodes]` per key (sorted, for stable output); errors as `error: <reason>`, exit 1.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from agent.cli_common import CommandExit, CommandFailed, Ctx, add_http_flags, make_client, no_positional, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_format import filter_members, format_members
from agent.cli_http import AgentError
from agent.gossip.keyring import generate_key

MAX_RELAY_FACTOR = 5  # Consul's limit (ParseRelayFactor)


def _call(what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    try:
        return fn(*args, **kwargs)
    except AgentError as err:
        raise CommandFailed(f"{what}{err}") from None


def cmd_members(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("members", "Usage: waypost members [options]\n\n  Outputs the members of a running agent.")
    fs.bool("detailed", "Provides detailed information about nodes.")
    fs.bool("wan", "If the agent is in server mode, return the other peers in the WAN pool.")
    fs.string("status", "If provided, output is filtered to only nodes matching the regular "
              "expression for status.", default=".*")  # fmt: skip
    fs.string("segment", "(Enterprise-only) Accepted and ignored.")
    fs.string("filter", "Filter to use with the request.")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    no_positional(args)
    try:
        status_re = re.compile(str(values["status"]))
    except re.error as err:
        raise CommandFailed(f"Failed to compile status regexp: {err}") from None
    client = make_client(values, ctx)
    params: list[tuple[str, str]] = []
    if values["wan"]:
        params.append(("wan", "1"))
    if values["filter"]:
        params.append(("filter", str(values["filter"])))
    raw = _call("Error retrieving members: ", client.get, "/v1/agent/members", params)
    members = [m for m in raw if isinstance(m, Mapping)] if isinstance(raw, list) else []
    kept = filter_members(members, lambda s: status_re.search(s) is not None)
    if not kept:
        return 2
    ctx.out(format_members(kept, bool(values["detailed"])))
    return 0


def cmd_join(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "join",
        "Usage: waypost join [options] address ...\n\n"
        "  Tells a running agent to join the cluster by contacting at least one existing member.",
    )
    fs.bool("wan", "Joins a server to another server in the WAN pool.")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    if not args:
        raise CommandExit(1, stderr=f"At least one address to join must be specified.\n\n{fs.usage()}")
    client = make_client(values, ctx)
    params = [("wan", "1")] if values["wan"] else []
    joined = 0
    for addr in args:
        try:
            client.put(f"/v1/agent/join/{addr}", params=params)
            joined += 1
        except AgentError as err:
            ctx.err(f"Error joining address '{addr}': {err}")
    if joined == 0:
        raise CommandFailed("Failed to join any nodes.")
    ctx.out(f"Successfully joined cluster by contacting {joined} nodes.")
    return 0


def cmd_force_leave(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "force-leave",
        "Usage: waypost force-leave [options] name\n\n"
        "  Forces a member of the cluster to enter the \"left\" state. Note that if the member is\n"
        "  still actually alive, it will eventually rejoin the cluster. This command is most\n"
        "  useful for cleaning out \"failed\" nodes that are never coming back.",
    )
    fs.bool("prune", "Remove agent forcibly from list of members.")
    fs.bool("wan", "Exclusively leave the agent from the WAN serf pool.")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    if len(args) != 1:
        raise CommandExit(1, stderr=f"A single node name must be specified to force leave.\n\n{fs.usage()}")
    client = make_client(values, ctx)
    params: list[tuple[str, str]] = []
    if values["prune"]:
        params.append(("prune", "1"))
    if values["wan"]:
        params.append(("wan", "1"))
    _call("Error force leaving: ", client.put, f"/v1/agent/force-leave/{args[0]}", params=params)
    return 0


def cmd_keygen(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "keygen",
        "Usage: waypost keygen\n\n"
        "  Generates a new encryption key that can be used to configure the agent to encrypt\n"
        "  traffic. The output of this command is already in the proper format that the agent expects.",
    )
    _, args = parse_flags(fs, argv)
    no_positional(args)
    ctx.out(generate_key())
    return 0


KEYRING_HELP = """\
Usage: waypost keyring [options]

  Manages encryption keys used for gossip messages. Gossip encryption is
  optional. When enabled, this command may be used to examine active encryption
  keys in the cluster, add new keys, and remove old ones. When combined, this
  functionality provides the ability to perform key rotation cluster-wide,
  without disrupting the cluster.

  All variations of the keyring command return 0 if all nodes reply and there
  are no errors. If any node fails to reply or reports failure, the exit code
  will be 1."""


def _keyring_flags() -> FlagSet:
    fs = FlagSet("keyring", KEYRING_HELP)
    fs.string("install", "Install a new encryption key. This will broadcast the new key to all members "
              "in the cluster.")  # fmt: skip
    fs.string("use", "Change the primary encryption key, which is used to encrypt messages. The key must "
              "already be installed before this operation can succeed.")  # fmt: skip
    fs.string("remove", "Remove the given key from the cluster. This operation may only be performed on "
              "keys which are not currently the primary key.")  # fmt: skip
    fs.bool("list", "List all keys currently in use within the cluster.")
    fs.bool("list-primary", "List all primary keys currently in use within the cluster.")
    fs.int("relay-factor", "Setting this to a non-zero value will cause nodes to relay their response to "
           "the operation through this many randomly-chosen other nodes in the cluster. The maximum "
           "allowed value is 5.")  # fmt: skip
    fs.bool("local-only", "Setting this to true will force the keyring query to only hit local servers "
            "(no WAN traffic). This flag can only be set for list queries.")  # fmt: skip
    add_http_flags(fs)
    return fs


def cmd_keyring(argv: list[str], ctx: Ctx) -> int:
    fs = _keyring_flags()
    values, args = parse_flags(fs, argv)
    no_positional(args)
    listing = bool(values["list"]) or bool(values["list-primary"])
    actions = [bool(values["list"]), bool(values["list-primary"])]
    actions += [bool(values[name]) for name in ("install", "use", "remove")]
    if sum(actions) > 1:
        raise CommandFailed("Only a single action is allowed")
    if not any(actions):
        raise CommandExit(1, stderr=fs.usage())
    relay = int(str(values["relay-factor"]))
    if not 0 <= relay <= MAX_RELAY_FACTOR:
        raise CommandFailed(f"Error parsing relay factor: Relay factor must be in range: [0, {MAX_RELAY_FACTOR}]")
    if values["local-only"] and not listing:
        raise CommandFailed("Error validating local-only: local-only can only be set for list queries")
    client = make_client(values, ctx)
    params: list[tuple[str, str]] = [("relay-factor", str(relay))] if relay else []
    if listing:
        primary = bool(values["list-primary"])
        ctx.out(f"==> Gathering installed {'primary ' if primary else ''}encryption keys...")
        if values["local-only"]:
            params.append(("local-only", "true"))
        raw = _call("error: ", client.get, "/v1/operator/keyring", params)
        for pool in raw if isinstance(raw, list) else []:
            if isinstance(pool, Mapping):
                ctx.out(format_keyring_pool(pool, "PrimaryKeys" if primary else "Keys"))
        return 0
    for flag, method, info in (("install", "POST", "Installing new gossip encryption key..."),
                               ("use", "PUT", "Changing primary gossip encryption key..."),
                               ("remove", "DELETE", "Removing gossip encryption key...")):  # fmt: skip
        if values[flag]:
            ctx.out(f"==> {info}")
            _call("error: ", client.request, method, "/v1/operator/keyring", body={"Key": str(values[flag])},
                  params=params)
    return 0


def format_keyring_pool(pool: Mapping[str, object], field: str) -> str:
    """One pool of a keyring listing, as Consul's `formatResponse` (maps sorted for stable output)."""
    name = "WAN" if pool.get("WAN") else f"{pool.get('Datacenter', '')} (LAN)"
    if pool.get("Segment"):
        name += f" [{pool['Segment']}]"
    lines = ["", f"{name}:"]
    messages = pool.get("Messages")
    if isinstance(messages, Mapping):
        lines += [f"  ===> {node}: {messages[node]}" for node in sorted(messages)]
    keys = pool.get(field)
    total = pool.get("NumNodes", 0)
    if isinstance(keys, Mapping):
        lines += [f"  {key} [{keys[key]}/{total}]" for key in sorted(keys)]
    return "\n".join(lines)
