"""What DNS asks of the catalog: the `Lookup` protocol and its plain records (layer 0).

Contract (implemented by `agent/discovery.py`; dns/ never imports agent/):
- Names are passed lowercased; implementations match service, node and datacenter names
  case-insensitively. `datacenter=None` means the agent's own datacenter.
- `service_endpoints(service, tag, datacenter)` → `None` when the service is not registered at all,
  else every instance **with its aggregated status** ("passing" | "warning" | "critical" |
  "maintenance"); DNS does the health and tag filtering itself (`tag` is a hint an
  implementation may use to pre-filter, case-insensitively). An unknown datacenter raises
  `UnknownDatacenter` (→ NXDOMAIN); any other failure raises `LookupUnavailable` or anything else
  (→ SERVFAIL).
- `node(name, datacenter)` → `NodeRecord | None`; `ptr(address)` → the first node whose address is
  `address`, else the first service instance whose service address is `address`, else `None`;
  `name_servers()` → up to 3 healthy server nodes for NS/SOA answers (may be empty).
- `change_index(service)` is synchronous and cheap (the cache calls it on every hit): with a service
  name, a number that grows whenever anything that can change that service's answer changes (its
  instances, their checks, their nodes' checks and addresses, its creation/deletion); with `None`, a
  number that grows on any catalog change (used for node, PTR, NS and SOA answers). Read before
  the lookup it guards, so a concurrent change is never cached as current.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

HealthStatus = Literal["passing", "warning", "critical", "maintenance"]


class DnsLookupError(Exception):
    """Base class of errors a Lookup raises on purpose."""


class UnknownDatacenter(DnsLookupError):
    """No path to the requested datacenter (answered NXDOMAIN)."""


class LookupUnavailable(DnsLookupError):
    """The catalog cannot be read right now, e.g. no leader and too stale (answered SERVFAIL)."""


@dataclass(frozen=True, slots=True, eq=True)
class ServiceEndpoint:
    node: str
    node_address: str
    service_address: str  # "" when the service uses its node's address
    port: int
    tags: tuple[str, ...] = ()
    weight_passing: int = 1
    weight_warning: int = 1
    status: HealthStatus = "passing"
    node_meta: Mapping[str, str] = field(default_factory=dict, hash=False)
    datacenter: str = ""
    service_id: str = ""
    service: str = ""


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node: str
    address: str
    meta: Mapping[str, str] = field(default_factory=dict, hash=False)
    datacenter: str = ""


@dataclass(frozen=True, slots=True)
class PtrOwner:
    kind: Literal["node", "service"]
    name: str
    datacenter: str = ""


class Lookup(Protocol):
    async def service_endpoints(
        self, service: str, tag: str | None, datacenter: str | None
    ) -> Sequence[ServiceEndpoint] | None: ...

    async def node(self, name: str, datacenter: str | None) -> NodeRecord | None: ...

    async def ptr(self, address: str) -> PtrOwner | None: ...

    async def name_servers(self) -> Sequence[NodeRecord]: ...

    def change_index(self, service: str | None) -> int: ...
