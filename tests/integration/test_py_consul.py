"""A real Consul client from PyPI (py-consul) works against waypost unchanged."""

from __future__ import annotations

import threading

import consul

from tests.integration.harness import AgentProcess


def test_py_consul_register_discover_block_deregister(dev_agent: AgentProcess) -> None:
    client = consul.Consul(host="127.0.0.1", port=dev_agent.http_port)
    assert client.status.leader()
    assert client.agent.self()["Config"]["Datacenter"] == "dc1"
    assert client.agent.service.register("pyweb", service_id="pyweb-1", port=8081, tags=["blue"],
                                         check=consul.Check.ttl("30s"))
    _, services = client.catalog.services()
    assert "pyweb" in services and services["pyweb"] == ["blue"]
    index, nodes = client.health.service("pyweb", passing=True)
    assert nodes == []  # the TTL check starts critical
    results: list = []
    waiter = threading.Thread(target=lambda: results.append(
        client.health.service("pyweb", passing=True, index=index, wait="20s")))
    waiter.start()
    assert client.agent.check.ttl_pass("service:pyweb-1", notes="alive")
    waiter.join(timeout=15)
    new_index, healthy = results[0]
    assert int(new_index) > int(index)
    assert [h["Service"]["ID"] for h in healthy] == ["pyweb-1"]
    assert healthy[0]["Service"]["Port"] == 8081
    _, catalog = client.catalog.service("pyweb")
    assert catalog[0]["ServicePort"] == 8081 and catalog[0]["ServiceTags"] == ["blue"]
    assert "pyweb-1" in client.agent.services()
    assert client.agent.service.deregister("pyweb-1")
    _, catalog = client.catalog.service("pyweb")
    assert catalog == []
    _, node_checks = client.health.node("itest")
    assert any(c["CheckID"] == "serfHealth" for c in node_checks)
