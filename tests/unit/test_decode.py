"""agent.decode: Consul-shaped bodies → ServiceDefinition / CheckDefinition / catalog commands."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck as HypothesisHealthCheck
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.catalog.commands import DeregisterCommand, RegisterCommand
from agent.decode import (
    check_to_health,
    decode_catalog_deregister,
    decode_catalog_register,
    decode_check,
    decode_service,
    name_warnings,
)
from agent.errors import DefinitionError
from checks.definition import CheckKind, Status


def problems(exc: pytest.ExceptionInfo[DefinitionError]) -> dict[str, str]:
    return {p.path: p.message for p in exc.value.problems}


def test_reference_sample_body():
    body = {"ID": "redis1", "Name": "redis", "Tags": ["primary", "v1"], "Address": "127.0.0.1",
            "Port": 8000, "Meta": {"redis_version": "4.0"}, "EnableTagOverride": False,
            "Check": {"DeregisterCriticalServiceAfter": "90m", "Args": ["/usr/local/bin/check_redis.py"],
                      "Interval": "10s", "Timeout": "5s"},
            "Weights": {"Passing": 10, "Warning": 1}}
    defn = decode_service(body)
    svc = defn.service
    assert (svc.id, svc.service, svc.tags, svc.address, svc.port) == ("redis1", "redis", ("primary", "v1"),
                                                                       "127.0.0.1", 8000)
    assert svc.meta == {"redis_version": "4.0"}
    assert (svc.weights.passing, svc.weights.warning) == (10, 1)
    (check,) = defn.checks
    assert check.check_id == "service:redis1"
    assert check.name == "Service 'redis' check"
    assert check.service_id == "redis1"
    assert check.kind is CheckKind.SCRIPT
    assert (check.interval, check.timeout, check.deregister_critical_service_after) == (10.0, 5.0, 5400.0)
    assert check.status is Status.CRITICAL


def test_snake_case_and_camel_case_are_the_same():
    camel = {"Name": "web", "EnableTagOverride": True, "TaggedAddresses": {"lan": {"Address": "10.0.0.1",
             "Port": 80}}, "Check": {"HTTP": "http://127.0.0.1/", "Interval": "5s", "TLSSkipVerify": True,
                                     "DeregisterCriticalServiceAfter": "2m"}}
    snake = {"name": "web", "enable_tag_override": True, "tagged_addresses": {"lan": {"address": "10.0.0.1",
             "port": 80}}, "check": {"http": "http://127.0.0.1/", "interval": "5s", "tls_skip_verify": True,
                                     "deregister_critical_service_after": "2m"}}
    assert decode_service(camel) == decode_service(snake)
    assert decode_service(snake).service.tagged_addresses == {"lan": ("10.0.0.1", 80)}


def test_py_consul_payload_shape():
    from consul import Check

    payload = {"name": "web", "enabletagoverride": True, "id": "web-1", "port": 80, "tags": ["a"],
               "checks": [Check.http("http://127.0.0.1:80/", "10s", timeout="1s", deregister="1m"),
                          Check.ttl("10s")],
               "weights": {"Passing": 2, "Warning": 1}, "tagged_addresses": {"lan": "10.0.0.1"}}
    defn = decode_service(payload)
    assert defn.service.enable_tag_override and defn.service.tagged_addresses == {"lan": ("10.0.0.1", 0)}
    assert [(c.check_id, c.kind) for c in defn.checks] == [("service:web-1:1", CheckKind.HTTP),
                                                           ("service:web-1:2", CheckKind.TTL)]


def test_id_defaults_to_name_and_weights_default():
    svc = decode_service({"name": "web"}).service
    assert svc.id == "web"
    assert (svc.weights.passing, svc.weights.warning) == (1, 1)


def test_auto_check_ids_numbered_across_check_and_checks():
    defn = decode_service({"name": "web", "id": "web-1",
                           "check": {"ttl": "10s"},
                           "checks": [{"ttl": "20s"}, {"id": "mine", "name": "Mine", "ttl": "30s"}]})
    assert [c.check_id for c in defn.checks] == ["service:web-1:1", "service:web-1:2", "mine"]
    assert [c.name for c in defn.checks] == ["Service 'web' check"] * 2 + ["Mine"]
    assert all(c.service_id == "web-1" for c in defn.checks)
    single = decode_service({"name": "web", "checks": [{"ttl": "5s"}]})
    assert single.checks[0].check_id == "service:web"


def test_every_problem_is_collected_with_paths():
    with pytest.raises(DefinitionError) as exc:
        decode_service({"name": "web", "port": "abc", "tags": "x", "bogus": 1,
                        "checks": [{"http": "http://x/", "interval": "soon"}, [], None]})
    found = problems(exc)
    assert found["service.port"] == "expected an integer, got 'abc'"
    assert found["service.tags"].startswith("expected a list of strings")
    assert found["service.bogus"] == "unknown field"
    assert found["service.checks[0].interval"].startswith("invalid duration 'soon'")
    assert found["service.checks[1]"] == "expected an object, got a list"
    assert found["service.checks[2]"] == "expected an object, got null"
    assert all(p.line == 0 for p in exc.value.problems)


@pytest.mark.parametrize("body", [[], None, "x", 7, {"Name": ["x"]}, {"Name": {"a": 1}},
                                  {"name": "w", "meta": []}, {"name": "w", "weights": 3},
                                  {"name": "w", "checks": {"ttl": []}}, {1: 2}])
def test_junk_becomes_problems(body):
    with pytest.raises(DefinitionError):
        decode_service(body)


def test_missing_name():
    with pytest.raises(DefinitionError) as exc:
        decode_service({"port": 80})
    assert "missing required field 'name'" in problems(exc)["service"]


def test_meta_limits():
    too_many = {f"k{i}": "v" for i in range(65)}
    with pytest.raises(DefinitionError) as exc:
        decode_service({"name": "w", "meta": too_many})
    assert "too many meta pairs" in problems(exc)["service.meta"]
    with pytest.raises(DefinitionError) as exc:
        decode_service({"name": "w", "meta": {"k" * 129: "v", "bad key": "v", "consul-x": "v",
                                              "ok": "v" * 513, "n": 1}})
    found = problems(exc)
    assert "meta key too long" in found[f"service.meta.{'k' * 129}"]
    assert "letters, digits" in found["service.meta.bad key"]
    assert "reserved" in found["service.meta.consul-x"]
    assert "meta value too long" in found["service.meta.ok"]
    assert "expected a string" in found["service.meta.n"]


def test_weights_port_and_kind_rules():
    with pytest.raises(DefinitionError) as exc:
        decode_service({"name": "w", "weights": {"passing": 0, "warning": 0}, "port": 65536, "kind": "x"})
    found = problems(exc)
    assert "at least 1" in found["service.weights.passing"]
    assert "between 0 and 65535" in found["service.port"]
    assert "unknown service kind" in found["service.kind"]
    assert decode_service({"name": "w", "weights": {"passing": 3, "warning": 0}}).service.weights.warning == 0


def test_strict_names_for_files_warnings_for_api():
    body = {"name": "web_app", "tags": ["ok", "not ok"]}
    with pytest.raises(DefinitionError) as exc:
        decode_service(body, strict_names=True)
    found = problems(exc)
    assert "not a valid DNS label" in found["service.name"]
    assert "not a valid DNS label" in found["service.tags[1]"]
    svc = decode_service(body).service
    assert len(name_warnings(svc)) == 2
    assert name_warnings(decode_service({"name": "web"}).service) == []


@pytest.mark.parametrize(("check", "message"), [
    ({"name": "c"}, "needs exactly one of"),
    ({"name": "c", "http": "http://a/", "tcp": "a:1", "interval": "1s"}, "only one type, got http, tcp"),
    ({"name": "c", "http": "http://a/"}, "interval is required for http checks"),
    ({"name": "c", "ttl": "5s", "interval": "5s"}, "must not have an interval"),
    ({"name": "c", "http": "ftp://a/", "interval": "5s"}, "http:// or https://"),
    ({"name": "c", "tcp": "nohost", "interval": "5s"}, "expected host:port"),
    ({"name": "c", "tcp": "a:99999", "interval": "5s"}, "expected host:port"),
    ({"name": "c", "ttl": "5s", "status": "ok"}, "status must be"),
    ({"name": "c", "ttl": "5s", "failures_before_warning": 3, "failures_before_critical": 2},
     "must not exceed"),
    ({"name": "c", "script": "/bin/true", "interval": "5s"}, "use 'args'"),
    ({"name": "c", "ttl": "-5s"}, "must not be negative"),
    ({"ttl": "5s"}, "missing required field 'name'"),
])
def test_check_rules(check, message):
    with pytest.raises(DefinitionError) as exc:
        decode_check(check)
    assert message in str(exc.value)


def test_check_defaults_and_adjustments():
    http = decode_check({"Name": "h", "HTTP": "http://127.0.0.1:1/", "Interval": "100ms"})
    assert (http.kind, http.interval, http.timeout) == (CheckKind.HTTP, 1.0, 1.0)
    assert http.check_id == "h"  # ID defaults to Name
    tcp = decode_check({"name": "t", "tcp": "127.0.0.1:22", "interval": "30s"})
    assert tcp.timeout == 10.0
    script = decode_check({"name": "s", "args": ["/bin/true"], "interval": "1m"})
    assert (script.kind, script.timeout) == (CheckKind.SCRIPT, 30.0)
    short = decode_check({"name": "s", "ScriptArgs": ["/bin/true"], "interval": "5s", "timeout": "20s"})
    assert short.timeout == 5.0
    ttl = decode_check({"name": "t", "ttl": "30s", "deregister_critical_service_after": "10s",
                        "failures_before_critical": 3, "status": "passing"})
    assert (ttl.kind, ttl.ttl, ttl.timeout) == (CheckKind.TTL, 30.0, 0.0)
    assert ttl.deregister_critical_service_after == 10.0  # the 1 min floor is the CheckSet's
    assert ttl.failures_before_warning == 3
    assert ttl.status is Status.PASSING
    grpc = decode_check({"name": "g", "grpc": "127.0.0.1:9000/my.Service", "interval": "5s"})
    assert grpc.kind is CheckKind.GRPC
    alias = decode_check({"name": "a", "alias_service": "web"})
    assert alias.kind is CheckKind.ALIAS
    docker = decode_check({"name": "d", "docker_container_id": "abc", "args": ["true"], "interval": "5s"})
    assert docker.kind is CheckKind.DOCKER
    hdr = decode_check({"name": "h", "http": "https://x/", "interval": "5s",
                        "header": {"A": "b", "C": ["d"]}})
    assert hdr.header == {"A": ["b"], "C": ["d"]}


def test_decode_check_service_ids():
    assert decode_check({"name": "c", "ttl": "5s", "ServiceID": "web"}).service_id == "web"
    assert decode_check({"name": "c", "ttl": "5s"}, default_service_id="api").service_id == "api"
    with pytest.raises(DefinitionError, match="belongs to service"):
        decode_service({"name": "web", "check": {"ttl": "5s", "service_id": "other"}})


def test_duplicate_check_ids_in_a_service():
    with pytest.raises(DefinitionError, match="duplicate check id"):
        decode_service({"name": "w", "checks": [{"id": "a", "ttl": "5s"}, {"id": "a", "ttl": "5s"}]})


def test_check_to_health():
    defn = decode_service({"name": "web", "tags": ["v1"], "check": {"http": "http://127.0.0.1/",
                                                                     "interval": "10s", "timeout": "2s"}})
    row = check_to_health(defn.checks[0], "node1", defn.service)
    assert (row.node, row.check_id, row.name, row.service_id, row.service_name, row.service_tags) == (
        "node1", "service:web", "Service 'web' check", "web", "web", ("v1",))
    assert (row.type, row.interval, row.timeout, row.status) == (CheckKind.HTTP, "10s", "2s", Status.CRITICAL)
    assert row.definition["HTTP"] == "http://127.0.0.1/"
    ttl = check_to_health(decode_check({"name": "t", "ttl": "5s"}), "n", None)
    assert (ttl.interval, ttl.timeout, ttl.service_name, ttl.type) == ("", "", "", CheckKind.TTL)


def test_catalog_register_reference_sample():
    body = {"Datacenter": "dc1", "ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "t2.320",
            "Address": "192.168.10.10", "TaggedAddresses": {"lan": "192.168.10.10", "wan": "10.0.10.10"},
            "NodeMeta": {"somekey": "somevalue"},
            "Service": {"ID": "redis1", "Service": "redis", "Tags": ["primary", "v1"], "Address": "127.0.0.1",
                        "TaggedAddresses": {"lan": {"address": "127.0.0.1", "port": 8000}},
                        "Meta": {"redis_version": "4.0"}, "Port": 8000},
            "Check": {"Node": "t2.320", "CheckID": "service:redis1", "Name": "Redis health check",
                      "Notes": "Script based health check", "Status": "passing", "ServiceID": "redis1",
                      "Definition": {"TCP": "localhost:8888", "Interval": "5s", "Timeout": "1s"}},
            "SkipNodeUpdate": False}
    cmd = decode_catalog_register(body, "dc1")
    assert isinstance(cmd, RegisterCommand)
    assert (cmd.node.node, cmd.node.address) == ("t2.320", "192.168.10.10")
    assert cmd.node.meta == {"somekey": "somevalue"}
    assert cmd.node.tagged_addresses == {"lan": "192.168.10.10", "wan": "10.0.10.10"}
    assert cmd.service is not None and cmd.service.service == "redis"
    assert cmd.service.tagged_addresses == {"lan": ("127.0.0.1", 8000)}
    (check,) = cmd.checks
    assert (check.status, check.service_name) == (Status.PASSING, "redis")
    assert check.service_tags == ("primary", "v1")
    assert check.type is CheckKind.NONE
    assert check.definition["TCP"] == "localhost:8888"


def test_catalog_register_defaults_and_errors():
    cmd = decode_catalog_register({"Node": "n", "Address": "10.0.0.1", "Checks": [{"Name": "c"}],
                                   "Service": {"Service": "web"}, "SkipNodeUpdate": True}, "dc9")
    assert cmd.node.datacenter == "dc9"
    assert cmd.service is not None and cmd.service.id == "web"
    assert (cmd.checks[0].check_id, cmd.checks[0].status, cmd.checks[0].node) == ("c", Status.CRITICAL, "n")
    assert cmd.skip_node_update is True
    assert decode_catalog_register({"Node": "n", "Address": "a"}, "dc1").service is None
    with pytest.raises(DefinitionError) as exc:
        decode_catalog_register({"Check": {"Status": "bad"}, "Service": {}, "NodeMeta": {"consul-a": "b"}},
                                "dc1")
    text = str(exc.value)
    for message in ("Must provide node", "Must provide address", "status must be", "missing required field",
                    "reserved"):
        assert message in text
    with pytest.raises(DefinitionError):
        decode_catalog_register([], "dc1")  # type: ignore[arg-type]


def test_catalog_deregister():
    assert decode_catalog_deregister({"Node": "n", "ServiceID": "s"}) == DeregisterCommand("n", "s", "")
    body = {"node": "n", "check_id": "c", "Datacenter": "dc1"}
    assert decode_catalog_deregister(body) == DeregisterCommand("n", "", "c")
    with pytest.raises(DefinitionError, match="Must provide node"):
        decode_catalog_deregister({})
    with pytest.raises(DefinitionError):
        decode_catalog_deregister({"Node": "n", "Junk": 1})


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=20,
)
_keys = st.sampled_from(["Name", "ID", "Port", "Tags", "Meta", "Check", "Checks", "Weights",
                         "TaggedAddresses", "Address", "Kind", "HTTP", "TTL", "Interval", "Timeout", "Args",
                         "Header", "Node", "Service", "Status", "ServiceID", "NodeMeta", "Definition",
                         "SkipNodeUpdate"])
_bodies = st.dictionaries(_keys, _json, max_size=8) | _json


@settings(max_examples=300, derandomize=True, suppress_health_check=[HypothesisHealthCheck.too_slow])
@given(_bodies)
def test_untrusted_bodies_only_raise_definition_error(body):
    for decode in (lambda b: decode_service(b), lambda b: decode_check(b),
                   lambda b: decode_catalog_register(b, "dc1"), decode_catalog_deregister):
        try:
            decode(body)
        except DefinitionError:
            pass
