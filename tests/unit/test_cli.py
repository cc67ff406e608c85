"""Tests of the `waypost` CLI against a fake agent (http.server on 127.0.0.1:0, in a thread: tests only).

Each command runs through `agent.cli.main` with captured stdout/stderr and a controlled environment;
the fake agent records every request so the HTTP calls are asserted too.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import threading
import types
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agent import cli
from agent.cli_flags import FlagSet, HelpRequested, UsageError
from agent.cli_format import columnize, format_catalog_nodes, tabwrite
from agent.cli_http import BadAddress, resolve_http_addr
from agent.encode import check_definition_to_api, service_definition_to_api
from agent.errors import ConfigError, DefinitionError, Problem
from agent.types import NodeService, ServiceDefinition, Weights
from checks.definition import CheckDefinition, CheckKind, Status

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: object
    headers: dict[str, str]


@dataclass
class FakeAgent:
    """Routes (method, path) → (status, body); body is JSON-encoded unless it is a str."""

    url: str = ""
    routes: dict[tuple[str, str], tuple[int, object]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def route(self, method: str, path: str, body: object = None, status: int = 200) -> None:
        self.routes[(method, path)] = (status, body)


def _handler(agent: FakeAgent) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            parts = urllib.parse.urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            path = urllib.parse.unquote(parts.path)
            agent.requests.append(
                Request(self.command, path, urllib.parse.parse_qs(parts.query, keep_blank_values=True),
                        body, dict(self.headers))
            )  # fmt: skip
            status, payload = agent.routes.get((self.command, path), (404, "no route"))
            data = payload if isinstance(payload, str) else json.dumps(payload)
            encoded = data.encode() if payload is not None else b""
            self.send_response(status)
            self.send_header("Content-Length", str(len(encoded)))
            self.end_headers()
            self.wfile.write(encoded)

        do_GET = do_PUT = _serve

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def fake_agent():
    agent = FakeAgent()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(agent))
    agent.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield agent
    server.shutdown()
    server.server_close()
    thread.join()


def run(argv: list[str], agent: FakeAgent | None = None, env: dict[str, str] | None = None):
    out, err = io.StringIO(), io.StringIO()
    environ = dict(env or {})
    if agent is not None:
        environ.setdefault("WAYPOST_HTTP_ADDR", agent.url)
    code = cli.main(argv, stdout=out, stderr=err, environ=environ)
    return code, out.getvalue(), err.getvalue()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- top level ---------------------------------------------------------------------------------


def test_version_prints_version_and_protocol():
    code, out, _ = run(["version"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Waypost v") and lines[0][len("Waypost v") :][0].isdigit()
    assert lines[1].startswith("Protocol 2 spoken by default, understands 2 to 3")
    assert run(["--version"])[1] == out


def test_no_command_and_unknown_command_print_usage_exit_1():
    code, out, err = run([])
    assert (code, out) == (1, "")
    assert "Usage: waypost" in err and "members" in err
    code, out, err = run(["frobnicate", "get", "x"])
    assert code == 1 and 'Unknown command: "frobnicate"' in err and "Available commands are:" in err
    code, _, err = run(["catalog", "bogus"])
    assert code == 1 and 'Unknown subcommand: "catalog bogus"' in err


def test_help_flags_exit_0_on_stdout():
    for argv in (["-h"], ["--help"], ["members", "-h"], ["catalog", "nodes", "--help"], ["catalog", "-h"]):
        code, out, err = run(argv)
        assert (code, err) == (0, ""), argv
        assert out.startswith("Usage: waypost"), argv


def test_bad_flag_is_usage_error_exit_1(fake_agent):
    code, out, err = run(["members", "-bogus"], fake_agent)
    assert code == 1 and out == ""
    assert err.startswith("flag provided but not defined: -bogus\nUsage: waypost members")
    code, _, err = run(["catalog", "services", "-node"], fake_agent)
    assert code == 1 and err.startswith("flag needs an argument: -node")
    code, _, err = run(["catalog", "services", "extra"], fake_agent)
    assert code == 1 and err == "Too many arguments (expected 0, got 1)\n"
    assert fake_agent.requests == []


def test_agent_down_is_one_line_error():
    port = closed_port()
    code, out, err = run(["members"], env={"CONSUL_HTTP_ADDR": f"127.0.0.1:{port}"})
    assert (code, out) == (1, "")
    assert err == f"Error retrieving members: connection refused (http://127.0.0.1:{port})\n"
    code, _, err = run(["info", "-http-addr", f"127.0.0.1:{port}"])
    assert err == f"Error querying agent: connection refused (http://127.0.0.1:{port})\n"


def test_unexpected_exception_becomes_one_line(monkeypatch, fake_agent):
    def boom(argv, ctx):
        raise RuntimeError("kaput")

    monkeypatch.setitem(cli.COMMANDS, "members", ("x", boom))
    code, out, err = run(["members"], fake_agent)
    assert (code, out, err) == (1, "", "Error: unexpected RuntimeError: kaput\n")


def test_agent_command_delegates_to_run_agent(monkeypatch):
    seen: list[list[str]] = []
    fake = types.ModuleType("agent.agent")
    fake.run_agent = lambda argv: seen.append(argv) or 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agent.agent", fake)
    assert run(["agent", "-dev", "-node=n1"])[0] == 3
    assert seen == [["-dev", "-node=n1"]]


def test_python_dash_m_agent_runs_the_cli():
    proc = subprocess.run([sys.executable, "-m", "agent", "version"], cwd=REPO, capture_output=True,
                          text=True, timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Waypost v")


# --- address resolution and flags ------------------------------------------------------------


def test_resolve_http_addr_order_and_shapes():
    assert resolve_http_addr("", {}) == "http://127.0.0.1:8500"
    assert resolve_http_addr("", {"CONSUL_HTTP_ADDR": "10.0.0.1:8501"}) == "http://10.0.0.1:8501"
    env = {"CONSUL_HTTP_ADDR": "a:1", "WAYPOST_HTTP_ADDR": "b:2"}
    assert resolve_http_addr("", env) == "http://b:2"
    assert resolve_http_addr("https://c:3/", env) == "https://c:3"
    assert resolve_http_addr("h:4", {"CONSUL_HTTP_SSL": "true"}) == "https://h:4"
    assert resolve_http_addr("[::1]:8500", {}) == "http://[::1]:8500"
    for bad in ("unix:///tmp/sock", "ftp://x:1", "host:notaport"):
        with pytest.raises(BadAddress):
            resolve_http_addr(bad, {})


def test_bad_http_addr_is_one_line(fake_agent):
    code, _, err = run(["leave", "-http-addr=ftp://x"])
    assert code == 1 and err == "Error connecting to agent: invalid HTTP address: ftp://x\n"


def test_flagset_shapes():
    fs = FlagSet("t", "Usage: t")
    fs.bool("detailed", "d")
    fs.string("status", "s", default=".*")
    fs.int("port", "p")
    fs.multi("tag", "t")
    fs.mapping("meta", "m")
    values, rest = fs.parse(
        [
            "-detailed=false",
            "--status",
            "alive",
            "-port=80",
            "-tag",
            "a",
            "-tag=b",
            "-meta",
            "k=v=w",
            "f1",
            "-x",
        ]
    )
    assert values == {
        "detailed": False,
        "status": "alive",
        "port": 80,
        "tag": ["a", "b"],
        "meta": {"k": "v=w"},
    }
    assert rest == ["f1", "-x"]
    assert fs.parse(["-detailed", "--", "-port"]) == (
        {"detailed": True, "status": ".*", "port": 0, "tag": [], "meta": {}}, ["-port"])  # fmt: skip
    for bad in (["-port=x"], ["-meta", "novalue"], ["-detailed=maybe"], ["-status"], ["---x"], ["-nope"]):
        with pytest.raises(UsageError):
            fs.parse(bad)
    with pytest.raises(HelpRequested):
        fs.parse(["-help"])


def test_token_header_from_flag_and_env(fake_agent):
    fake_agent.route("PUT", "/v1/agent/reload")
    run(["reload", "-token", "s3cret"], fake_agent)
    run(["reload"], fake_agent, env={"CONSUL_HTTP_TOKEN": "envtok"})
    run(["reload"], fake_agent)
    tokens = [r.headers.get("X-Consul-Token") for r in fake_agent.requests]
    assert tokens == ["s3cret", "envtok", None]


# --- members ---------------------------------------------------------------------------------

MEMBERS = [
    {"Name": "web-1", "Addr": "10.0.0.7", "Port": 8301, "Status": 4,
     "Tags": {"role": "node", "dc": "dc1", "build": "0.1.0:abc", "vsn": "2", "id": "x"}},
    {"Name": "srv-b", "Addr": "10.0.0.2", "Port": 8301, "Status": 1,
     "Tags": {"role": "consul", "dc": "dc1", "build": "0.1.0:abc", "vsn": "2", "port": "8300"}},
    {"Name": "srv-a", "Addr": "::1", "Port": 8301, "Status": 1,
     "Tags": {"role": "consul", "dc": "dc1", "build": "0.1.0", "vsn": "2"}},
    {"Name": "odd", "Addr": "10.0.0.9", "Port": 8301, "Status": 3, "Tags": {}},
]  # fmt: skip


def test_members_table(fake_agent):
    fake_agent.route("GET", "/v1/agent/members", MEMBERS)
    code, out, err = run(["members"], fake_agent)
    assert (code, err) == (0, "")
    assert out == (
        "Node   Address        Status  Type     Build  Protocol  DC   Partition  Segment\n"
        "srv-a  [::1]:8301     alive   server   0.1.0  2         dc1  default    <all>\n"
        "srv-b  10.0.0.2:8301  alive   server   0.1.0  2         dc1  default    <all>\n"
        "odd    10.0.0.9:8301  left    unknown\n"
        "web-1  10.0.0.7:8301  failed  client   0.1.0  2         dc1  default    <default>\n"
    )


def test_members_detailed_and_status_filter(fake_agent):
    fake_agent.route("GET", "/v1/agent/members", MEMBERS)
    code, out, _ = run(["members", "-detailed", "-status=fail"], fake_agent)
    assert code == 0
    assert out == (
        "Node   Address        Status  Tags\n"
        "web-1  10.0.0.7:8301  failed  "
        "ap=default,build=0.1.0:abc,dc=dc1,id=x,role=node,segment=<default>,vsn=2\n"
    )
    assert run(["members", "-status", "^leaving$"], fake_agent)[:2] == (2, "")
    code, _, err = run(["members", "-status", "("], fake_agent)
    assert code == 1 and err.startswith("Failed to compile status regexp:")


def test_members_wan_param(fake_agent):
    fake_agent.route("GET", "/v1/agent/members", MEMBERS[:1])
    run(["members", "-wan"], fake_agent)
    assert fake_agent.requests[0].query == {"wan": ["1"]}


# --- catalog ---------------------------------------------------------------------------------


def test_catalog_services_plain_and_tags(fake_agent):
    fake_agent.route("GET", "/v1/catalog/services", {"web": ["v2", "primary"], "consul": [], "db": None})
    code, out, _ = run(["catalog", "services"], fake_agent)
    assert (code, out) == (0, "consul\ndb\nweb\n")
    code, out, _ = run(["catalog", "services", "-tags"], fake_agent)
    assert out == "consul\ndb\nweb         primary,v2\n"


def test_catalog_services_node_and_meta_params(fake_agent):
    node = {"Node": {"Node": "n1"}, "Services": {
        "web-1": {"ID": "web-1", "Service": "web", "Tags": ["b"]},
        "web-2": {"ID": "web-2", "Service": "web", "Tags": ["a"]},
        "redis": {"ID": "redis", "Service": "redis", "Tags": None}}}  # fmt: skip
    fake_agent.route("GET", "/v1/catalog/node/n1", node)
    code, out, _ = run(["catalog", "services", "-node=n1", "-tags", "-node-meta", "rack=r1",
                        "-datacenter", "dc2", "-stale"], fake_agent)  # fmt: skip
    assert (code, out) == (0, "redis\nweb        a,b\n")
    assert fake_agent.requests[0].query == {"dc": ["dc2"], "stale": [""], "node-meta": ["rack:r1"]}


def test_catalog_services_empty_hint(fake_agent):
    fake_agent.route("GET", "/v1/catalog/services", {})
    fake_agent.route("GET", "/v1/catalog/node/ghost", None)
    for argv in (["catalog", "services"], ["catalog", "services", "-node", "ghost"]):
        code, out, err = run(argv, fake_agent)
        assert (code, out) == (0, "")
        assert err == "No services match the given query - try expanding your search.\n"


NODES = [
    {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "baz", "Address": "10.1.10.11",
     "Datacenter": "dc1", "TaggedAddresses": {"wan": "1.2.3.4", "lan": "10.1.10.11"}, "Meta": {"k": "v"}},
    {"ID": "", "Node": "foobar-long", "Address": "10.1.10.12", "Datacenter": "dc1"},
]  # fmt: skip


def test_catalog_nodes_table_and_detailed(fake_agent):
    fake_agent.route("GET", "/v1/catalog/nodes", NODES)
    code, out, _ = run(["catalog", "nodes", "-near", "_agent"], fake_agent)
    assert code == 0
    assert out == (
        "Node         ID        Address     DC\n"
        "baz          40e4a748  10.1.10.11  dc1\n"
        "foobar-long            10.1.10.12  dc1\n"
    )
    assert fake_agent.requests[0].query == {"near": ["_agent"]}
    code, out, _ = run(["catalog", "nodes", "-detailed"], fake_agent)
    assert out.splitlines()[1] == (
        "baz          40e4a748-2192-161a-0510-9bf59fe950b5  10.1.10.11  dc1  lan=10.1.10.11, wan=1.2.3.4  k=v"
    )


def test_catalog_nodes_for_service_and_empty(fake_agent):
    fake_agent.route("GET", "/v1/catalog/service/web", [
        {"ID": "abcdef01-0000", "Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1",
         "NodeMeta": {"a": "b"}, "ServiceID": "web-1"}])  # fmt: skip
    code, out, _ = run(["catalog", "nodes", "-service", "web"], fake_agent)
    assert out == "Node  ID        Address   DC\nn1    abcdef01  10.0.0.1  dc1\n"
    fake_agent.route("GET", "/v1/catalog/nodes", [])
    code, out, err = run(["catalog", "nodes"], fake_agent)
    assert (code, out, err) == (0, "", "No nodes match the given query - try expanding your search.\n")


def test_catalog_datacenters(fake_agent):
    fake_agent.route("GET", "/v1/catalog/datacenters", ["dc1", "dc2"])
    assert run(["catalog", "datacenters"], fake_agent)[:2] == (0, "dc1\ndc2\n")


def test_http_error_body_is_shown(fake_agent):
    fake_agent.route("GET", "/v1/catalog/nodes", "No cluster leader", status=500)
    code, out, err = run(["catalog", "nodes"], fake_agent)
    assert (code, out) == (1, "")
    assert err == "Error listing nodes: Unexpected response code: 500 (No cluster leader)\n"


# --- info, reload, leave, join ---------------------------------------------------------------


def test_info_sections_from_stats(fake_agent):
    fake_agent.route("GET", "/v1/agent/self", {
        "Config": {"Datacenter": "dc1"},
        "Stats": {"raft": {"state": "Leader", "term": "2"},
                  "agent": {"services": "3", "checks": "1"}}})  # fmt: skip
    code, out, _ = run(["info"], fake_agent)
    assert (code, out) == (0, "agent:\n\tchecks = 1\n\tservices = 3\nraft:\n\tstate = Leader\n\tterm = 2\n")


def test_info_falls_back_to_config_without_stats(fake_agent):
    fake_agent.route("GET", "/v1/agent/self", {"Config": {"NodeName": "n1", "Server": True, "X": None}})
    assert run(["info"], fake_agent)[1] == "config:\n\tNodeName = n1\n\tServer = true\n\tX = \n"
    fake_agent.route("GET", "/v1/agent/self", {})
    code, _, err = run(["info"], fake_agent)
    assert code == 1 and "did not contain 'Stats'" in err


def test_reload_and_leave(fake_agent):
    fake_agent.route("PUT", "/v1/agent/reload")
    fake_agent.route("PUT", "/v1/agent/leave")
    assert run(["reload"], fake_agent)[:2] == (0, "Configuration reload triggered\n")
    assert run(["leave"], fake_agent)[:2] == (0, "Graceful leave complete\n")
    assert [(r.method, r.path) for r in fake_agent.requests] == [
        ("PUT", "/v1/agent/reload"), ("PUT", "/v1/agent/leave")]  # fmt: skip
    fake_agent.route("PUT", "/v1/agent/reload", "Failed reloading config: bad.yaml:3: oops", status=500)
    code, _, err = run(["reload"], fake_agent)
    assert code == 1
    assert (
        err == "Error reloading: Unexpected response code: 500 (Failed reloading config: bad.yaml:3: oops)\n"
    )


def test_join(fake_agent):
    fake_agent.route("PUT", "/v1/agent/join/10.0.0.2")
    fake_agent.route("PUT", "/v1/agent/join/10.0.0.3:8301", "dial tcp: refused", status=500)
    code, out, err = run(["join", "10.0.0.2", "10.0.0.3:8301"], fake_agent)
    assert (code, out) == (0, "Successfully joined cluster by contacting 1 nodes.\n")
    assert "Error joining address '10.0.0.3:8301'" in err
    code, _, err = run(["join", "10.0.0.3:8301"], fake_agent)
    assert code == 1 and err.endswith("Failed to join any nodes.\n")


# --- services register / deregister ----------------------------------------------------------

WEB_YAML = """\
service:
  name: web
  id: web-1
  port: 8080
  tags: [v1]
  checks:
    - name: HTTP health
      http: http://127.0.0.1:8080/health
      interval: 10s
      timeout: 2s
