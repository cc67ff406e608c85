"""Text output of the CLI, shaped like Consul's (layer 5 helper, pure functions, stdlib only).

Contract (every function takes decoded API JSON and returns the text to print, no newline at end):
- `columnize(rows)` is ryanuber/columnize as Consul uses it: columns padded to the widest cell,
  joined by two spaces, last column unpadded (trailing blanks trimmed).
- `format_members(members, detailed)` → `consul members` table, sorted servers first then by name;
  `member_status(int)` → serf's `alive`/`leaving`/`left`/`failed`/`none`.
- `format_catalog_services(services, tags)` → names one per line, or with `tags` a two-column
  table (Go tabwriter, padding 6, tags comma-joined and sorted).
- `format_catalog_nodes(nodes, detailed)` → `Node ID Address DC` (ID cut at its first `-`, i.e.
  the first 8 hex digits of a UUID) or, detailed, the full ID plus `TaggedAddresses` and `Meta`.
- `format_info(self_json)` → `consul info`'s `section:` / `\tkey = value` listing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence

GLUE = "  "
TABWRITER_PADDING = 6
MEMBER_STATUS = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
ROLE_SERVER = "consul"
ROLE_CLIENT = "node"


def columnize(rows: Sequence[Sequence[str]]) -> str:
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) if i < len(row) - 1 else cell for i, cell in enumerate(row)]
        lines.append(GLUE.join(cells).rstrip())
    return "\n".join(lines)


def tabwrite(rows: Sequence[Sequence[str]], padding: int = TABWRITER_PADDING) -> str:
    """Go's text/tabwriter with minwidth 0 and the given padding (Consul `catalog services -tags`)."""
    widths: list[int] = []
    for row in rows:
        for i, cell in enumerate(row[:-1]):
            if i == len(widths):
                widths.append(0)
            widths[i] = max(widths[i], len(cell) + padding)
    lines = []
    for row in rows:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])]
        lines.append(("".join(cells) + (row[-1] if row else "")).rstrip())
    return "\n".join(lines).strip()


def member_status(status: object) -> str:
    if isinstance(status, int) and not isinstance(status, bool):
        return MEMBER_STATUS.get(status, "unknown")
    return str(status)


def host_port(addr: str, port: object) -> str:
    """Go's net.TCPAddr.String(): IPv6 hosts in brackets."""
    try:
        if ipaddress.ip_address(addr).version == 6:
            return f"[{addr}]:{port}"
    except ValueError:
        pass
    return f"{addr}:{port}"


def _member_tags(member: Mapping[str, object]) -> dict[str, str]:
    raw = member.get("Tags") or {}
    tags = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, Mapping) else {}
    if not tags.get("ap"):
        tags["ap"] = "default"
    if tags["ap"] == "default":
        if tags.get("role") == ROLE_SERVER:
            tags["segment"] = "<all>"
        elif not tags.get("segment"):
            tags["segment"] = "<default>"
    else:
        tags["segment"] = ""
    return tags


def _member_sort_key(member: Mapping[str, object]) -> tuple[int, int, str, str, str]:
    tags = _member_tags(member)
    partition = tags["ap"]
    return (
        0 if tags.get("role") == ROLE_SERVER else 1,
        0 if partition in ("", "default") else 1,
        tags["segment"],
        partition,
        str(member.get("Name", "")),
    )


def filter_members(
    members: Sequence[Mapping[str, object]], status_matches: Callable[[str], bool]
) -> list[Mapping[str, object]]:
    """Members whose rendered status satisfies `status_matches(str) -> bool`, in Consul's order."""
    kept = [m for m in members if status_matches(member_status(m.get("Status")))]
    return sorted(kept, key=_member_sort_key)


