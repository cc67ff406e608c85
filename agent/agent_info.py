"""Who an agent is and what it says about itself: address, node id, `/v1/agent/self`, the banner (layer 5).

Contract: `advertise_address(config)` is the address other agents reach this one at (the
`advertise_addr`, else a specific `bind_addr`, else the interface that routes outward);
`node_id(config)` a UUID kept in `data_dir/node-id` (new each run in memory); `self_info(agent)`
is `/v1/agent/self` (Config, DebugConfig, Coord, Member, Meta, Stats — Raft stats only on servers);
`debug_config(config)` the runtime configuration in that answer (unstable format, like Consul's);
`banner(agent)` the start-up banner (tests read the ports from its `Client Addr` and `Cluster Addr`
lines).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from agent.config import AgentConfig
from agent.http.members import member_json
from agent.version import VERSION

if TYPE_CHECKING:
    from agent.agent import Agent


def advertise_address(config: AgentConfig) -> str:
    if config.advertise_addr:
        return config.advertise_addr
    if config.bind_addr not in ("0.0.0.0", "::", ""):
        return config.bind_addr
    if config.dev:
        return "127.0.0.1"
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        return probe.getsockname()[0]
    return "127.0.0.1"


def node_id(config: AgentConfig) -> str:
    if not config.data_dir or config.dev:
        return str(uuid.uuid4())
    path = Path(config.data_dir) / "node-id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = str(uuid.uuid4())
    path.write_text(value)
    return value


def self_info(agent: Agent) -> dict:
    config = agent.config
    stats: dict[str, dict[str, str]] = {
        "agent": {"check_monitors": str(len(agent.runners.ids())), "services": str(len(agent.state.services)),
                  "checks": str(len(agent.state.checks))},
        "build": {"version": VERSION, "revision": "waypost", "prerelease": ""},
        "consul": {"server": str(config.server).lower(), "known_servers": str(len(agent.membership.servers()))},
        "serf_lan": {"members": str(len(agent.membership.members())),
                     "encrypted": str(agent.membership.keyring is not None).lower()},
        "runtime": {"os": sys.platform, "arch": os.uname().machine, "version": sys.version.split()[0]},
    }
    if agent.server is not None:
        raft = agent.server.raft
        stats["consul"].update(leader=str(raft.is_leader()).lower(), known_datacenters="1",
                               bootstrap=str(config.bootstrap or config.dev).lower(),
                               leader_addr=agent.server.leader_address())
        stats["raft"] = {"applied_index": str(raft.applied_index()), "state": raft.role().capitalize(),
                         "term": str(raft.term()), "commit_index": str(raft.commit_index()),
                         "num_peers": str(max(len(agent.server.peers()) - 1, 0)), "protocol_version": "3"}
    return {
        "Config": {"Datacenter": config.datacenter, "PrimaryDatacenter": config.datacenter,
                   "NodeName": agent.node.node, "NodeID": agent.node.id, "Server": config.server,
                   "Revision": "waypost", "Version": VERSION, "BuildDate": ""},
        "DebugConfig": debug_config(config),
        "Coord": {"Adjustment": 0, "Error": 1.5, "Height": 1e-05, "Vec": [0.0] * 8},
        "Member": member_json(agent.membership.node.local_member()),
        "Meta": dict(config.node_meta),
        "Stats": stats,
    }


def debug_config(config: AgentConfig) -> dict:
    out = {}
    for f in dataclasses.fields(config):
        if f.name in ("services", "checks", "encrypt"):
            continue
        value = getattr(config, f.name)
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    out["services"] = len(config.services)
    return out


def banner(agent: Agent) -> str:
    c = agent.config
    role = f"true (Bootstrap: {str(c.bootstrap or c.dev).lower()})" if c.server else "false"
    server_port = f", Server: {agent.server_port}" if c.server else ""
    return "\n".join([
        "==> Waypost agent running!",
        f"           Version: '{VERSION}'",
        f"           Node ID: '{agent.node.id}'",
        f"         Node name: '{agent.node.node}'",
        f"        Datacenter: '{c.datacenter}'",
        f"            Server: {role}",
        f"       Client Addr: [{c.client_addr}] (HTTP: {agent.http_port or -1}, DNS: {agent.dns_port or -1})",
        f"      Cluster Addr: {agent.address} (LAN: {agent.membership.port}, WAN: {c.ports.serf_wan}{server_port})",
        f" Gossip Encryption: {str(agent.membership.keyring is not None).lower()}",
        f"          Data Dir: {c.data_dir if c.data_dir and not c.dev else '(in memory)'}",
        "",
        "==> Log data will now stream in as it occurs:",
    ])
