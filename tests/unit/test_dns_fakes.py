"""A deterministic in-memory `Lookup` for the DNS tests (and a check that it honours the protocol)."""

from __future__ import annotations

from collections.abc import Sequence

from dns.lookup import (
    LookupUnavailable,
    NodeRecord,
    PtrOwner,
    ServiceEndpoint,
    UnknownDatacenter,
)


def ep(node: str, address: str, port: int = 8080, *, service_address: str = "", status: str = "passing",
       tags: tuple[str, ...] = (), meta: dict[str, str] | None = None, weights: tuple[int, int] = (1, 1),
       service: str = "web") -> ServiceEndpoint:
    return ServiceEndpoint(node=node, node_address=address, service_address=service_address, port=port,
                           tags=tags, weight_passing=weights[0], weight_warning=weights[1],
                           status=status, node_meta=meta or {}, datacenter="dc1",
                           service_id=f"{service}-{node}-{port}", service=service)


class FakeLookup:
    def __init__(self) -> None:
        self.services: dict[str, list[ServiceEndpoint]] = {}
        self.nodes: dict[str, NodeRecord] = {}
        self.servers: list[NodeRecord] = []
        self.indexes: dict[str, int] = {}
        self.global_index = 1
        self.datacenters = {"dc1"}
        self.failing = False
        self.calls = 0

    def set_service(self, name: str, endpoints: list[ServiceEndpoint] | None) -> None:
        if endpoints is None:
            self.services.pop(name, None)
        else:
            self.services[name] = list(endpoints)
        self.global_index += 1
        self.indexes[name] = self.global_index

    def add_node(self, name: str, address: str, meta: dict[str, str] | None = None) -> None:
        self.nodes[name] = NodeRecord(name, address, meta or {}, "dc1")
        self.global_index += 1

    def _check(self, datacenter: str | None) -> None:
        self.calls += 1
        if self.failing:
            raise LookupUnavailable("no leader")
        if datacenter is not None and datacenter not in self.datacenters:
            raise UnknownDatacenter(datacenter)

    async def service_endpoints(self, service: str, tag: str | None,
                                datacenter: str | None) -> Sequence[ServiceEndpoint] | None:
        self._check(datacenter)
        return self.services.get(service)

    async def node(self, name: str, datacenter: str | None) -> NodeRecord | None:
        self._check(datacenter)
        return self.nodes.get(name)

    async def ptr(self, address: str) -> PtrOwner | None:
        self._check(None)
        for node in self.nodes.values():
            if node.address == address:
                return PtrOwner("node", node.node, node.datacenter)
        for name, endpoints in sorted(self.services.items()):
            for e in endpoints:
                if e.service_address == address:
                    return PtrOwner("service", name, e.datacenter)
        return None

    async def name_servers(self) -> Sequence[NodeRecord]:
        self._check(None)
        return list(self.servers)

    def change_index(self, service: str | None) -> int:
        if service is None:
            return self.global_index
        return self.indexes.get(service, 0)


def sample_lookup() -> FakeLookup:
    lookup = FakeLookup()
    lookup.add_node("node1", "10.0.0.1", {"rack": "r1"})
    lookup.add_node("node2", "10.0.0.2")
    lookup.add_node("node3", "10.0.0.3")
    lookup.add_node("v6node", "fd00::1")
    lookup.servers = [lookup.nodes["node1"]]
    lookup.set_service("web", [
        ep("node1", "10.0.0.1", meta={"rack": "r1"}, tags=("v1", "primary"), weights=(10, 1)),
        ep("node2", "10.0.0.2", tags=("v2",), status="warning", weights=(10, 1)),
        ep("node3", "10.0.0.3", status="critical"),
    ])
    lookup.set_service("db", [ep("node1", "10.0.0.1", 5432, service_address="10.1.0.9", service="db")])
    lookup.set_service("down", [ep("node3", "10.0.0.3", status="critical", service="down")])
    lookup.set_service("ext", [ep("node1", "10.0.0.1", service_address="db.example.com", service="ext")])
    return lookup


def test_fake_lookup_follows_the_protocol() -> None:
    from dns.lookup import Lookup

    lookup: Lookup = sample_lookup()
    assert lookup.change_index("web") > 0
    assert lookup.change_index("nope") == 0