def format_members(members: Sequence[Mapping[str, object]], detailed: bool) -> str:
    if detailed:
        rows = [["Node", "Address", "Status", "Tags"]]
        for m in members:
            tags = _member_tags(m)
            pairs = ",".join(f"{k}={tags[k]}" for k in sorted(tags))
            rows.append([_s(m, "Name"), _member_addr(m), member_status(m.get("Status")), pairs])
        return columnize(rows)
    rows = [["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]]
    for m in members:
        tags = _member_tags(m)
        status = member_status(m.get("Status"))
        role = tags.get("role", "")
        if role not in (ROLE_SERVER, ROLE_CLIENT):
            rows.append([_s(m, "Name"), _member_addr(m), status, "unknown", "", "", "", "", ""])
            continue
        build = tags.get("build", "")
        build = build.split(":", 1)[0] if build else "< 0.3"
        kind = "server" if role == ROLE_SERVER else "client"
        rows.append(
            [_s(m, "Name"), _member_addr(m), status, kind, build, tags.get("vsn", ""),
             tags.get("dc", ""), tags["ap"], tags["segment"]]
        )  # fmt: skip
    return columnize(rows)


def _member_addr(member: Mapping[str, object]) -> str:
    return host_port(_s(member, "Addr"), member.get("Port", 0))


def _s(obj: Mapping[str, object], key: str) -> str:
    value = obj.get(key)
    return "" if value is None else str(value)


def format_catalog_services(services: Mapping[str, Sequence[str] | None], tags: bool) -> str:
    names = sorted(services)
    if not tags:
        return "\n".join(names)
    return tabwrite([[name, ",".join(sorted(services[name] or ()))] for name in names])


def node_services_to_map(node_json: object) -> dict[str, list[str]]:
    """`GET /v1/catalog/node/:n` → {service name: tags of all its instances} (Consul's merge)."""
    out: dict[str, list[str]] = {}
    if not isinstance(node_json, Mapping):
        return out
    services = node_json.get("Services") or {}
    items = services.values() if isinstance(services, Mapping) else services
    for svc in items:
        if isinstance(svc, Mapping):
            out.setdefault(_s(svc, "Service"), []).extend(str(t) for t in svc.get("Tags") or ())
    return out


def service_nodes_to_nodes(service_nodes: Sequence[Mapping[str, object]]) -> list[dict[str, object]]:
    """`GET /v1/catalog/service/:s` rows → the Node shape `catalog nodes -service` prints."""
    return [
        {
            "ID": sn.get("ID", ""),
            "Node": sn.get("Node", ""),
            "Address": sn.get("Address", ""),
            "Datacenter": sn.get("Datacenter", ""),
            "TaggedAddresses": sn.get("TaggedAddresses") or {},
            "Meta": sn.get("NodeMeta") or {},
        }
        for sn in service_nodes
    ]


def _kv(mapping: object) -> str:
    if not isinstance(mapping, Mapping):
        return ""
    return ", ".join(f"{k}={mapping[k]}" for k in sorted(mapping))


def format_catalog_nodes(nodes: Sequence[Mapping[str, object]], detailed: bool) -> str:
    if detailed:
        rows = [["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]]
        for n in nodes:
            rows.append(
                [_s(n, "Node"), _s(n, "ID"), _s(n, "Address"), _s(n, "Datacenter"),
                 _kv(n.get("TaggedAddresses")), _kv(n.get("Meta"))]
            )  # fmt: skip
        return columnize(rows)
    rows = [["Node", "ID", "Address", "DC"]]
    for n in nodes:
        node_id = _s(n, "ID")
        cut = node_id.find("-")
        if cut > 0:
            node_id = node_id[:cut]
        rows.append([_s(n, "Node"), node_id, _s(n, "Address"), _s(n, "Datacenter")])
    return columnize(rows)


def _scalar(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def info_sections(self_json: Mapping[str, object]) -> dict[str, Mapping[str, object]]:
    """`Stats` of /v1/agent/self; an agent without it gets `Config` and `Member` as sections."""
    stats = self_json.get("Stats")
    if isinstance(stats, Mapping) and stats:
        return {str(k): v for k, v in stats.items() if isinstance(v, Mapping)}
    sections: dict[str, Mapping[str, object]] = {}
    for key in ("Config", "Member", "Meta"):
        value = self_json.get(key)
        if isinstance(value, Mapping) and value:
            sections[key.lower()] = value
    return sections


def format_info(self_json: Mapping[str, object]) -> str:
    lines: list[str] = []
    sections = info_sections(self_json)
    for name in sorted(sections):
        lines.append(f"{name}:")
        values = sections[name]
        for key in sorted(values):
            lines.append(f"\t{key} = {_scalar(values[key])}")
    return "\n".join(lines)
