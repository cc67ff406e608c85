"""Catalog write commands: the only things the FSM applies (layer 0).

Contract: every catalog change is one of these dataclasses. `encode(cmd) -> bytes` and
`decode(bytes) -> cmd` are the Raft log format (msgpack, a tagged record); `decode` raises
`CommandError` for bytes that are not a command. Commands never carry config or clocks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgpack

from agent.errors import WaypostError
from agent.types import HealthCheck, Node, NodeService


class CommandError(WaypostError):
    """Bytes in the log that do not decode to a known command."""


@dataclass(slots=True)
class RegisterCommand:
    """Upsert a node, optionally one service, and any checks (Consul's RegisterRequest)."""

    node: Node
    service: NodeService | None = None
    checks: list[HealthCheck] = field(default_factory=list)
    skip_node_update: bool = False


@dataclass(slots=True)
class DeregisterCommand:
    """Remove a whole node, or one service (and its checks), or one check."""

    node: str
    service_id: str = ""
    check_id: str = ""


@dataclass(slots=True)
class NoopCommand:
    """Written by a new leader at the start of its term; changes nothing."""


Command = RegisterCommand | DeregisterCommand | NoopCommand


def encode(command: Command) -> bytes:
    if isinstance(command, RegisterCommand):
        record: dict = {
            "t": "register",
            "node": command.node.to_record(),
            "service": command.service.to_record() if command.service else None,
            "checks": [c.to_record() for c in command.checks],
            "skip_node_update": command.skip_node_update,
        }
    elif isinstance(command, DeregisterCommand):
        record = {"t": "deregister", "node": command.node, "service_id": command.service_id,
                  "check_id": command.check_id}
    elif isinstance(command, NoopCommand):
        record = {"t": "noop"}
    else:  # pragma: no cover - the type checker forbids this
        raise CommandError(f"not a command: {command!r}")
    return msgpack.packb(record, use_bin_type=True)


def decode(data: bytes) -> Command:
    try:
        record = msgpack.unpackb(data, raw=False)
        kind = record["t"]
        if kind == "register":
            service = record["service"]
            return RegisterCommand(
                node=Node.from_record(record["node"]),
                service=NodeService.from_record(service) if service else None,
                checks=[HealthCheck.from_record(c) for c in record["checks"]],
                skip_node_update=bool(record["skip_node_update"]),
            )
        if kind == "deregister":
            return DeregisterCommand(record["node"], record["service_id"], record["check_id"])
        if kind == "noop":
            return NoopCommand()
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise CommandError(f"undecodable command: {exc}") from exc
    raise CommandError(f"unknown command type {kind!r}")
