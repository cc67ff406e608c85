"""Running as a service, against real agent processes: sd_notify through a datagram socket the test
owns (incl. a -bootstrap-expect 3 server that is not READY until its peers come), signals
(graceful, forced), metrics after traffic (parsed strictly; JSON over 10 s intervals; gossip
series), log monitor streaming, JSON logs and log-file rotation."""

from __future__ import annotations

import itertools
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dnslib import DNSRecord

from tests.integration.harness import ROOT, AgentProcess
from tests.integration.test_raft_cluster import free_port, server_args, wait_leader
from tests.promtext import parse, value


class NotifySocket:
    """What systemd would see: datagrams on $NOTIFY_SOCKET, with the sender's pid (SO_PASSCRED)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.path = path
        self.messages: list[tuple[float, int, str]] = []  # (arrival, pid, text)

    def read(self, timeout: float) -> tuple[float, int, str] | None:
        self.sock.settimeout(timeout)
        try:
            data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except TimeoutError:
            return None
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        message = (time.monotonic(), pid, data.decode())
        self.messages.append(message)
        return message

    def wait_for(self, prefix: str, timeout: float = 10.0) -> tuple[float, int, str]:
        deadline = time.monotonic() + timeout
        for message in self.messages:
            if message[2].startswith(prefix):
                self.messages.remove(message)
                return message
        while time.monotonic() < deadline:
            message = self.read(deadline - time.monotonic())
            if message is not None and message[2].startswith(prefix):
                self.messages.remove(message)
                return message
        raise AssertionError(f"no {prefix!r} message; got {[m[2] for m in self.messages]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    sock = NotifySocket(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock.path))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a WATCHDOG=1 every 0.2 s
    yield sock
    sock.close()


def accepts(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_dev_agent_notifies_ready_watchdog_reload_stopping(start_agent, notify: NotifySocket) -> None:
    agent = start_agent()
    assert notify.wait_for("STATUS=starting")[1] == agent.proc.pid
    _, pid, ready = notify.wait_for("READY=1")
    assert pid == agent.proc.pid and "STATUS=serving" in ready and "leader" in ready
    assert accepts(agent.http_port) and accepts(agent.dns_port)  # TCP DNS and HTTP both up by READY

    pings = [notify.wait_for("WATCHDOG=1", 3)[0] for _ in range(5)]
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert all(0.1 < gap < 0.45 for gap in gaps), gaps  # WATCHDOG_USEC / 2 = 0.2 s

    agent.signal(signal.SIGHUP)
    reloading = notify.wait_for("RELOADING=1")[2].split("\n")
    assert reloading[1].startswith("MONOTONIC_USEC=") and int(reloading[1].split("=")[1]) > 0
    assert notify.wait_for("READY=1")[2] == "READY=1\nSTATUS=serving"

    agent.signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    assert agent.proc.wait(15) == 0


def test_bootstrap_server_notifies_ready(start_agent, notify: NotifySocket, tmp_path: Path) -> None:
    agent = start_agent("-server", "-bootstrap", "-data-dir", str(tmp_path / "data"), "-node", "s1", dev=False)
    _, _, ready = notify.wait_for("READY=1")
    assert "bootstrap server, leader" in ready
    assert accepts(agent.http_port) and accepts(agent.dns_port)


def test_client_agent_notifies_ready_after_joining(start_agent, notify: NotifySocket, tmp_path: Path) -> None:
    server = start_agent("-node", "srv")
    while notify.read(0.2) is not None:  # the server's own notifications
        pass
    notify.messages.clear()
    client = start_agent("-node", "cli", "-data-dir", str(tmp_path / "client"), "-join", server.serf_addr, dev=False)
    _, pid, ready = notify.wait_for("READY=1")
    assert pid == client.proc.pid and "client, 1 known server" in ready, ready
    assert accepts(client.http_port) and accepts(client.dns_port)
    client.stop(kill=True)  # (a client leaves on SIGTERM: seconds this test does not need)


def test_client_without_servers_is_ready_and_says_it_waits_for_servers(
        start_agent, notify: NotifySocket, tmp_path: Path) -> None:
    server_serf = free_port()  # no server there yet: -retry-join keeps trying
    client = start_agent("-node", "cli", "-data-dir", str(tmp_path / "client"), "-retry-join",
                         f"127.0.0.1:{server_serf}", "-retry-interval", "200ms", dev=False)
    _, pid, ready = notify.wait_for("READY=1")
    assert pid == client.proc.pid and "client, 0 known servers" in ready, ready
    notify.wait_for("STATUS=waiting for servers")
    start_agent("-node", "srv", "-serf-lan-port", str(server_serf))
    _, _, status = notify.wait_for("STATUS=serving", timeout=15)
    assert "client, 1 known server" in status, status
    client.stop(kill=True)  # (a client leaves on SIGTERM: seconds this test does not need)


def test_client_that_cannot_join_exits_and_is_never_ready(notify: NotifySocket, tmp_path: Path) -> None:
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))  # a port nobody listens on
    port = dead.getsockname()[1]
    dead.close()
    agent = AgentProcess(tmp_path, "-data-dir", str(tmp_path / "data"), "-join", f"127.0.0.1:{port}", dev=False)
    with pytest.raises(RuntimeError, match="exited with 1"):
        agent.start()
    assert "Failed to join" in agent.log()
    while notify.read(0.2) is not None:
        pass
    assert not any(m[2].startswith("READY=1") for m in notify.messages), notify.messages


def test_expecting_server_reports_waiting_and_is_ready_once_its_peers_come(
        notify: NotifySocket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports, serf_ports = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    agents = [AgentProcess(tmp_path, *server_args(tmp_path, 0, ports, serf_ports), dev=False)]
    try:
        agents[0].start()  # alone, with the test's NOTIFY_SOCKET; the other two never get it
        monkeypatch.delenv("NOTIFY_SOCKET")
        monkeypatch.delenv("WATCHDOG_USEC")
        _, pid, _ = notify.wait_for("STATUS=waiting for 2 more servers")
        assert pid == agents[0].proc.pid
        assert accepts(agents[0].http_port)  # it serves, but is not ready: no leader
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            notify.read(deadline - time.monotonic())
        assert not any(m[2].startswith("READY=1") for m in notify.messages), notify.messages
        for i in (1, 2):
            agents.append(AgentProcess(tmp_path, *server_args(tmp_path, i, ports, serf_ports), dev=False).start())
        _, pid, ready = notify.wait_for("READY=1", timeout=30)
        assert pid == agents[0].proc.pid and "; server, leader" in ready, ready
        assert wait_leader(agents)
    finally:
        for agent in agents:
            agent.stop(kill=True)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "signals.hcl"
    path.write_text(text)
    return str(path)


def test_sigterm_leaves_gracefully_when_configured(start_agent, tmp_path: Path) -> None:
    conf = write_config(tmp_path, 'leave_on_terminate = true\nperformance { leave_drain_time = "300ms" }\n')
    agent = start_agent("-config-file", conf)
    agent.signal(signal.SIGTERM)
    assert agent.proc.wait(15) == 0
    log = agent.log()
    assert "Gracefully shutting down agent..." in log and "Graceful exit completed" in log


def test_sigint_on_a_server_stops_without_leave(start_agent) -> None:
    agent = start_agent()
    agent.signal(signal.SIGINT)
    assert agent.proc.wait(15) == 0
    assert "Graceful shutdown disabled. Exiting" in agent.log()


def test_second_sigint_forces_exit(start_agent, tmp_path: Path) -> None:
    conf = write_config(tmp_path, 'skip_leave_on_interrupt = false\nperformance { leave_drain_time = "60s" }\n')
    pid_file = tmp_path / "agent.pid"
    agent = start_agent("-config-file", conf, "-pid-file", str(pid_file))
    agent.signal(signal.SIGINT)
    agent.wait_for(lambda: "Gracefully shutting down agent..." in agent.log(), what="graceful leave start")
    started = time.monotonic()
    agent.signal(signal.SIGINT)
    assert agent.proc.wait(10) == 1
    assert time.monotonic() - started < 5
    assert "Caught second signal SIGINT. Exiting" in agent.log()
    assert not pid_file.exists()


def dns_query(port: int, name: str, tcp: bool = False) -> None:
    packet = DNSRecord.question(name).pack()
    if tcp:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(struct.pack("!H", len(packet)) + packet)
            assert conn.recv(2)
        return
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        udp.sendto(packet, ("127.0.0.1", port))
        assert udp.recv(4096)


def test_metrics_after_traffic(dev_agent: AgentProcess) -> None:
    agent = dev_agent
    for i in range(3):
        assert agent.put("/v1/agent/service/register", {"Name": f"m{i}", "Port": 80 + i,
                                                        "Check": {"TTL": "30s"}}).status == 200
    agent.put(f"/v1/agent/check/pass/service:{'m0'}")
    for _ in range(4):
        agent.get("/v1/catalog/service/m1")
    agent.get("/v1/catalog/service/nope/extra")
    for _ in range(5):
        dns_query(agent.dns_port, "m0.service.consul")  # passing: the repeats are cache hits
    dns_query(agent.dns_port, "m2.service.consul", tcp=True)

    reply = agent.get("/v1/agent/metrics?format=prometheus")
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = parse(reply.text)
    assert value(families, "consul_api_http_count", method="PUT", path="/v1/agent/service/register",
                 code="200") >= 3
    assert value(families, "consul_api_http_count", path="unmatched", code="404") >= 1
    assert value(families, "consul_api_http_count", path="/v1/catalog/service/{name}") + \
        value(families, "consul_api_http_fast_path") >= 4
    assert value(families, "consul_raft_apply") >= 3
    assert value(families, "consul_raft_commitTime_count") >= 1
    assert value(families, "consul_raft_state_leader") == 1
    assert value(families, "consul_state_nodes") == 1
    assert value(families, "consul_state_services") >= 4  # consul + m0..m2
    assert value(families, "consul_state_service_instances") >= 4
    assert value(families, "consul_agent_checks", status="passing") >= 1
    assert value(families, "consul_agent_checks", status="critical") >= 2
    assert value(families, "consul_dns_queries", transport="udp") >= 5
    assert value(families, "consul_dns_queries", transport="tcp") >= 1
    assert value(families, "consul_dns_cache_hits") >= 1
    assert value(families, "consul_dns_query_time_count") >= 1
    assert value(families, "consul_runtime_rss_bytes") > 10_000_000
    assert value(families, "consul_runtime_open_fds") > 3
    agent.wait_for(lambda: "consul_runtime_event_loop_lag_count" in agent.get(
        "/v1/agent/metrics?format=prometheus").text, what="a loop-lag sample")

    body = agent.get("/v1/agent/metrics").json()
    assert set(body) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    assert body["Timestamp"].endswith("0 +0000 UTC")  # a 10 s interval's start
    assert any(g["Name"] == "consul.state.nodes" and g["Value"] == 1 for g in body["Gauges"])
    # the JSON shows the last completed 10 s interval: it holds requests once one with traffic completed
    agent.wait_for(lambda: any(s["Name"] == "consul.api.http" for s in agent.get(
        "/v1/agent/metrics").json()["Samples"]), timeout=15, what="an interval with HTTP requests")


def test_prometheus_client_parses_a_live_scrape(dev_agent: AgentProcess) -> None:
    parser = pytest.importorskip("prometheus_client.parser")
    assert dev_agent.get("/v1/agent/metrics").status == 200  # an HTTP request to see (run alone too)
    families = {f.name: f for f in parser.text_string_to_metric_families(
        dev_agent.get("/v1/agent/metrics?format=prometheus").text)}
    assert families["consul_state_nodes"].samples[0].value == 1
    assert families["consul_api_http"].type == "summary"
    members = {s.labels["status"]: s.value for s in families["consul_serf_members"].samples}
    assert members == {"alive": 1, "failed": 0, "left": 0}
    assert families["consul_memberlist_probes"].type == "counter"  # alone: no one to probe yet
    for name in ("consul_memberlist_msg_suspect", "consul_memberlist_refutes",
                 "consul_memberlist_unauthenticated", "consul_memberlist_malformed"):
        assert families[name].samples[0].value == 0, name
    assert families["consul_memberlist_health_score"].samples[0].value == 0


def open_monitor(agent: AgentProcess, query: str):
    return urllib.request.urlopen(f"{agent.base}/v1/agent/monitor?{query}", timeout=10)


def read_until(stream, needle: str, limit: int = 200) -> str:
    for _ in range(limit):
        line = stream.readline().decode()
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not streamed")


def test_monitor_streams_log_lines_at_its_own_level(dev_agent: AgentProcess) -> None:
    assert dev_agent.get("/v1/agent/monitor?loglevel=loud").status == 400
    with open_monitor(dev_agent, "loglevel=trace&logjson=true") as stream:
        assert stream.headers["Content-Type"].startswith("text/plain")
        dev_agent.put("/v1/agent/reload")
        line = json.loads(read_until(stream, "reload complete"))
        assert line["@level"] == "info" and line["@module"] == "agent"
    with open_monitor(dev_agent, "loglevel=info") as stream:
        dev_agent.put("/v1/agent/reload")
        assert "[INFO]  agent: reload complete" in read_until(stream, "reload complete")


def test_waypost_monitor_command(dev_agent: AgentProcess) -> None:
    env = {"PYTHONPATH": str(ROOT), "WAYPOST_HTTP_ADDR": f"127.0.0.1:{dev_agent.http_port}", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen([sys.executable, "-m", "agent", "monitor", "-log-level", "debug"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 10
        seen = b""
        while time.monotonic() < deadline and b"reload complete" not in seen:
            dev_agent.put("/v1/agent/reload", timeout=5)  # until the monitor is attached, nobody hears it
            while b"reload complete" not in seen and select.select([proc.stdout], [], [], 0.3)[0]:
                chunk = os.read(proc.stdout.fileno(), 65536)  # type: ignore[union-attr]  # never blocks here
                if not chunk:
                    break
                seen += chunk
        assert b"reload complete" in seen, f"waypost monitor printed no reload line: {seen[-500:]!r}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_json_logs_and_rotation(start_agent, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    agent = start_agent("-log-json", "-log-level", "info", "-log-file", f"{logs}/",
                        "-log-rotate-bytes", "1500", "-log-rotate-max-files", "2")
    tail = agent.log().split("==> Log data will now stream in as it occurs:")[1].strip().splitlines()
    assert tail and all(json.loads(line)["@level"] for line in tail)
    for _ in range(40):  # each reload logs a line of ~110 bytes
        assert agent.put("/v1/agent/reload").status == 200
    current = logs / "waypost.log"
    archives = sorted(logs.glob("waypost-*.log"))
    assert current.exists() and len(archives) == 2, sorted(p.name for p in logs.iterdir())
    assert all(p.stat().st_size < 1500 + 400 for p in archives)
    assert json.loads(current.read_text().splitlines()[-1])["@message"].startswith("reload complete")
