"""Health checks in a real agent: statuses flow from probes and the TTL API into the agent's checks,
the catalog's `?passing` answers and the check history; scripts need their switches; TTL state
survives a restart. Every wait is a poll with a deadline (interval + thresholds + slack)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.check_peer import CheckPeer
from tests.integration.harness import AgentProcess, run_cli

INTERVAL = 1.0  # every probe check in this module
DEADLINE = 8.0  # generous bound for interval x thresholds + catalog sync on a loaded 2-core CI box
FAST_REAPER = {"WAYPOST_TEST_CHECK_REAP_INTERVAL": "200ms", "WAYPOST_TEST_CHECK_DEREGISTER_MIN": "1s"}

WEB = """\
service:
  name: web
  id: web-1
  port: {peer}
  address: 127.0.0.1
  check:
    id: web-http
    name: web HTTP
    http: http://127.0.0.1:{peer}/health
    interval: 1s
    timeout: 1s
    failures_before_critical: 2
"""
DB = """\
service:
  name: db
  id: db-1
  port: {port}
  check:
    id: db-tcp
    name: db TCP
    tcp: 127.0.0.1:{port}
    interval: 1s
    timeout: 1s
"""
API = """\
service:
  name: api
  id: api-1
  port: 7000
  check:
    id: api-ttl
    name: api heartbeat
    ttl: 2s
"""
SCRIPT = """\
service:
  name: job
  port: 1
  check:
    id: job-script
    args: ["/bin/sh", "-c", "echo all good"]
    interval: 1s
