"""The one read path for service discovery, shared by the HTTP health API and DNS (layer 3).

Contract: `health_service(name, tags, passing, node_meta)` returns (index, instances) where each
instance is (Node, NodeService, checks) with every check that applies (node-level + its own);
`passing=True` drops an instance when any of its checks is not passing (Consul's `?passing`).
`catalog_service` is the same without health. DNS asks through the same functions (`DnsLookup` adapts them
to `dns.lookup.Lookup`), so DNS and HTTP can never disagree about who is healthy. DNS names are
case-insensitive: a lowercase name is mapped to the registered spelling through a map rebuilt
only when the service or node tables change.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from agent.catalog.store import StateStore
from agent.types import HealthCheck, Node, NodeService, aggregate_status
from checks.definition import Status
from dns.lookup import NodeRecord, PtrOwner, ServiceEndpoint, UnknownDatacenter

Instance = tuple[Node, NodeService, list[HealthCheck]]


def _has_tags(service: NodeService, tags: tuple[str, ...]) -> bool:
    if not tags:
        return True
    own = {t.lower() for t in service.tags}
    return all(t.lower() in own for t in tags)


def _has_meta(node: Node, node_meta: dict[str, str]) -> bool:
    return all(node.meta.get(k) == v for k, v in node_meta.items())


class Discovery:
    def __init__(self, store_of: object) -> None:
        # `store_of` is anything with a `.store` attribute (the server): the store object may be
        # swapped wholesale by a snapshot restore, so it is looked up on every read.
        self._owner = store_of

    @property
    def store(self) -> StateStore:
        return self._owner.store  # type: ignore[attr-defined]

    def catalog_service(self, name: str, tags: tuple[str, ...] = (),
                        node_meta: dict[str, str] | None = None) -> tuple[int, list[tuple[Node, NodeService]]]:
        index, rows = self.store.service_nodes(name)
        meta = node_meta or {}
        return index, [(n, s) for n, s in rows if _has_tags(s, tags) and _has_meta(n, meta)]

    def health_service(self, name: str, tags: tuple[str, ...] = (), passing: bool = False,
                       node_meta: dict[str, str] | None = None) -> tuple[int, list[Instance]]:
        index, rows = self.store.check_service_nodes(name)
        meta = node_meta or {}
        out: list[Instance] = []
        for node, service, checks in rows:
            if not _has_tags(service, tags) or not _has_meta(node, meta):
                continue
            if passing and any(c.status != Status.PASSING for c in checks):
                continue
            out.append((node, service, checks))
        return index, out

    async def alias_statuses(self, node: str, service_id: str) -> list[Status] | None:
        """Statuses an alias check mirrors: the node's checks, plus the service's own when
        `service_id` is set; None when the node (or that service on it) is not in the catalog."""
        _, found, services = self.store.node(node)
        if found is None or (service_id and all(s.id != service_id for s in services)):
            return None
        _, checks = self.store.node_checks(node)
        return [c.status for c in checks if not c.service_id or c.service_id == service_id]


class DnsLookup:
    """`dns.lookup.Lookup` over the catalog: the same reads as `/v1/health/service`."""

    def __init__(self, discovery: Discovery, datacenter: str,
                 freshness: Callable[[], Awaitable[None]] | None = None) -> None:
        self._discovery = discovery
        self._datacenter = datacenter
        self._freshness = freshness  # awaited before a lookup reads the store (allow_stale rules)
        self._service_names: tuple[int, dict[str, list[str]]] = (-1, {})
        self._node_names: tuple[int, dict[str, str]] = (-1, {})

    def _check_dc(self, datacenter: str | None) -> None:
        if datacenter is not None and datacenter.lower() != self._datacenter.lower():
            raise UnknownDatacenter(datacenter)

    def _spellings(self, service: str) -> list[str]:
        store = self._discovery.store
        index = store.index_of("services")
        if self._service_names[0] != index:
            names: dict[str, list[str]] = {}
            for name in store.services()[1]:
                names.setdefault(name.lower(), []).append(name)
            self._service_names = (index, names)
        return self._service_names[1].get(service.lower(), [])

    def _node_spelling(self, node: str) -> str | None:
        store = self._discovery.store
        index = store.index_of("nodes")
        if self._node_names[0] != index:
            self._node_names = (index, {n.node.lower(): n.node for n in store.nodes()[1]})
        return self._node_names[1].get(node.lower())

    async def service_endpoints(self, service: str, tag: str | None,
                                datacenter: str | None) -> Sequence[ServiceEndpoint] | None:
        self._check_dc(datacenter)
        if self._freshness is not None:
            await self._freshness()
        spellings = self._spellings(service)
        if not spellings:
            return None
        tags = (tag,) if tag else ()
        out: list[ServiceEndpoint] = []
        for name in spellings:
            for node, svc, checks in self._discovery.health_service(name, tags)[1]:
                out.append(ServiceEndpoint(
                    node=node.node, node_address=node.address, service_address=svc.address, port=svc.port,
                    tags=svc.tags, weight_passing=svc.weights.passing, weight_warning=svc.weights.warning,
                    status=aggregate_status(checks), node_meta=node.meta,  # type: ignore[arg-type]
                    datacenter=node.datacenter or self._datacenter, service_id=svc.id, service=svc.service))
        return out

    async def node(self, name: str, datacenter: str | None) -> NodeRecord | None:
        self._check_dc(datacenter)
        if self._freshness is not None:
            await self._freshness()
        spelling = self._node_spelling(name)
        if spelling is None:
            return None
        found = self._discovery.store.node(spelling)[1]
        if found is None:
            return None
        return NodeRecord(found.node, found.address, found.meta, found.datacenter or self._datacenter)

    async def ptr(self, address: str) -> PtrOwner | None:
        store = self._discovery.store
        nodes = store.nodes()[1]
        for node in nodes:
            if node.address == address:
                return PtrOwner("node", node.node, node.datacenter or self._datacenter)
        for name in store.services()[1]:
            for node, service in store.service_nodes(name)[1]:
                if service.address == address:
                    return PtrOwner("service", service.service, node.datacenter or self._datacenter)
        return None

    async def name_servers(self) -> Sequence[NodeRecord]:
        servers = []
        for node, _, checks in self._discovery.health_service("consul")[1]:
            if aggregate_status(checks) == "passing":
                servers.append(NodeRecord(node.node, node.address, node.meta, node.datacenter))
        return servers[:3]

    def change_index(self, service: str | None) -> int:
        if service is None:  # called on every DNS cache hit: keep it short
            return self._discovery.store.last_index
        store = self._discovery.store
        spellings = self._spellings(service)
        keys = [f"service.{name}" for name in spellings] or [f"service.{service}"]
        return max(store.index_of(*keys), store.index_of("services"))
