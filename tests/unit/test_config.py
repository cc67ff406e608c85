"""agent.config: defaults, flags, files, merge order, errors with lines, warnings, -dev."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from agent.config import AgentConfig, load_config, parse_agent_flags
from agent.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def load(tmp_path: Path, *argv: str):
    return load_config(["-data-dir", str(tmp_path / "data"), *argv])


def problems(exc: pytest.ExceptionInfo[ConfigError]) -> list[tuple[str, int, str]]:
    return [(p.path, p.line, p.message) for p in exc.value.problems]


def test_defaults_live_in_the_dataclass():
    c = AgentConfig()
    assert (c.datacenter, c.client_addr, c.bind_addr, c.domain, c.log_level) == (
        "dc1", "127.0.0.1", "0.0.0.0", "consul.", "INFO")
    assert (c.ports.http, c.ports.dns, c.ports.server, c.ports.serf_lan, c.ports.serf_wan) == (
        8500, 8600, 8300, 8301, 8302)
    assert (c.ports.https, c.ports.grpc) == (-1, -1)
    assert c.dns_config.allow_stale and c.dns_config.max_stale == 87600 * 3600
    assert (c.dns_config.udp_answer_limit, c.dns_config.a_record_limit, c.dns_config.node_ttl) == (3, 0, 0)
    soa = c.dns_config.soa
    assert (soa.refresh, soa.retry, soa.expire, soa.min_ttl) == (3600, 600, 86400, 5)  # non-zero negative TTL
    assert c.performance.raft_multiplier == 5
    assert c.check_output_max_size == 4096
    assert c.http_config.max_request_body_bytes == 1024 * 1024
    assert c.node_name == socket.gethostname().split(".")[0]
    assert c.http_addr() == ("127.0.0.1", 8500) and c.dns_addr() == ("127.0.0.1", 8600)


def test_flag_shapes():
    flags = parse_agent_flags(["-server", "--bootstrap-expect=3", "-retry-join", "a", "-retry-join=b",
                               "--ui=false", "-node", "n1", "-config-file", "x.json", "-config-dir=d",
                               "-config-file=y.yaml", "-dev=true", "-node-meta", "rack:r1"])
    config = flags["config"]
    assert config["server"] is True and config["bootstrap_expect"] == 3
    assert config["retry_join"] == ["a", "b"]
    assert config["ui_config"] == {"enabled": False}
    assert config["node_name"] == "n1" and config["node_meta"] == {"rack": "r1"}
    assert flags["config_paths"] == [("file", "x.json"), ("dir", "d"), ("file", "y.yaml")]
    assert flags["dev"] is True


@pytest.mark.parametrize(("argv", "message"), [
    (["-nope"], "unknown flag -nope"),
    (["--nope=1"], "unknown flag -nope"),
    (["-http-port"], "-http-port: flag needs an argument"),
    (["-http-port", "eighty"], "-http-port: expected an integer, got 'eighty'"),
    (["-server=maybe"], "-server: expected true or false"),
    (["agent"], "unexpected argument 'agent'"),
    (["-config-format", "toml"], "expected json, yaml or hcl"),
    (["-node-meta", "novalue"], "expected key:value"),
])
def test_flag_errors(argv, message):
    with pytest.raises(ConfigError) as exc:
        parse_agent_flags(argv)
    assert message in str(exc.value)


def test_consul_only_flags_warn_and_consume_their_value(tmp_path):
    loaded = load(tmp_path, "-grpc-port", "8502", "-rejoin", "-syslog", "-node-id=x", "-server")
    assert loaded.config.server is True and loaded.config.rejoin_after_leave is True
    assert loaded.warnings == [f"flag -{f} is not supported by waypost and is ignored"
                               for f in ("grpc-port", "syslog", "node-id")]


def test_dev_defaults():
    c = load_config(["-dev"]).config
    assert c.dev and c.server and c.bootstrap and c.data_dir is None
    assert (c.datacenter, c.client_addr, c.ports.http, c.ports.dns) == ("dc1", "127.0.0.1", 8500, 8600)
    assert c.performance.raft_multiplier == 1 and c.ui
    assert c.node_name == socket.gethostname().split(".")[0]
    assert c.leave_on_terminate is False and c.skip_leave_on_interrupt is True
    # flags still override dev
    assert load_config(["-dev", "-http-port", "0", "-dns-port=0"]).config.ports.http == 0


def test_merge_order_files_then_flags(tmp_path):
    one = write(tmp_path, "1.json", '{"datacenter": "east", "retry_join": ["a"], "node_meta": {"x": "1"},'
                                    ' "dns_config": {"only_passing": true}, "log_level": "debug"}')
    two = write(tmp_path, "2.yaml", "retry_join: [b]\nnode_meta:\n  y: '2'\ndns_config:\n  node_ttl: 30s\n"
                                    "log_level: warn\n")
    c = load(tmp_path, "-config-file", str(one), "-config-file", str(two), "-retry-join", "c",
             "-datacenter", "west").config
    assert c.datacenter == "west"
    assert c.retry_join == ["a", "b", "c"]
    assert c.node_meta == {"x": "1", "y": "2"}
    assert c.dns_config.only_passing and c.dns_config.node_ttl == 30.0
    assert c.log_level == "WARN"
    assert c.config_sources == [str(one), str(two)]


def test_config_dir_lexical_order_and_extensions(tmp_path):
    d = tmp_path / "conf.d"
    d.mkdir()
    write(d, "b.yaml", "datacenter: b\n")
    write(d, "a.json", '{"datacenter": "a"}')
    write(d, "c.hcl", 'datacenter = "c"\n')
    write(d, "README.md", "not config")
    (d / "sub.json").mkdir()
    c = load(tmp_path, "-config-dir", str(d)).config
    assert c.datacenter == "c"
    assert [Path(p).name for p in c.config_sources] == ["a.json", "b.yaml", "c.hcl"]


def test_errors_carry_file_and_line(tmp_path):
    path = write(tmp_path, "bad.yaml", """\