"""


def listener(port: int = 0) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)  # connects complete in the kernel's backlog: nothing needs to accept them
    return sock


class Env:
    def __init__(self, agent: AgentProcess, peer: CheckPeer, tcp: socket.socket) -> None:
        self.agent, self.peer, self.tcp = agent, peer, tcp

    def check(self, check_id: str) -> dict:
        return self.agent.get("/v1/agent/checks").json().get(check_id, {})

    def status(self, check_id: str) -> str:
        return self.check(check_id).get("Status", "")

    def passing(self, name: str) -> list[str]:
        reply = self.agent.get(f"/v1/health/service/{name}?passing")
        assert reply.status == 200, reply.text
        return [row["Service"]["ID"] for row in reply.json()]

    def catalog_status(self, check_id: str) -> str:
        rows = self.agent.get("/v1/health/state/any").json()
        return next((r["Status"] for r in rows if r["CheckID"] == check_id), "")

    def wait_status(self, check_id: str, status: str, what: str = "") -> dict:
        self.agent.wait_for(lambda: self.status(check_id) == status, DEADLINE,
                            what or f"{check_id} {status}")
        return self.check(check_id)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    work = tmp_path_factory.mktemp("checks")
    conf = work / "conf.d"
    conf.mkdir()
    peer = CheckPeer()
    tcp = listener()
    (conf / "web.yaml").write_text(WEB.format(peer=peer.port))
    (conf / "db.yaml").write_text(DB.format(port=tcp.getsockname()[1]))
    (conf / "api.yaml").write_text(API)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAST_REAPER.items():
            mp.setenv(key, value)
        agent = AgentProcess(work, "-node", "checks", "-config-dir", str(conf)).start()
    try:
        yield Env(agent, peer, tcp)
    finally:
        agent.stop()
        peer.stop()
        tcp.close()


def test_http_check_follows_the_server(env: Env) -> None:
    agent, peer = env.agent, env.peer
    env.wait_status("web-http", "passing", "first probe of the HTTP check")
    agent.wait_for(lambda: env.passing("web") == ["web-1"], DEADLINE, "web in ?passing")
    assert "200 OK" in env.check("web-http")["Output"]

    peer.set_status(500)
    seen = peer.hits()
    agent.wait_for(lambda: peer.hits() > seen, DEADLINE, "a probe answered 500")
    assert env.status("web-http") == "passing"  # failures_before_critical: 2 — one failure is not enough
    check = env.wait_status("web-http", "critical", "two failures → critical")
    assert "500 Internal Server Error" in check["Output"] and "status 500" in check["Output"]
    agent.wait_for(lambda: env.passing("web") == [], DEADLINE, "web leaves ?passing")

    peer.set_status(429)
    check = env.wait_status("web-http", "warning", "429 → warning")
    assert "429 Too Many Requests" in check["Output"]
    agent.wait_for(lambda: env.catalog_status("web-http") == "warning", DEADLINE, "catalog sees warning")
    assert env.passing("web") == []  # ?passing keeps only instances whose checks all pass

    peer.set_status(200)
    env.wait_status("web-http", "passing", "200 → passing again")
    agent.wait_for(lambda: env.passing("web") == ["web-1"], DEADLINE, "web back in ?passing")

    history = agent.get("/v1/agent/check/history/web-http").json()
    steps = [(h["Old"], h["New"], h["Reason"]) for h in history]
    assert steps[0] == ("", "critical", "initial")
    assert ("passing", "critical", "failures_before_critical") in steps
    assert ("critical", "warning", "probe") in steps
    assert steps[-1][:2] == ("warning", "passing")
    assert all(isinstance(h["Time"], float) for h in history)

    shown = run_cli("checks", "history", "web-http", http_port=agent.http_port)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0].split() == ["TIME", "FROM", "TO", "REASON", "OUTPUT"]
    assert len(lines) == len(history) + 1
    assert "failures_before_critical" in shown.stdout


def test_check_history_edges(env: Env) -> None:
    agent = env.agent
    missing = agent.get("/v1/agent/check/history/no-such-check")
    assert missing.status == 404 and "no-such-check" in missing.text
    assert agent.put("/v1/agent/maintenance?enable=true&reason=patching").status == 200
    try:
        maint = agent.get("/v1/agent/check/history/_node_maintenance")
        assert maint.status == 200 and maint.json() == []  # no runner: nothing observed changing
        shown = run_cli("checks", "history", "_node_maintenance", http_port=agent.http_port)
        assert shown.returncode == 0 and "No status transitions" in shown.stderr
    finally:
        agent.put("/v1/agent/maintenance?enable=false")
    unknown = run_cli("checks", "history", "no-such-check", http_port=agent.http_port)
    assert unknown.returncode == 1 and "404" in unknown.stderr and "no-such-check" in unknown.stderr


def test_tcp_check_follows_the_listener(env: Env) -> None:
    port = env.tcp.getsockname()[1]
    env.wait_status("db-tcp", "passing", "TCP connect succeeds")
    assert f"127.0.0.1:{port}" in env.check("db-tcp")["Output"]
    env.tcp.close()
    check = env.wait_status("db-tcp", "critical", "connection refused → critical")
    assert "refused" in check["Output"].lower()
    env.agent.wait_for(lambda: env.passing("db") == [], DEADLINE, "db leaves ?passing")
    env.tcp = listener(port)
    env.wait_status("db-tcp", "passing", "listener back → passing")
    env.agent.wait_for(lambda: env.passing("db") == ["db-1"], DEADLINE, "db back in ?passing")


def test_ttl_check_through_the_api(env: Env) -> None:
    agent = env.agent
    assert env.status("api-ttl") == "critical"  # a TTL check starts critical until told otherwise
    for verb, status, note in (("pass", "passing", "ok"), ("warn", "warning", "slow"),
                               ("fail", "critical", "down")):
        assert agent.put(f"/v1/agent/check/{verb}/api-ttl?note={note}").status == 200
        check = env.check("api-ttl")
        assert (check["Status"], check["Output"]) == (status, note)
        agent.wait_for(lambda s=status: env.catalog_status("api-ttl") == s, DEADLINE, f"catalog {status}")
    reply = agent.put("/v1/agent/check/update/api-ttl", {"Status": "passing", "Output": "via update"})
    assert reply.status == 200
    assert (env.status("api-ttl"), env.check("api-ttl")["Output"]) == ("passing", "via update")
    agent.wait_for(lambda: env.passing("api") == ["api-1"], DEADLINE, "api in ?passing")
    check = env.wait_status("api-ttl", "critical", "TTL (2s) expires without an update")
    assert check["Output"].startswith("TTL expired")
    agent.wait_for(lambda: env.passing("api") == [], DEADLINE, "api leaves ?passing")
    reasons = [h["Reason"] for h in agent.get("/v1/agent/check/history/api-ttl").json()]
    assert reasons[-1] == "ttl_expired" and "ttl_update" in reasons


def test_deregister_critical_service_after(env: Env) -> None:
    agent = env.agent
    doomed = {"Name": "doomed", "Check": {"TTL": "30s", "DeregisterCriticalServiceAfter": "1s"}}
    kept = {"Name": "kept", "Check": {"TTL": "30s", "Status": "passing",
                                      "DeregisterCriticalServiceAfter": "1s"}}
    assert agent.put("/v1/agent/service/register", doomed).status == 200
    assert agent.put("/v1/agent/service/register", kept).status == 200
    agent.wait_for(lambda: "doomed" not in agent.get("/v1/agent/services").json(), DEADLINE,
                   "critical service reaped")
    agent.wait_for(lambda: agent.get("/v1/catalog/service/doomed").json() == [], DEADLINE,
                   "reaped service gone from the catalog")
    assert "kept" in agent.get("/v1/agent/services").json()  # passing: never reaped
    assert "deregistering service doomed" in agent.log()


def test_script_checks_from_files_need_enable_local_script_checks(tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "job.yaml").write_text(SCRIPT)
    refused = AgentProcess(tmp_path, "-config-dir", str(conf))
    with pytest.raises(RuntimeError) as failed:
        refused.start(timeout=15)
    assert "job.yaml:4" in str(failed.value) and "enable_local_script_checks" in str(failed.value)

    agent = AgentProcess(tmp_path, "-config-dir", str(conf), "-enable-local-script-checks").start()
    try:
        agent.wait_for(lambda: agent.get("/v1/agent/checks").json()["job-script"]["Status"] == "passing",
                       DEADLINE, "script check passing")
        assert "all good" in agent.get("/v1/agent/checks").json()["job-script"]["Output"]
        # local scripts only: the API still refuses them
        body = {"Name": "adhoc", "Args": ["/bin/true"], "Interval": "1s"}
        reply = agent.put("/v1/agent/check/register", body)
        assert reply.status == 400 and "enable_script_checks" in reply.text
    finally:
        agent.stop()


def test_script_checks_from_the_api_need_enable_script_checks(start_agent) -> None:
    body = {"Name": "adhoc", "Args": ["/bin/sh", "-c", "echo hi; exit 1"], "Interval": "1s"}
    plain = start_agent()
    reply = plain.put("/v1/agent/check/register", body)
    assert reply.status == 400 and "enable_script_checks" in reply.text
    assert "adhoc" not in plain.get("/v1/agent/checks").json()
    service = {"Name": "x", "Check": body}
    assert plain.put("/v1/agent/service/register", service).status == 400

    enabled = start_agent("-enable-script-checks")
    assert enabled.put("/v1/agent/check/register", body).status == 200
    enabled.wait_for(lambda: enabled.get("/v1/agent/checks").json()["adhoc"]["Status"] == "warning",
                     DEADLINE, "exit 1 → warning")


def test_ttl_state_survives_a_restart(start_agent, tmp_path: Path) -> None:
    conf = tmp_path / "conf.d"
    conf.mkdir()
    (conf / "api.yaml").write_text(API.replace("ttl: 2s", "ttl: 5m"))
    args = ("-server", "-bootstrap", "-data-dir", str(tmp_path / "data"), "-node", "ttl-node",
            "-bind", "127.0.0.1", "-config-dir", str(conf))
    first = start_agent(*args, dev=False)
    assert first.put("/v1/agent/check/warn/api-ttl?note=remember-me").status == 200
    assert first.stop(kill=True) != 0  # the TTL state is on disk before the write is acknowledged
    again = start_agent(*args, dev=False)
    check = again.get("/v1/agent/checks").json()["api-ttl"]
    assert (check["Status"], check["Output"]) == ("warning", "remember-me")
    history = again.get("/v1/agent/check/history/api-ttl").json()
    assert [(h["New"], h["Reason"]) for h in history] == [("warning", "restored")]
