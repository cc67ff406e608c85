"""Bad input gets a 4xx with a message naming the problem, and changes nothing."""

from __future__ import annotations

import pytest

from tests.integration.harness import AgentProcess


def catalog_state(agent: AgentProcess) -> tuple:
    return (agent.get("/v1/catalog/services").json(), agent.get("/v1/agent/services").json(),
            agent.get("/v1/agent/checks").json(), agent.get("/v1/catalog/nodes").json())


BAD_BODIES = [
    ("/v1/agent/service/register", b"{not json", "decode"),
    ("/v1/agent/service/register", b"[1, 2]", "object"),
    ("/v1/agent/service/register", b'{"Port": 80}', "name"),
    ("/v1/agent/service/register", b'{"Name": "x", "Port": "eighty"}', "port"),
    ("/v1/agent/service/register", b'{"Name": "x", "Port": 70000}', "port"),
    ("/v1/agent/service/register", b'{"Name": "x", "Bogus": 1}', "bogus"),
    ("/v1/agent/service/register", b'{"Name": "x", "Tags": "a,b"}', "tags"),
    ("/v1/agent/service/register", b'{"Name": "x", "Check": {"HTTP": "http://x", "Interval": "soon"}}',
     "interval"),
    ("/v1/agent/service/register", b'{"Name": "x", "Check": {"Args": ["/bin/true"], "Interval": "10s"}}',
     "script"),
    ("/v1/agent/service/register", b'{"Name": "x", "Weights": {"Passing": 0}}', "passing"),
    ("/v1/agent/service/register", b'{"Name": "x", "Meta": {"consul-x": "y"}}', "meta"),
    ("/v1/agent/check/register", b'{"TTL": "10s"}', "name"),
    ("/v1/agent/check/register", b'{"Name": "c", "ServiceID": "ghost", "TTL": "10s"}', "ghost"),
    ("/v1/catalog/register", b'{"Node": "n"}', "address"),
    ("/v1/catalog/register", b'{"Address": "1.2.3.4"}', "node"),
    ("/v1/catalog/register", b'{"Node": "n", "Address": "1.2.3.4", "Check": {"Name": "c", "ServiceID": "nope"}}',
     ""),
    ("/v1/catalog/deregister", b'{"ServiceID": "x"}', "node"),
    ("/v1/agent/check/update/serfHealth", b'{"Status": "bogus"}', "status"),
]


@pytest.mark.parametrize(("path", "raw", "word"), BAD_BODIES)
def test_bad_bodies_are_400_and_change_nothing(dev_agent: AgentProcess, path: str, raw: bytes, word: str) -> None:
    before = catalog_state(dev_agent)
    reply = dev_agent.put(path, raw=raw)
    assert 400 <= reply.status < 500, (reply.status, reply.text)
    assert reply.headers["Content-Type"].startswith("text/plain")
    assert word.lower() in reply.text.lower(), reply.text
    assert catalog_state(dev_agent) == before


def test_huge_body_is_413(dev_agent: AgentProcess) -> None:
    before = catalog_state(dev_agent)
    reply = dev_agent.put("/v1/agent/service/register", raw=b'{"Name": "' + b"x" * (4 * 1024 * 1024) + b'"}')
    assert reply.status == 413
    assert catalog_state(dev_agent) == before


@pytest.mark.parametrize(("query", "word"), [
    ("index=abc", "index"), ("index=-1", "index"), ("index=1&wait=forever", "wait"),
    ("stale&consistent", "conflicting"), ("passing=maybe", "passing"),
    ("filter=Service.Port%20%3D%3D", "expression"), ("filter=%28%28", ""), ("node-meta=nocolon", "node-meta"),
])
def test_bad_query_parameters_are_400(dev_agent: AgentProcess, query: str, word: str) -> None:
    reply = dev_agent.get(f"/v1/health/service/web?{query}")
    assert reply.status == 400, reply.text
    assert word in reply.text.lower()


def test_wrong_method_unknown_path_unknown_ids(dev_agent: AgentProcess) -> None:
    reply = dev_agent.request("POST", "/v1/catalog/services")
    assert reply.status == 405 and "GET" in reply.headers["Allow"]
    reply = dev_agent.request("DELETE", "/v1/agent/service/register")
    assert reply.status == 405 and "PUT" in reply.headers["Allow"]
    reply = dev_agent.get("/v1/no/such/endpoint")
    assert reply.status == 404 and "Invalid URL path" in reply.text
    assert dev_agent.put("/v1/agent/check/pass/ghost").status == 404
    assert dev_agent.put("/v1/agent/check/pass/serfHealth").status == 404  # not a local check
    assert dev_agent.get("/v1/agent/service/ghost").status == 404
    assert dev_agent.get("/v1/health/state/sideways").status == 400
    assert dev_agent.get("/v1/catalog/node-services/").status == 400


def test_every_response_has_a_content_type(dev_agent: AgentProcess) -> None:
    for path in ("/", "/v1/agent/self", "/v1/catalog/nodes", "/v1/no/such", "/v1/health/state/any"):
        assert dev_agent.get(path).headers.get("Content-Type"), path