datacenter: dc1
ports:
  http: eighty
  dns: 70000
dns_config:
  node_ttl: forever
  soa:
    refresh: -1
bogus: true
log_level: loud
server: "yes"
""")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "-config-file", str(path))
    assert problems(exc) == [
        (str(path), 3, "ports.http: expected an integer, got 'eighty'"),
        (str(path), 4, "ports.dns: must be between -1 and 65535, got 70000"),
        (str(path), 6, "dns_config.node_ttl: invalid duration 'forever' (use e.g. \"10s\", \"1m30s\")"),
        (str(path), 8, "dns_config.soa.refresh: must be at least 0, got -1"),
        (str(path), 9, 'unknown configuration key "bogus"'),
        (str(path), 10, "log_level: must be one of TRACE, DEBUG, INFO, WARN, ERROR, got 'loud'"),
        (str(path), 11, "server: expected a boolean, got 'yes'"),
    ]


def test_errors_from_flags_and_syntax(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "-http-port", "99999")
    assert problems(exc) == [("command line", 0, "ports.http: must be between -1 and 65535, got 99999")]
    bad = write(tmp_path, "bad.json", '{\n  "server": true,\n  "ports": {"http": 1,}\n}')
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "-config-file", str(bad))
    assert problems(exc)[0][:2] == (str(bad), 3)
    with pytest.raises(ConfigError, match="config file does not exist"):
        load(tmp_path, "-config-file", str(tmp_path / "missing.json"))
    with pytest.raises(ConfigError, match="config directory does not exist"):
        load(tmp_path, "-config-dir", str(tmp_path / "nodir"))


def test_consul_only_keys_warn_with_file_and_line(tmp_path):
    path = write(tmp_path, "c.hcl", """\
