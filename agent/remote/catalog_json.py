"""Catalog rows and commands ↔ Consul's JSON, for client agents talking to a server (layer 2).

Contract (pure functions over dataclasses, the inverse pairs of `agent.types.*.to_api` and of
`agent.decode.decode_catalog_register` / `decode_catalog_deregister`):
- `register_body(cmd)` is the `PUT /v1/catalog/register` body of a `RegisterCommand`; the server's
  decoder turns it back into an equal command (node with its meta, service with its tagged
  addresses and weights, checks with Type/Interval/Timeout/Definition, SkipNodeUpdate).
- `deregister_body(cmd)` is the `PUT /v1/catalog/deregister` body of a `DeregisterCommand`.
- `node_from_api`, `service_from_api`, `check_from_api` read `GET /v1/catalog/node/:node` and
  `GET /v1/health/node/:node` rows back into `Node` / `NodeService` / `HealthCheck` (indexes
  included); malformed rows raise `MalformedAnswer`.
"""

from __future__ import annotations

from agent.catalog.commands import DeregisterCommand, RegisterCommand
from agent.errors import WaypostError
from agent.types import HealthCheck, Node, NodeService, Weights
from checks.definition import CheckKind, Status

_KINDS = frozenset(k.value for k in CheckKind)


class MalformedAnswer(WaypostError):
    """A server's answer does not have the shape of Consul's JSON."""


def _service_body(service: NodeService) -> dict[str, object]:
    return {
        "ID": service.id, "Service": service.service, "Tags": list(service.tags),
        "Address": service.address, "Port": service.port, "Meta": dict(service.meta),
        "TaggedAddresses": {k: {"Address": a, "Port": p} for k, (a, p) in service.tagged_addresses.items()},
        "Weights": service.weights.to_api(), "EnableTagOverride": service.enable_tag_override,
        "Kind": service.kind,
    }


def _check_body(check: HealthCheck) -> dict[str, object]:
    return {
        "Node": check.node, "CheckID": check.check_id, "Name": check.name, "Status": str(check.status),
        "Notes": check.notes, "Output": check.output, "ServiceID": check.service_id,
        "ServiceName": check.service_name, "ServiceTags": list(check.service_tags),
        "Type": str(check.type), "Interval": check.interval, "Timeout": check.timeout,
        "Definition": dict(check.definition),
    }


def register_body(cmd: RegisterCommand) -> dict[str, object]:
    node = cmd.node
    body: dict[str, object] = {
        "ID": node.id, "Node": node.node, "Address": node.address, "Datacenter": node.datacenter,
        "TaggedAddresses": dict(node.tagged_addresses), "NodeMeta": dict(node.meta),
        "SkipNodeUpdate": cmd.skip_node_update,
    }
    if cmd.service is not None:
        body["Service"] = _service_body(cmd.service)
    if cmd.checks:
        body["Checks"] = [_check_body(c) for c in cmd.checks]
    return body


def deregister_body(cmd: DeregisterCommand) -> dict[str, object]:
    body: dict[str, object] = {"Node": cmd.node}
    if cmd.service_id:
        body["ServiceID"] = cmd.service_id
    if cmd.check_id:
        body["CheckID"] = cmd.check_id
    return body


def _str_map(value: object) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return {str(k): str(v) for k, v in value.items()}


def node_from_api(d: dict) -> Node:
    try:
        return Node(node=str(d["Node"]), address=str(d["Address"]), id=str(d.get("ID") or ""),
                    datacenter=str(d.get("Datacenter") or ""),
                    tagged_addresses=_str_map(d.get("TaggedAddresses")), meta=_str_map(d.get("Meta")),
                    create_index=int(d.get("CreateIndex", 0)), modify_index=int(d.get("ModifyIndex", 0)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedAnswer(f"malformed node in a server's answer: {exc}") from exc


def service_from_api(d: dict) -> NodeService:
    try:
        weights = d.get("Weights") or {}
        tagged = d.get("TaggedAddresses") or {}
        return NodeService(
            id=str(d["ID"]), service=str(d["Service"]), tags=tuple(str(t) for t in d.get("Tags") or ()),
            address=str(d.get("Address") or ""), port=int(d.get("Port") or 0), meta=_str_map(d.get("Meta")),
            tagged_addresses={str(k): (str(v["Address"]), int(v["Port"])) for k, v in tagged.items()},
            weights=Weights(int(weights.get("Passing", 1)), int(weights.get("Warning", 1))),
            enable_tag_override=bool(d.get("EnableTagOverride", False)), kind=str(d.get("Kind") or ""),
            create_index=int(d.get("CreateIndex", 0)), modify_index=int(d.get("ModifyIndex", 0)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedAnswer(f"malformed service in a server's answer: {exc}") from exc


def check_from_api(d: dict) -> HealthCheck:
    try:
        kind = str(d.get("Type") or "")
        definition = d.get("Definition") or {}
        if not isinstance(definition, dict):
            raise TypeError("Definition is not an object")
        return HealthCheck(
            node=str(d["Node"]), check_id=str(d["CheckID"]), name=str(d.get("Name") or ""),
            status=Status(d.get("Status", "critical")), notes=str(d.get("Notes") or ""),
            output=str(d.get("Output") or ""), service_id=str(d.get("ServiceID") or ""),
            service_name=str(d.get("ServiceName") or ""),
            service_tags=tuple(str(t) for t in d.get("ServiceTags") or ()),
            type=CheckKind(kind) if kind in _KINDS else CheckKind.NONE,
            interval=str(d.get("Interval") or ""), timeout=str(d.get("Timeout") or ""),
            definition=dict(definition),
            create_index=int(d.get("CreateIndex", 0)), modify_index=int(d.get("ModifyIndex", 0)))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedAnswer(f"malformed check in a server's answer: {exc}") from exc
