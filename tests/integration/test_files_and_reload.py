"""Service definition files loaded at start, and reload (HTTP, SIGHUP) applying changes."""

from __future__ import annotations

import signal
from pathlib import Path

from tests.integration.harness import ROOT, AgentProcess, run_cli

WEB = """\
service:
  name: web
  id: web-1
  port: 8080
  tags: [v1]
  check:
    ttl: 30s
"""
WEB_CHANGED = WEB.replace("port: 8080", "port: 9090").replace("[v1]", "[v2]")
API = '{"service": {"name": "api", "port": 7000}}'


def service_ports(agent: AgentProcess) -> dict[str, int]:
    return {s["ServiceID"]: s["ServicePort"] for name in agent.get("/v1/catalog/services").json()
            for s in agent.get(f"/v1/catalog/service/{name}").json() if name != "consul"}


def test_files_load_and_reload_applies_added_changed_removed(start_agent, tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "web.yaml").write_text(WEB)
    agent = start_agent("-config-dir", str(conf))
    assert service_ports(agent) == {"web-1": 8080}
    assert agent.get("/v1/agent/checks").json()["service:web-1"]["Type"] == "ttl"

    (conf / "web.yaml").write_text(WEB_CHANGED)
    (conf / "api.json").write_text(API)
    assert agent.put("/v1/agent/reload").status == 200
    assert service_ports(agent) == {"web-1": 9090, "api": 7000}
    assert agent.get("/v1/catalog/service/web").json()[0]["ServiceTags"] == ["v2"]

    # a bad file: reload reports it and nothing changes
    (conf / "bad.yaml").write_text("service:\n  name: bad\n  port: many\n")
    reply = agent.put("/v1/agent/reload")
    assert reply.status == 400 and "bad.yaml:3" in reply.text
    assert service_ports(agent) == {"web-1": 9090, "api": 7000}
    (conf / "bad.yaml").unlink()

    # removed by SIGHUP; API-registered services survive reloads
    agent.put("/v1/agent/service/register", {"Name": "adhoc", "Port": 1})
    (conf / "api.json").unlink()
    agent.signal(signal.SIGHUP)
    agent.wait_for(lambda: "api" not in service_ports(agent), what="api removed by SIGHUP reload")
    assert service_ports(agent) == {"web-1": 9090, "adhoc": 1}


def test_bad_file_at_start_is_reported_with_line(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "web.yaml").write_text("service:\n  name: web\n  port: 80\n  colour: blue\n")
    agent = AgentProcess(tmp_path, "-config-dir", str(conf))
    try:
        agent.start(timeout=15)
        raise AssertionError("agent started with a bad service file")
    except RuntimeError as exc:
        assert "web.yaml:4" in str(exc) and "colour" in str(exc)


def test_cli_against_a_real_agent(start_agent, tmp_path: Path) -> None:
    agent = start_agent("-node", "cli-node")
    members = run_cli("members", http_port=agent.http_port)
    assert members.returncode == 0 and "cli-node" in members.stdout and "alive" in members.stdout
    service_file = tmp_path / "web.yaml"
    service_file.write_text(WEB)
    registered = run_cli("services", "register", str(service_file), http_port=agent.http_port)
    assert registered.returncode == 0, registered.stderr
    assert "web-1" in service_ports(agent)
    listed = run_cli("catalog", "services", "-tags", http_port=agent.http_port)
    assert "web" in listed.stdout and "v1" in listed.stdout
    nodes = run_cli("catalog", "nodes", "-service", "web", http_port=agent.http_port)
    assert "cli-node" in nodes.stdout
    gone = run_cli("services", "deregister", "-id", "web-1", http_port=agent.http_port)
    assert gone.returncode == 0 and "web-1" not in service_ports(agent)
    assert run_cli("reload", http_port=agent.http_port).returncode == 0
    info = run_cli("info", http_port=agent.http_port)
    assert info.returncode == 0 and "leader = true" in info.stdout and "services = 0" in info.stdout


def test_validate_examples_and_a_bad_file(tmp_path: Path) -> None:
    ok = run_cli("validate", str(ROOT / "examples" / "services"))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("service:\n  name: 'not a dns name!'\n  port: 80\n")
    result = run_cli("validate", str(bad))
    assert result.returncode != 0 and f"{bad}:2" in result.stderr


def test_cli_reports_unreachable_agent() -> None:
    result = run_cli("members", http_port=1)
    assert result.returncode != 0 and "Traceback" not in result.stderr and result.stderr.strip()


def test_leave_stops_the_agent(start_agent) -> None:
    agent = start_agent()
    assert run_cli("leave", http_port=agent.http_port).returncode == 0
    assert agent.proc is not None and agent.proc.wait(timeout=15) == 0
