"""The one shape of each catalog concept (layer 0: stdlib + checks.definition only).

Contract:
- `Node`, `NodeService`, `HealthCheck` are the catalog rows. The store replaces them whole
  (`dataclasses.replace`), never mutates a row another reader may hold.
- `to_api()` renders Consul's JSON field names exactly (reference §1.9, §2.5–2.8, §3.2); the
  flattened `ServiceNode` of `/v1/catalog/service/:name` is `service_node_api(node, service)`.
- `ServiceDefinition` is a local service as a user declares it: a `NodeService` plus its checks.
- `to_record()/from_record()` give msgpack-able dicts for the Raft log and snapshots.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from checks.definition import CheckDefinition, CheckKind, Status

SERF_CHECK_ID = "serfHealth"
SERF_CHECK_NAME = "Serf Health Status"
SERF_ALIVE_OUTPUT = "Agent alive and reachable"
SERF_FAILED_OUTPUT = "Agent not live or unreachable"
NODE_MAINT_CHECK_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"


@dataclass(slots=True, frozen=True)
class Weights:
    passing: int = 1
    warning: int = 1

    def to_api(self) -> dict[str, int]:
        return {"Passing": self.passing, "Warning": self.warning}


@dataclass(slots=True, frozen=True)
class Node:
    node: str
    address: str
    id: str = ""
    datacenter: str = "dc1"
    tagged_addresses: dict[str, str] = field(default_factory=dict)
    meta: dict[str, str] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    def to_api(self) -> dict[str, object]:
        return {
            "ID": self.id,
            "Node": self.node,
            "Address": self.address,
            "Datacenter": self.datacenter,
            "TaggedAddresses": dict(self.tagged_addresses),
            "Meta": dict(self.meta),
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    def to_record(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> Node:
        return cls(**record)


@dataclass(slots=True, frozen=True)
class NodeService:
    id: str
    service: str
    tags: tuple[str, ...] = ()
    address: str = ""
    port: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    tagged_addresses: dict[str, tuple[str, int]] = field(default_factory=dict)
    weights: Weights = Weights()
    enable_tag_override: bool = False
    kind: str = ""
    create_index: int = 0
    modify_index: int = 0

    def to_api(self, datacenter: str | None = None) -> dict[str, object]:
        out: dict[str, object] = {
            "Kind": self.kind,
            "ID": self.id,
            "Service": self.service,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
            "Port": self.port,
            "Address": self.address,
            "TaggedAddresses": _tagged_api(self.tagged_addresses),
            "Weights": self.weights.to_api(),
            "EnableTagOverride": self.enable_tag_override,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }
        if datacenter is not None:
            out["Datacenter"] = datacenter
        return out

    def to_record(self) -> dict[str, object]:
        record = asdict(self)
        record["tags"] = list(self.tags)
        record["tagged_addresses"] = {k: list(v) for k, v in self.tagged_addresses.items()}
        return record

    @classmethod
    def from_record(cls, record: dict) -> NodeService:
        values = dict(record)
        values["tags"] = tuple(values.get("tags", ()))
        values["tagged_addresses"] = {
            k: (str(v[0]), int(v[1])) for k, v in values.get("tagged_addresses", {}).items()
        }
        weights = values.get("weights", {})
        values["weights"] = Weights(**weights) if isinstance(weights, dict) else weights
        return cls(**values)


def _tagged_api(tagged: dict[str, tuple[str, int]]) -> dict[str, dict[str, object]]:
    return {name: {"Address": addr, "Port": port} for name, (addr, port) in tagged.items()}


def service_node_api(node: Node, service: NodeService) -> dict[str, object]:
    """Consul's flattened `ServiceNode` (GET /v1/catalog/service/:name)."""
    return {
        "ID": node.id,
        "Node": node.node,
        "Address": node.address,
        "Datacenter": node.datacenter,
        "TaggedAddresses": dict(node.tagged_addresses),
        "NodeMeta": dict(node.meta),
        "ServiceKind": service.kind,
        "ServiceID": service.id,
        "ServiceName": service.service,
        "ServiceTags": list(service.tags),
        "ServiceAddress": service.address,
        "ServiceTaggedAddresses": _tagged_api(service.tagged_addresses),
        "ServiceWeights": service.weights.to_api(),
        "ServiceMeta": dict(service.meta),
        "ServicePort": service.port,
        "ServiceEnableTagOverride": service.enable_tag_override,
        "ServiceProxy": {},
        "ServiceConnect": {},
        "CreateIndex": service.create_index,
        "ModifyIndex": service.modify_index,
    }


@dataclass(slots=True, frozen=True)
class HealthCheck:
    node: str
    check_id: str
    name: str
    status: Status = Status.CRITICAL
    notes: str = ""
    output: str = ""
    service_id: str = ""
    service_name: str = ""
    service_tags: tuple[str, ...] = ()
    type: CheckKind = CheckKind.NONE
    interval: str = ""
    timeout: str = ""
    definition: dict[str, object] = field(default_factory=dict)
    create_index: int = 0
    modify_index: int = 0

    @property
    def is_maintenance(self) -> bool:
        return self.check_id == NODE_MAINT_CHECK_ID or self.check_id.startswith(SERVICE_MAINT_PREFIX)

    def same_state(self, other: HealthCheck) -> bool:
        """True when nothing but the indexes differ (a write that would change nothing)."""
        return (
            self.status == other.status
            and self.output == other.output
            and self.name == other.name
            and self.notes == other.notes
            and self.service_id == other.service_id
            and self.service_name == other.service_name
            and self.service_tags == other.service_tags
            and self.type == other.type
            and self.interval == other.interval
            and self.timeout == other.timeout
            and self.definition == other.definition
        )

    def to_api(self) -> dict[str, object]:
        return {
            "Node": self.node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": str(self.status),
            "Notes": self.notes,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "ServiceTags": list(self.service_tags),
            "Type": str(self.type),
            "Interval": self.interval,
            "Timeout": self.timeout,
            "ExposedPort": 0,
            "Definition": dict(self.definition),
            "Namespace": "default",
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        }

    def to_record(self) -> dict[str, object]:
        record = asdict(self)
        record["status"] = str(self.status)
        record["type"] = str(self.type)
        record["service_tags"] = list(self.service_tags)
        return record

    @classmethod
    def from_record(cls, record: dict) -> HealthCheck:
        values = dict(record)
        values["status"] = Status(values.get("status", "critical"))
        values["type"] = CheckKind(values.get("type", ""))
        values["service_tags"] = tuple(values.get("service_tags", ()))
        return cls(**values)


@dataclass(slots=True)
class ServiceDefinition:
    """A local service as declared in a file or through /v1/agent/service/register."""

    service: NodeService
    checks: list[CheckDefinition] = field(default_factory=list)
    source: str = ""  # "file:/etc/waypost.d/web.yaml" or "api"


def aggregate_status(checks: list[HealthCheck]) -> str:
    """Consul's AggregatedStatus: maintenance > critical > warning > passing (empty = passing)."""
    if any(c.is_maintenance for c in checks):
        return "maintenance"
    statuses = {c.status for c in checks}
    for status in (Status.CRITICAL, Status.WARNING):
        if status in statuses:
            return str(status)
    return str(Status.PASSING)