acl {
  enabled = true
}
ports {
  sidecar_min_port = 21000
}
telemetry { disable_hostname = true }
""")
    loaded = load(tmp_path, "-config-file", str(path))
    assert loaded.warnings == [
        f'{path}:1: configuration key "acl" is not supported by waypost and is ignored',
        f'{path}:5: configuration key "ports.sidecar_min_port" is not supported by waypost and is ignored',
        f'{path}:7: configuration key "telemetry" is not supported by waypost and is ignored',
    ]


def test_service_definitions_in_config_files(tmp_path):
    one = write(tmp_path, "one.json", '{"server": true, "service": {"name": "web", "port": 80}}')
    two = write(tmp_path, "two.yaml", "services:\n  - name: api\ncheck:\n  name: disk\n  ttl: 1m\n")
    c = load(tmp_path, "-config-file", str(one), "-config-file", str(two)).config
    assert [s.service.id for s in c.services] == ["web", "api"]
    assert c.services[0].source == f"file:{one}"
    assert [ch.check_id for ch in c.checks] == ["disk"]


def test_definition_problems_in_config_files(tmp_path):
    one = write(tmp_path, "one.json", '{"service": {"name": "web"}}')
    two = write(tmp_path, "two.yaml", "server: true\nservice:\n  name: web\n  port: x\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "-config-file", str(one), "-config-file", str(two))
    assert problems(exc) == [(str(two), 4, "service.port: expected an integer, got 'x'")]
    two.write_text("server: true\nservice:\n  name: web\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "-config-file", str(one), "-config-file", str(two))
    assert problems(exc) == [(str(two), 2, f"duplicate service id 'web': also defined at {one}:1")]


def test_script_checks_need_enabling(tmp_path):
    path = write(tmp_path, "s.yaml", "service:\n  name: web\n  check:\n    args: [/bin/true]\n"
                                     "    interval: 10s\n")
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, "-config-file", str(path))
    ((file, line, message),) = problems(exc)
    assert (file, line) == (str(path), 3) and "enable_local_script_checks" in message
    assert load(tmp_path, "-config-file", str(path), "-enable-local-script-checks").config.services
    assert load(tmp_path, "-config-file", str(path), "-enable-script-checks").config.services


@pytest.mark.parametrize(("argv", "message"), [
    (["-bootstrap", "-bootstrap-expect", "3", "-server"], "mutually exclusive"),
    (["-bootstrap-expect", "3"], "require server mode"),
    (["-domain", "."], "domain must not be empty"),
])
def test_cross_key_rules(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        load(tmp_path, *argv)


def test_data_dir_required_unless_dev():
    with pytest.raises(ConfigError, match="data_dir is required"):
        load_config([])


def test_role_defaults_domain_dot_hcl_fragment_and_legacy_ui(tmp_path):
    client = load(tmp_path, "-domain", "example", "-hcl", 'ui = true\nnode_meta { a = "b" }').config
    assert client.leave_on_terminate is True and client.skip_leave_on_interrupt is False
    assert client.domain == "example."
    assert client.ui and client.node_meta == {"a": "b"}
    server = load(tmp_path, "-server").config
    assert server.leave_on_terminate is False and server.skip_leave_on_interrupt is True


def test_addresses_override_client_addr(tmp_path):
    path = write(tmp_path, "a.json", '{"client_addr": "10.0.0.1", "addresses": {"dns": "0.0.0.0"}}')
    c = load(tmp_path, "-config-file", str(path), "-http-port", "0").config
    assert c.http_addr() == ("10.0.0.1", 0) and c.dns_addr() == ("0.0.0.0", 8600)


def test_config_format_forces_the_parser(tmp_path):
    path = write(tmp_path, "agent.conf", '{"datacenter": "forced"}')
    assert load(tmp_path, "-config-format", "json", "-config-file", str(path)).config.datacenter == "forced"


@pytest.mark.parametrize("name", ["single-node.yaml", "server.json", "client.hcl"])
def test_example_configs_load_with_example_services(name):
    loaded = load_config(["-config-file", str(EXAMPLES / name), "-config-dir", str(EXAMPLES / "services")])
    assert loaded.warnings == []
    assert {s.service.service for s in loaded.config.services} == {"web", "api", "db", "cache"}


def test_dev_with_example_services():
    c = load_config(["-dev", "-config-dir", str(EXAMPLES / "services")]).config
    assert len(c.services) == 4 and c.data_dir is None
