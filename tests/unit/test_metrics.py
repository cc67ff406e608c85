"""The metrics registry: Consul's JSON shape, Prometheus text (strict parser + prometheus_client)."""

from __future__ import annotations

import math

import pytest

from agent.metrics import Metrics, catalog_gauges, check_gauges, prom_name, runtime_gauges
from tests.promtext import parse, value


def make() -> Metrics:
    clock = iter(range(0, 1000, 10))
    return Metrics(clock=lambda: float(next(clock)), wall=lambda: 1502160910.0)


def test_json_shape_like_consul() -> None:
    m = make()
    m.incr("raft.apply", 3)
    m.incr("raft.apply", 2)
    m.set_gauge("state.nodes", 4)
    for v in (1.0, 2.0, 3.0):
        m.observe("raft.commitTime", v)
    out = m.to_json()
    assert set(out) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert out["Timestamp"] == "2017-08-08 02:55:10 +0000 UTC"
    assert out["Gauges"] == [{"Name": "consul.state.nodes", "Value": 4.0, "Labels": {}}]
    counter = out["Counters"][0]
    assert counter["Name"] == "consul.raft.apply" and counter["Count"] == 2 and counter["Sum"] == 5.0
    assert set(counter) == {"Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels"}
    sample = out["Samples"][0]
    assert (sample["Count"], sample["Min"], sample["Max"], sample["Mean"]) == (3, 1.0, 3.0, 2.0)
    assert math.isclose(sample["Stddev"], math.sqrt(2 / 3))


def test_prometheus_text_is_well_formed_and_escaped() -> None:
    m = make()
    m.observe("api.http", 5.0, {"method": "GET", "path": "/v1/catalog/service/{name}", "code": "200"})
    m.observe("api.http", 7.0, {"method": "GET", "path": "/v1/catalog/service/{name}", "code": "200"})
    m.incr("weird.name-with.dash", labels={"value": 'quote " back\\slash\nnewline', "9bad": "x"})
    m.set_gauge("state.nodes", 2)
    families = parse(m.to_prometheus())
    assert families["consul_api_http"][0] == "summary"
    assert value(families, "consul_api_http_count", path="/v1/catalog/service/{name}") == 2
    assert value(families, "consul_api_http_sum", code="200") == 12.0
    assert value(families, "consul_api_http", quantile="0.5") == 5.0
    assert value(families, "consul_api_http", quantile="0.99") == 7.0
    assert value(families, "consul_weird_name_with_dash", value='quote " back\\slash\nnewline', _9bad="x") == 1
    assert families["consul_state_nodes"][:2] == ("gauge", "nodes in the catalog")
    assert prom_name("consul.raft.commitTime") == "consul_raft_commitTime"


def test_prometheus_client_parser_accepts_it() -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    m = make()
    m.incr("raft.apply", 4)
    m.set_gauge("state.checks", 1, {"status": "passing"})
    m.observe("dns.query_time", 0.5)
    m.incr("odd", labels={"v": 'a"b\\c\nd'})
    found = {f.name: f for f in parser.text_string_to_metric_families(m.to_prometheus())}
    assert found["consul_raft_apply"].type == "counter"
    assert found["consul_raft_apply"].samples[0].value == 4
    assert found["consul_state_checks"].samples[0].labels == {"status": "passing"}
    summary = found["consul_dns_query_time"]
    assert summary.type == "summary" and {s.name for s in summary.samples} == {
        "consul_dns_query_time", "consul_dns_query_time_sum", "consul_dns_query_time_count"}
    assert found["consul_odd"].samples[0].labels == {"v": 'a"b\\c\nd'}


def test_sources_are_fresh_on_every_scrape() -> None:
    m = make()
    services = {"a": 1}
    m.add_source(lambda: [("state.services", {}, len(services))])
    served = [0]
    m.add_source(lambda: [("dns.queries", {"transport": "udp"}, served[0])], counter=True)
    assert value(parse(m.to_prometheus()), "consul_state_services") == 1
    services["b"] = 2
    served[0] = 7
    families = parse(m.to_prometheus())
    assert value(families, "consul_state_services") == 2
    assert families["consul_dns_queries"][0] == "counter"
    assert value(families, "consul_dns_queries", transport="udp") == 7
    assert m.counter_value("dns.queries", {"transport": "udp"}) == 7


class FakeStore:
    def nodes(self):
        return 1, ["n1", "n2"]

    def services(self):
        return 1, {"web": [], "db": []}

    def service_nodes(self, service):
        return 1, [1, 2] if service == "web" else [1]

    def checks_in_state(self, state):
        return 1, {"passing": [1, 2], "warning": [], "critical": [1]}[state]


def test_ready_made_sources() -> None:
    got = {(name, tuple(labels.items())): v for name, labels, v in catalog_gauges(FakeStore())}
    assert got[("state.nodes", ())] == 2 and got[("state.services", ())] == 2
    assert got[("state.service_instances", ())] == 3
    assert got[("state.checks", (("status", "critical"),))] == 1
    checks = {labels["status"]: v for _, labels, v in check_gauges(["passing", "passing", "critical"])}
    assert checks == {"passing": 2, "warning": 0, "critical": 1}
    runtime = {name: v for name, _, v in runtime_gauges()}
    assert runtime["runtime.rss_bytes"] > 0 and runtime["runtime.open_fds"] > 0
