"""DNS lookup results ↔ JSON for `/v1/internal/dns/*` (servers answer, client agents ask) (layer 2).

Contract: `*_to_json` render `dns.lookup` records field by field (CamelCase keys);
`*_from_json` are their exact inverses (`x_from_json(x_to_json(r)) == r`) and raise
`MalformedAnswer` on anything else. `UNKNOWN_DC_HEADER` marks the 404 that means "unknown
datacenter" (as opposed to "no such name", a 404 with the body `null`).
"""

from __future__ import annotations

from typing import cast

from agent.remote.catalog_json import MalformedAnswer
from dns.lookup import HealthStatus, NodeRecord, PtrOwner, ServiceEndpoint

UNKNOWN_DC_HEADER = "X-Waypost-Unknown-Datacenter"
_STATUSES = ("passing", "warning", "critical", "maintenance")


def endpoint_to_json(e: ServiceEndpoint) -> dict[str, object]:
    return {"Node": e.node, "NodeAddress": e.node_address, "ServiceAddress": e.service_address,
            "Port": e.port, "Tags": list(e.tags), "WeightPassing": e.weight_passing,
            "WeightWarning": e.weight_warning, "Status": e.status, "NodeMeta": dict(e.node_meta),
            "Datacenter": e.datacenter, "ServiceID": e.service_id, "Service": e.service}


def node_to_json(n: NodeRecord) -> dict[str, object]:
    return {"Node": n.node, "Address": n.address, "Meta": dict(n.meta), "Datacenter": n.datacenter}


def ptr_to_json(p: PtrOwner) -> dict[str, object]:
    return {"Kind": p.kind, "Name": p.name, "Datacenter": p.datacenter}


def _meta(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("meta is not an object")
    return {str(k): str(v) for k, v in value.items()}


def endpoint_from_json(d: object) -> ServiceEndpoint:
    try:
        assert isinstance(d, dict)
        status = str(d["Status"])
        if status not in _STATUSES:
            raise ValueError(f"unknown status {status!r}")
        return ServiceEndpoint(
            node=str(d["Node"]), node_address=str(d["NodeAddress"]), service_address=str(d["ServiceAddress"]),
            port=int(d["Port"]), tags=tuple(str(t) for t in d["Tags"]), weight_passing=int(d["WeightPassing"]),
            weight_warning=int(d["WeightWarning"]), status=cast(HealthStatus, status),
            node_meta=_meta(d["NodeMeta"]), datacenter=str(d["Datacenter"]), service_id=str(d["ServiceID"]),
            service=str(d["Service"]))
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        raise MalformedAnswer(f"malformed service endpoint: {exc}") from exc


def node_from_json(d: object) -> NodeRecord:
    try:
        assert isinstance(d, dict)
        return NodeRecord(str(d["Node"]), str(d["Address"]), _meta(d["Meta"]), str(d["Datacenter"]))
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        raise MalformedAnswer(f"malformed node record: {exc}") from exc


def ptr_from_json(d: object) -> PtrOwner:
    try:
        assert isinstance(d, dict)
        kind = d["Kind"]
        if kind not in ("node", "service"):
            raise ValueError(f"unknown kind {kind!r}")
        return PtrOwner(kind, str(d["Name"]), str(d["Datacenter"]))
    except (AssertionError, KeyError, TypeError, ValueError) as exc:
        raise MalformedAnswer(f"malformed PTR owner: {exc}") from exc