"""
DB_JSON = '{"services": [{"name": "db", "port": 5432}, {"name": "cache", "id": "cache-1"}]}'


@pytest.fixture
def service_files(tmp_path):
    pytest.importorskip("agent.servicedef")
    (tmp_path / "web.yaml").write_text(WEB_YAML)
    (tmp_path / "db.json").write_text(DB_JSON)
    (tmp_path / "bad.yaml").write_text("service:\n  name: web\n  port: abc\n")
    return tmp_path


def test_services_register_from_files(fake_agent, service_files):
    fake_agent.route("PUT", "/v1/agent/service/register")
    files = [str(service_files / "web.yaml"), str(service_files / "db.json")]
    code, out, err = run(["services", "register", *files], fake_agent)
    assert (code, err) == (0, "")
    assert out == "Registered service: web\nRegistered service: db\nRegistered service: cache\n"
    bodies = [r.body for r in fake_agent.requests]
    assert all(r.method == "PUT" and r.path == "/v1/agent/service/register" for r in fake_agent.requests)
    web = bodies[0]
    assert {k: web[k] for k in ("ID", "Name", "Port", "Tags")} == {
        "ID": "web-1", "Name": "web", "Port": 8080, "Tags": ["v1"]}  # fmt: skip
    assert web["Checks"] == [{"CheckID": "service:web-1", "Name": "HTTP health",
                              "HTTP": "http://127.0.0.1:8080/health",
                              "Interval": "10s", "Timeout": "2s"}]  # fmt: skip
    assert bodies[2]["ID"] == "cache-1"


def test_services_register_file_problems_register_nothing(fake_agent, service_files):
    files = [str(service_files / "web.yaml"), str(service_files / "bad.yaml"), str(service_files / "no.yaml")]
    code, out, err = run(["services", "register", *files], fake_agent)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith(f"{service_files / 'bad.yaml'}:3: ")
    assert lines[1].startswith(f"{service_files / 'no.yaml'}")
    assert fake_agent.requests == []


def test_services_register_flags_and_combination(fake_agent, service_files):
    fake_agent.route("PUT", "/v1/agent/service/register")
    code, out, _ = run(["services", "register", "-name=api", "-port", "80", "-tag=x", "-tag", "y",
                        "-meta", "env=prod", "-tagged-address", "wan=1.2.3.4:8080", "-address=10.0.0.5"],
                       fake_agent)  # fmt: skip
    assert (code, out) == (0, "Registered service: api\n")
    assert fake_agent.requests[0].body == {
        "Name": "api", "Address": "10.0.0.5", "Port": 80, "Tags": ["x", "y"], "Meta": {"env": "prod"},
        "TaggedAddresses": {"wan": {"Address": "1.2.3.4", "Port": 8080}}}  # fmt: skip
    run(
        ["services", "register", "-tag=extra", "-address=10.9.9.9", str(service_files / "web.yaml")],
        fake_agent,
    )
    body = fake_agent.requests[1].body
    assert body["Tags"] == ["v1", "extra"] and body["Address"] == "10.9.9.9" and body["Port"] == 8080


def test_services_register_usage_errors(fake_agent):
    code, _, err = run(["services", "register"], fake_agent)
    assert code == 1 and err == "Service registration requires at least one argument or flags.\n"
    code, _, err = run(["services", "register", "-name=a", "f.yaml"], fake_agent)
    assert code == 1 and err == "Service registration requires arguments or -id, not both.\n"
    code, _, err = run(["services", "register", "-name=a", "-tagged-address", "wan=1.2.3.4"], fake_agent)
    assert code == 1 and err.startswith("Invalid Tagged Address:")
    code, _, err = run(["services", "register", "-name=a", "-port=eighty"], fake_agent)
    assert code == 1 and err.startswith('invalid value "eighty" for flag -port')
    assert fake_agent.requests == []


def test_services_register_http_400_body_shown(fake_agent):
    fake_agent.route("PUT", "/v1/agent/service/register", "Invalid check: TTL must be > 0", status=400)
    code, out, err = run(["services", "register", "-name=web"], fake_agent)
    assert (code, out) == (1, "")
    assert (
        err
        == 'Error registering service "web": Unexpected response code: 400 (Invalid check: TTL must be > 0)\n'
    )


def test_services_deregister_by_id_and_files(fake_agent, service_files):
    fake_agent.route("PUT", "/v1/agent/service/deregister/web-1")
    fake_agent.route("PUT", "/v1/agent/service/deregister/db")
    fake_agent.route("PUT", "/v1/agent/service/deregister/cache-1")
    assert run(["services", "deregister", "-id", "web-1"], fake_agent)[:2] == (
        0,
        "Deregistered service: web-1\n",
    )
    code, out, _ = run(["services", "deregister", str(service_files / "db.json")], fake_agent)
    assert (code, out) == (0, "Deregistered service: db\nDeregistered service: cache-1\n")
    fake_agent.route("PUT", "/v1/agent/service/deregister/gone", 'Unknown service ID "gone"', status=404)
    code, _, err = run(["services", "deregister", "-id=gone"], fake_agent)
    assert code == 1
    assert (
        err
        == 'Error deregistering service "gone": Unexpected response code: 404 (Unknown service ID "gone")\n'
    )
    code, _, err = run(["services", "deregister"], fake_agent)
    assert code == 1 and err == "Service deregistration requires at least one argument or -id.\n"
    code, _, err = run(["services", "deregister", "-id=x", "f.yaml"], fake_agent)
    assert code == 1 and err == "Service deregistration requires arguments or -id, not both.\n"


# --- validate --------------------------------------------------------------------------------


@pytest.fixture
def fake_config(monkeypatch):
    """A stand-in agent.config: records argv; raises for files containing 'bad'."""
    calls: list[list[str]] = []

    def load_config(argv: list[str]):
        calls.append(argv)
        problems = [Problem(p, 2, 'unknown configuration key "x"') for p in argv if "bad" in p]
        if problems:
            raise ConfigError(problems)
        if any("defn" in p for p in argv):
            raise DefinitionError([Problem(argv[1], 4, "service.port: expected an integer")])
        return types.SimpleNamespace(config=object(), warnings=['a.json: key "telemetry" is not supported'])

    module = types.ModuleType("agent.config")
    module.load_config = load_config  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "agent.config", module)
    return calls


def test_validate_valid_files_and_dirs(fake_config, tmp_path):
    (tmp_path / "a.json").write_text("{}")
    (tmp_path / "d").mkdir()
    code, out, err = run(["validate", str(tmp_path / "a.json"), str(tmp_path / "d")])
    assert (code, out) == (0, "Configuration is valid!\n")
    assert err == 'a.json: key "telemetry" is not supported\n'
    assert fake_config == [["-config-file", str(tmp_path / "a.json")]]  # the empty directory adds no file
    assert run(["validate", "-quiet", str(tmp_path / "a.json")])[:2] == (0, "")


def test_validate_reports_every_problem(fake_config, tmp_path):
    for name in ("bad1.yaml", "bad2.yaml", "defn.yaml"):
        (tmp_path / name).write_text("x: 1\n")
    code, out, err = run(["validate", str(tmp_path / "bad1.yaml"), str(tmp_path / "bad2.yaml")])
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f'{tmp_path / n}:2: unknown configuration key "x"' for n in ("bad1.yaml", "bad2.yaml")
    ]
    code, _, err = run(["validate", str(tmp_path / "defn.yaml")])
    assert (code, err) == (1, f"{tmp_path / 'defn.yaml'}:4: service.port: expected an integer\n")
    code, _, err = run(["validate", str(tmp_path / "missing.yaml")])
    assert (code, err) == (1, f"{tmp_path / 'missing.yaml'}: no such file or directory\n")
    code, _, err = run(["validate"])
    assert (code, err) == (1, "Must specify at least one config file or directory\n")


def test_validate_with_real_loaders(tmp_path):
    config = pytest.importorskip("agent.config")
    if not hasattr(config, "load_config"):
        pytest.skip("agent.config.load_config not written yet")
    (tmp_path / "web.yaml").write_text(WEB_YAML)
    code, out, err = run(["validate", str(tmp_path / "web.yaml")])
    assert (code, out) == (0, "Configuration is valid!\n"), err
    (tmp_path / "bad.yaml").write_text("service:\n  name: web\n  port: abc\n")
    code, out, err = run(["validate", str(tmp_path / "bad.yaml")])
    assert (code, out) == (1, "") and err.startswith(f"{tmp_path / 'bad.yaml'}:3: "), err
    (tmp_path / "agent.yaml").write_text(f"datacenter: dc1\ndata_dir: {tmp_path}\nnode_name: n1\n")
    code, out, err = run(["validate", str(tmp_path / "agent.yaml"), str(tmp_path / "web.yaml")])
    assert (code, out) == (0, "Configuration is valid!\n"), err
    (tmp_path / "typo.yaml").write_text(f"data_dir: {tmp_path}\ndatacenterr: dc1\n")
    code, out, err = run(["validate", str(tmp_path / "typo.yaml")])
    assert (code, out) == (1, "") and err.startswith(f"{tmp_path / 'typo.yaml'}:2: "), err


# --- formatting and encoding -----------------------------------------------------------------


def test_columnize_and_tabwrite():
    assert columnize([["a", "bb", "c"], ["ddd", "e", ""], ["f"]]) == "a    bb  c\nddd  e\nf"
    assert tabwrite([["web", "a,b"], ["consul", ""]]) == "web         a,b\nconsul"


def test_catalog_nodes_id_cut_at_first_dash():
    out = format_catalog_nodes([{"ID": "nodash", "Node": "n", "Address": "a", "Datacenter": "d"}], False)
    assert out.splitlines()[1] == "n     nodash  a        d"


def test_service_definition_to_api_shape():
    sd = ServiceDefinition(
        NodeService("redis1", "redis", tags=("primary",), address="127.0.0.1", port=8000,
                    meta={"v": "4"}, tagged_addresses={"wan": ("1.2.3.4", 80)}, weights=Weights(10, 1)),
        checks=[CheckDefinition("service:redis1", "Redis", kind=CheckKind.SCRIPT, args=["/bin/check"],
                                interval=10.0, timeout=5.0, deregister_critical_service_after=5400.0,
                                status=Status.PASSING)],
    )  # fmt: skip
    assert service_definition_to_api(sd) == {
        "ID": "redis1", "Name": "redis", "Tags": ["primary"], "Address": "127.0.0.1", "Port": 8000,
        "Meta": {"v": "4"}, "TaggedAddresses": {"wan": {"Address": "1.2.3.4", "Port": 80}},
        "Weights": {"Passing": 10, "Warning": 1},
        "Checks": [{"CheckID": "service:redis1", "Name": "Redis", "Status": "passing", "Args": ["/bin/check"],
                    "Interval": "10s", "Timeout": "5s", "DeregisterCriticalServiceAfter": "1h30m0s"}],
    }  # fmt: skip
    ttl = CheckDefinition("c1", "hb", kind=CheckKind.TTL, ttl=30.0, service_id="web")
    assert check_definition_to_api(ttl, embedded=False) == {
        "ID": "c1",
        "Name": "hb",
        "ServiceID": "web",
        "TTL": "30s",
    }


def test_encode_round_trips_through_decode(service_files):
    decode = pytest.importorskip("agent.decode")
    from agent.servicedef import load_file

    for name in ("web.yaml", "db.json"):
        for sd in load_file(service_files / name).services:
            again = decode.decode_service(service_definition_to_api(sd))
            assert (again.service, again.checks) == (sd.service, sd.checks)
