"""The metrics registry: Consul's JSON shape over 10 s intervals (injected wall clock), cumulative
Prometheus text (strict parser + prometheus_client), ready-made sources incl. gossip."""

from __future__ import annotations

import math

import pytest

from agent.metrics import (
    Metrics,
    catalog_gauges,
    check_gauges,
    gossip_counters,
    member_gauges,
    prom_name,
    runtime_gauges,
)
from tests.promtext import parse, value


def make() -> Metrics:
    return Metrics(wall=lambda: 1502160910.0)


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


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
    assert math.isclose(sample["Stddev"], 1.0)  # go-metrics: the sample (n - 1) standard deviation
    assert math.isclose(sample["Rate"], 6.0 / 10)  # Sum per second of the 10 s interval


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["Name"]: row for row in rows}


def test_json_reports_the_last_completed_10s_interval() -> None:
    wall = Wall(1000.0 + 3)  # inside the interval [1000, 1010)
    m = Metrics(wall=wall)
    m.incr("raft.apply", 2)
    m.observe("raft.commitTime", 4.0)
    m.set_gauge("runtime.event_loop_lag_last", 1.5)
    first = m.to_json()  # no interval has completed yet: the one in progress
    assert first["Timestamp"] == "1970-01-01 00:16:40 +0000 UTC"
    assert by_name(first["Counters"])["consul.raft.apply"]["Sum"] == 2

    wall.now = 1012.0  # the next interval: recording goes there, the JSON shows [1000, 1010)
    m.incr("raft.apply", 5)
    m.observe("raft.commitTime", 8.0)
    m.observe("raft.commitTime", 10.0)
    out = m.to_json()
    assert out["Timestamp"] == "1970-01-01 00:16:40 +0000 UTC"
    assert by_name(out["Counters"])["consul.raft.apply"]["Sum"] == 2
    assert by_name(out["Samples"])["consul.raft.commitTime"]["Count"] == 1
    assert by_name(out["Gauges"])["consul.runtime.event_loop_lag_last"]["Value"] == 1.5

    wall.now = 1025.0  # [1010, 1020) completed: only what was recorded in it
    out = m.to_json()
    assert out["Timestamp"] == "1970-01-01 00:16:50 +0000 UTC"
    counter = by_name(out["Counters"])["consul.raft.apply"]
    assert (counter["Count"], counter["Sum"], counter["Rate"]) == (1, 5.0, 0.5)
    sample = by_name(out["Samples"])["consul.raft.commitTime"]
    assert (sample["Count"], sample["Min"], sample["Max"], sample["Mean"]) == (2, 8.0, 10.0, 9.0)
    assert "consul.runtime.event_loop_lag_last" not in by_name(out["Gauges"])  # not set in that interval

    families = parse(m.to_prometheus())  # Prometheus stays cumulative
    assert value(families, "consul_raft_apply") == 7
    assert value(families, "consul_raft_commitTime_count") == 3
    assert value(families, "consul_runtime_event_loop_lag_last") == 1.5

    wall.now = 1061.0  # intervals nobody touched: the last completed one, [1050, 1060), is empty
    out = m.to_json()
    assert out["Timestamp"] == "1970-01-01 00:17:30 +0000 UTC"
    assert out["Counters"] == [] and out["Samples"] == []
    assert value(parse(m.to_prometheus()), "consul_raft_apply") == 7


def test_counter_sources_show_their_increase_per_interval() -> None:
    wall = Wall(2000.0)
    m = Metrics(wall=wall)
    served = {"udp": 0}
    m.add_source(lambda: [("dns.queries", {"transport": "udp"}, served["udp"])], counter=True)
    m.add_source(lambda: [("state.nodes", {}, 3)])
    served["udp"] = 4
    wall.now = 2005.0
    row = by_name(m.to_json()["Counters"])["consul.dns.queries"]  # in progress: 4 since start
    assert (row["Count"], row["Sum"], row["Labels"]) == (4, 4.0, {"transport": "udp"})
    wall.now = 2010.0
    m.observe("runtime.event_loop_lag", 0.1)  # any recording rolls the interval over
    served["udp"] = 10
    wall.now = 2021.0
    m.observe("runtime.event_loop_lag", 0.1)
    out = m.to_json()  # [2010, 2020): 6 more queries
    assert by_name(out["Counters"])["consul.dns.queries"]["Sum"] == 6
    assert by_name(out["Gauges"])["consul.state.nodes"]["Value"] == 3  # sources are always fresh
    wall.now = 2031.0
    assert "consul.dns.queries" not in by_name(m.to_json()["Counters"])  # no queries in [2020, 2030)
    assert m.counter_value("dns.queries", {"transport": "udp"}) == 10  # the total, as Prometheus


def test_a_wall_clock_stepping_back_keeps_the_current_interval() -> None:
    wall = Wall(3015.0)
    m = Metrics(wall=wall)
    m.incr("x")
    wall.now = 2990.0
    m.incr("x")
    assert by_name(m.to_json()["Counters"])["consul.x"]["Sum"] == 2


def test_gossip_sources() -> None:
    members = {labels["status"]: v for _, labels, v in member_gauges(["alive", "alive", "failed"])}
    assert members == {"alive": 2, "failed": 1, "left": 0}
    stats = {"probes": 7, "suspicions": 2, "refutes": 1, "unauthenticated": 3, "malformed": 1,
             "malformed_packets": 2, "bytes_in": 99}
    got = {name: v for name, _, v in gossip_counters(stats)}
    assert got["memberlist.probes"] == 7 and got["memberlist.msg.suspect"] == 2
    assert got["memberlist.refutes"] == 1 and got["memberlist.unauthenticated"] == 3
    assert got["memberlist.malformed"] == 3 and got["memberlist.msg.dead"] == 0
    m = make()
    m.add_source(lambda: member_gauges(["alive"]))
    m.add_source(lambda: gossip_counters(stats), counter=True)
    families = parse(m.to_prometheus())
    assert value(families, "consul_serf_members", status="alive") == 1
    assert families["consul_memberlist_probes"][0] == "counter"
    assert value(families, "consul_memberlist_unauthenticated") == 3


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
