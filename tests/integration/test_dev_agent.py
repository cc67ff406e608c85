"""A real `waypost agent -dev` process: fresh catalog, agent API writes read back everywhere."""

from __future__ import annotations

import threading
import time

from tests.integration.harness import AgentProcess


def test_dev_agent_starts_fast_with_consul_like_catalog(dev_agent: AgentProcess) -> None:
    print(f"dev agent ready in {dev_agent.startup_seconds:.3f}s")
    assert dev_agent.startup_seconds < 10  # generous for a loaded CI machine; typically ~0.3 s
    root = dev_agent.get("/")
    assert root.status == 200 and root.headers["Content-Type"].startswith("text/plain")
    nodes = dev_agent.get("/v1/catalog/nodes")
    assert nodes.status == 200 and int(nodes.headers["X-Consul-Index"]) >= 1
    assert [n["Node"] for n in nodes.json()] == ["itest"]
    assert dev_agent.get("/v1/catalog/services").json()["consul"] == []
    checks = dev_agent.get("/v1/health/node/itest").json()
    serf = [c for c in checks if c["CheckID"] == "serfHealth"]
    assert serf and serf[0]["Status"] == "passing" and serf[0]["Name"] == "Serf Health Status"
    assert dev_agent.get("/v1/status/leader").json() == f"127.0.0.1:{dev_agent.server_port}"
    assert dev_agent.get("/v1/catalog/service/consul").json()[0]["ServicePort"] == dev_agent.server_port
    assert dev_agent.get("/v1/catalog/datacenters").json() == ["dc1"]
    self_info = dev_agent.get("/v1/agent/self").json()
    assert self_info["Config"]["Datacenter"] == "dc1" and self_info["Config"]["NodeName"] == "itest"
    members = dev_agent.get("/v1/agent/members").json()
    assert members[0]["Name"] == "itest" and members[0]["Status"] == 1


def test_register_read_back_and_deregister(dev_agent: AgentProcess) -> None:
    body = {"Name": "web", "ID": "web-1", "Tags": ["v1", "primary"], "Port": 8080,
            "Address": "127.0.0.2", "Meta": {"env": "test"},
            "Check": {"TTL": "30s", "Notes": "app heartbeat"}}
    assert dev_agent.put("/v1/agent/service/register", body).status == 200
    services = dev_agent.get("/v1/agent/services").json()
    assert services["web-1"]["Service"] == "web" and services["web-1"]["Port"] == 8080
    catalog = dev_agent.get("/v1/catalog/service/web").json()
    assert [(s["ServiceID"], s["ServiceAddress"], s["ServicePort"]) for s in catalog] == [
        ("web-1", "127.0.0.2", 8080)]
    health = dev_agent.get("/v1/health/service/web").json()
    statuses = {c["CheckID"]: c["Status"] for c in health[0]["Checks"]}
    assert statuses == {"serfHealth": "passing", "service:web-1": "critical"}  # checks start critical
    assert dev_agent.get("/v1/health/service/web?passing").json() == []
    assert dev_agent.get("/v1/agent/health/service/id/web-1").status == 503

    assert dev_agent.put("/v1/agent/check/pass/service:web-1?note=ok").status == 200
    passing = dev_agent.get("/v1/health/service/web?passing=true").json()
    assert [p["Service"]["ID"] for p in passing] == ["web-1"]
    assert dev_agent.get("/v1/health/checks/web").json()[0]["Output"] == "ok"
    assert dev_agent.get("/v1/agent/health/service/name/web?format=text").text == "passing"
    assert dev_agent.get("/v1/catalog/service/web?tag=v1&tag=primary").json() != []
    assert dev_agent.get("/v1/catalog/service/web?tag=v1&tag=nope").json() == []
    filtered = dev_agent.get('/v1/health/service/web?filter=Service.Meta.env%20%3D%3D%20%22test%22').json()
    assert len(filtered) == 1

    assert dev_agent.put("/v1/agent/check/warn/service:web-1").status == 200
    assert dev_agent.get("/v1/agent/health/service/id/web-1").status == 429
    assert dev_agent.put("/v1/agent/service/deregister/web-1").status == 200
    assert dev_agent.get("/v1/catalog/service/web").json() == []
    assert "web" not in dev_agent.get("/v1/catalog/services").json()
    missing = dev_agent.put("/v1/agent/service/deregister/web-1")
    assert missing.status == 404 and "web-1" in missing.text


