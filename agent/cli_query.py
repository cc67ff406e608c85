"""CLI commands that read or poke the agent: catalog, info, reload, leave (layer 5; gossip commands
such as members and join live in agent/cli_members.py).

Contract: each `cmd_*(argv, ctx) -> int` parses Consul's flags, makes the HTTP call(s) of
reference §10.6 and prints Consul's text (agent/cli_format.py). Agent failures become one line
`Error <doing what>: <reason>` via `CommandFailed`; exit codes follow Consul (empty catalog
listings print a hint on stderr and exit 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from agent.cli_common import (
    CommandFailed,
    Ctx,
    add_http_flags,
    make_client,
    no_positional,
    node_meta_params,
    parse_flags,
    query_params,
)
from agent.cli_flags import FlagSet
from agent.cli_format import (
    format_catalog_nodes,
    format_catalog_services,
    format_info,
    info_sections,
    node_services_to_map,
    service_nodes_to_nodes,
)
from agent.cli_http import AgentClient, AgentError

NO_SERVICES = "No services match the given query - try expanding your search."
NO_NODES = "No nodes match the given query - try expanding your search."


def _call(what: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
    try:
        return fn(*args, **kwargs)
    except AgentError as err:
        raise CommandFailed(f"Error {what}: {err}") from None


def _list_of_maps(value: object) -> list[Mapping[str, object]]:
    if not isinstance(value, list):
        return []
    return [v for v in value if isinstance(v, Mapping)]


def cmd_catalog_services(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "catalog services",
        "Usage: waypost catalog services [options]\n\n"
        "  Retrieves the list of services registered in a given datacenter.",
    )
    fs.string("node", "Node id or name for which to list services.", placeholder="node")
    fs.mapping("node-meta", "Metadata to filter nodes with the given key=value pairs (repeatable).")
    fs.bool("tags", "Display each service's tags as a comma-separated list beside each service entry.")
    add_http_flags(fs, server=True)
    values, args = parse_flags(fs, argv)
    no_positional(args)
    client = make_client(values, ctx)
    params = query_params(values) + node_meta_params(values["node-meta"])
    services: dict[str, list[str]] = {}
    if values["node"]:
        node = _call("listing services for node", client.get, f"/v1/catalog/node/{values['node']}", params)
        services = node_services_to_map(node)
    else:
        raw = _call("listing services", client.get, "/v1/catalog/services", params)
        if isinstance(raw, Mapping):
            services = {str(k): [str(t) for t in (v or ())] for k, v in raw.items()}
    if not services:
        ctx.err(NO_SERVICES)
        return 0
    ctx.out(format_catalog_services(services, bool(values["tags"])))
    return 0


def cmd_catalog_nodes(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet(
        "catalog nodes",
        "Usage: waypost catalog nodes [options]\n\n"
        "  Retrieves the list of nodes registered in a given datacenter.",
    )
    fs.string("service", "Service id or name to filter nodes.", placeholder="service")
    fs.string("near", 'Node name to sort by estimated round-trip time ("_agent" = this agent).')
    fs.mapping("node-meta", "Metadata to filter nodes with the given key=value pairs (repeatable).")
    fs.bool("detailed", "Output detailed information about the nodes including addresses and metadata.")
    fs.string("filter", "Filter to use with the request.")
    add_http_flags(fs, server=True)
    values, args = parse_flags(fs, argv)
    no_positional(args)
    client = make_client(values, ctx)
    params = query_params(values) + node_meta_params(values["node-meta"])
    if values["near"]:
        params.append(("near", str(values["near"])))
    if values["filter"]:
        params.append(("filter", str(values["filter"])))
    if values["service"]:
        path = f"/v1/catalog/service/{values['service']}"
        rows = _list_of_maps(_call("listing nodes for service", client.get, path, params))
        nodes: list[Mapping[str, object]] = list(service_nodes_to_nodes(rows))
    else:
        nodes = _list_of_maps(_call("listing nodes", client.get, "/v1/catalog/nodes", params))
    if not nodes:
        ctx.err(NO_NODES)
        return 0
    ctx.out(format_catalog_nodes(nodes, bool(values["detailed"])))
    return 0


def cmd_catalog_datacenters(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("catalog datacenters", "Usage: waypost catalog datacenters [options]\n\n"
                 "  Retrieves the list of all known datacenters.")  # fmt: skip
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    no_positional(args)
    client = make_client(values, ctx)
    dcs = _call("querying datacenters", client.get, "/v1/catalog/datacenters")
    if not isinstance(dcs, list) or not dcs:
        raise CommandFailed("No datacenters found")
    ctx.out("\n".join(str(dc) for dc in dcs))
    return 0


def _simple_put(argv: list[str], ctx: Ctx, name: str, help_text: str) -> tuple[AgentClient, list[str]]:
    fs = FlagSet(name, help_text)
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    return make_client(values, ctx), args


def cmd_info(argv: list[str], ctx: Ctx) -> int:
    client, args = _simple_put(argv, ctx, "info", "Usage: waypost info [options]\n\n"
                               "  Provides debugging information for operators.")  # fmt: skip
    no_positional(args)
    self_json = _call("querying agent", client.get, "/v1/agent/self")
    if not isinstance(self_json, Mapping) or not info_sections(self_json):
        raise CommandFailed("Error querying agent: response did not contain 'Stats' key")
    ctx.out(format_info(self_json))
    return 0


def cmd_reload(argv: list[str], ctx: Ctx) -> int:
    client, args = _simple_put(argv, ctx, "reload", "Usage: waypost reload [options]\n\n"
                               "  Causes the agent to reload configurations.")  # fmt: skip
    no_positional(args)
    _call("reloading", client.put, "/v1/agent/reload")
    ctx.out("Configuration reload triggered")
    return 0


def cmd_leave(argv: list[str], ctx: Ctx) -> int:
    client, args = _simple_put(
        argv, ctx, "leave", "Usage: waypost leave [options]\n\n  Gracefully leave the cluster and shut down."
    )
    no_positional(args)
    _call("leaving", client.put, "/v1/agent/leave")
    ctx.out("Graceful leave complete")
    return 0