def test_maintenance_mode_hides_service(dev_agent: AgentProcess) -> None:
    dev_agent.put("/v1/agent/service/register", {"Name": "maint", "Port": 1})
    assert len(dev_agent.get("/v1/health/service/maint?passing").json()) == 1
    assert dev_agent.put("/v1/agent/service/maintenance/maint?enable=true&reason=upgrade").status == 200
    assert dev_agent.get("/v1/health/service/maint?passing").json() == []
    checks = dev_agent.get("/v1/agent/checks").json()
    assert checks["_service_maintenance:maint"]["Notes"] == "upgrade"
    assert dev_agent.put("/v1/agent/service/maintenance/maint?enable=false").status == 200
    assert len(dev_agent.get("/v1/health/service/maint?passing").json()) == 1
    assert dev_agent.put("/v1/agent/maintenance?enable=true").status == 200
    assert dev_agent.get("/v1/health/service/maint?passing").json() == []
    assert dev_agent.put("/v1/agent/maintenance?enable=false").status == 200
    assert dev_agent.put("/v1/agent/maintenance").status == 400
    dev_agent.put("/v1/agent/service/deregister/maint")


def test_catalog_register_and_node_endpoints(dev_agent: AgentProcess) -> None:
    body = {"Node": "ext-1", "Address": "192.0.2.10", "NodeMeta": {"rack": "r1"},
            "Service": {"Service": "db", "Port": 5432, "Tags": ["primary"]},
            "Check": {"CheckID": "db-alive", "Name": "db alive", "Status": "passing", "ServiceID": "db"}}
    reply = dev_agent.put("/v1/catalog/register", body)
    assert reply.status == 200 and reply.json() is True
    node = dev_agent.get("/v1/catalog/node/ext-1").json()
    assert node["Node"]["Address"] == "192.0.2.10" and "db" in node["Services"]
    node_services = dev_agent.get("/v1/catalog/node-services/ext-1").json()
    assert [s["ID"] for s in node_services["Services"]] == ["db"]
    assert dev_agent.get("/v1/catalog/node/nobody").json() is None
    assert dev_agent.get("/v1/catalog/node-services/nobody").json() == {"Node": None, "Services": None}
    assert [n["Node"] for n in dev_agent.get("/v1/catalog/nodes?node-meta=rack:r1").json()] == ["ext-1"]
    assert [c["CheckID"] for c in dev_agent.get("/v1/health/state/passing").json()
            if c["Node"] == "ext-1"] == ["db-alive"]
    assert dev_agent.put("/v1/catalog/deregister", {"Node": "ext-1", "ServiceID": "db"}).json() is True
    assert dev_agent.get("/v1/catalog/service/db").json() == []
    assert dev_agent.put("/v1/catalog/deregister", {"Node": "ext-1"}).json() is True
    assert dev_agent.get("/v1/catalog/node/ext-1").json() is None


def test_blocking_query_returns_on_change_and_times_out(dev_agent: AgentProcess) -> None:
    first = dev_agent.get("/v1/health/service/blocky")
    index = int(first.headers["X-Consul-Index"])
    results: list = []

    def block(index: int, wait: str) -> None:
        started = time.monotonic()
        reply = dev_agent.get(f"/v1/health/service/blocky?index={index}&wait={wait}")
        results.append((time.monotonic() - started, reply))

    waiter = threading.Thread(target=block, args=(index, "20s"))
    waiter.start()
    time.sleep(0.3)  # let the request reach the agent and block; the assertion below is on the wake-up
    assert not results, "the blocking query returned before any change"
    dev_agent.put("/v1/agent/service/register", {"Name": "blocky", "Port": 9})
    waiter.join(timeout=10)
    elapsed, reply = results[0]
    assert elapsed < 5, "blocking query did not wake on the change"
    assert int(reply.headers["X-Consul-Index"]) > index and len(reply.json()) == 1

    # a write to another service does not wake a watcher of this one; the wait expires instead
    index = int(reply.headers["X-Consul-Index"])
    done = threading.Thread(target=block, args=(index, "1s"))
    done.start()
    dev_agent.put("/v1/agent/service/register", {"Name": "other", "Port": 10})
    done.join(timeout=10)
    elapsed, reply = results[1]
    assert 0.9 <= elapsed < 3 and reply.headers["X-Consul-Index"] == str(index)
    dev_agent.put("/v1/agent/service/deregister/blocky")
    dev_agent.put("/v1/agent/service/deregister/other")


def test_hash_blocking_on_agent_service(dev_agent: AgentProcess) -> None:
    dev_agent.put("/v1/agent/service/register", {"Name": "hashy", "Port": 1})
    first = dev_agent.get("/v1/agent/service/hashy")
    digest = first.headers["X-Consul-ContentHash"]
    assert first.json()["ContentHash"] == digest
    started = time.monotonic()
    same = dev_agent.get(f"/v1/agent/service/hashy?hash={digest}&wait=500ms")
    assert time.monotonic() - started >= 0.45 and same.headers["X-Consul-ContentHash"] == digest
    dev_agent.put("/v1/agent/service/deregister/hashy")
