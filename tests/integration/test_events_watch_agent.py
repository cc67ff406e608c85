"""Integration: user events, the catalog watch stream and `waypost watch` against a real dev agent."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from tests.integration.harness import ROOT, AgentProcess, run_cli


def fire(agent: AgentProcess, name: str, payload: bytes = b"", query: str = "") -> dict:
    reply = agent.request("PUT", f"/v1/event/fire/{name}{query}", raw=payload)
    assert reply.status == 200, reply.text
    return reply.json()  # type: ignore[return-value]


def test_fire_and_list(dev_agent: AgentProcess) -> None:
    event = fire(dev_agent, "deploy", b"v1.2")
    assert event["Name"] == "deploy" and base64.b64decode(event["Payload"]) == b"v1.2"
    assert len(event["ID"]) == 36 and event["Version"] == 1 and event["LTime"] == 0
    assert fire(dev_agent, "empty")["Payload"] is None
    listed = dev_agent.get("/v1/event/list?name=deploy")
    assert listed.status == 200 and int(listed.headers["X-Consul-Index"]) > 1
    events = listed.json()
    assert events[-1]["ID"] == event["ID"] and events[-1]["LTime"] > 0
    assert all(e["Name"] == "deploy" for e in events)
    assert dev_agent.get("/v1/event/list?name=never-fired").headers["X-Consul-Index"] == "1"
    # filters that do not match this agent: answered, but not delivered here
    other = fire(dev_agent, "deploy", query="?node=^not-this-node$")
    assert other["NodeFilter"] == "^not-this-node$"
    assert other["ID"] not in {e["ID"] for e in dev_agent.get("/v1/event/list").json()}
    assert fire(dev_agent, "deploy", query="?node=^itest$")["ID"] in {
        e["ID"] for e in dev_agent.get("/v1/event/list").json()}


def test_fire_bad_input(dev_agent: AgentProcess) -> None:
    assert dev_agent.request("PUT", "/v1/event/fire/_rexec").status == 400
    assert dev_agent.request("PUT", "/v1/event/fire/x?tag=v1").status == 400
    assert dev_agent.request("PUT", "/v1/event/fire/x?node=(").status == 400
    assert dev_agent.request("PUT", "/v1/event/fire/").status == 400
    assert dev_agent.request("PUT", "/v1/event/fire/x", raw=b"x" * 600).status == 413
    assert dev_agent.request("GET", "/v1/event/fire/x").status == 405


def test_list_blocks_until_a_new_event(dev_agent: AgentProcess) -> None:
    index = dev_agent.get("/v1/event/list").headers["X-Consul-Index"]
    started = time.monotonic()
    quick = dev_agent.get("/v1/event/list?index=12345&wait=10s")  # not the current index: no wait
    assert quick.status == 200 and time.monotonic() - started < 2
    timer = threading.Timer(0.3, fire, (dev_agent, "wake-up"))
    timer.start()
    try:
        started = time.monotonic()
        woken = dev_agent.get(f"/v1/event/list?index={index}&wait=10s")
        elapsed = time.monotonic() - started
    finally:
        timer.join()
    assert elapsed < 5, elapsed
    assert woken.headers["X-Consul-Index"] != index and woken.json()[-1]["Name"] == "wake-up"
    started = time.monotonic()
    dev_agent.get(f"/v1/event/list?index={woken.headers['X-Consul-Index']}&wait=200ms")
    assert time.monotonic() - started >= 0.2


def test_event_cli(dev_agent: AgentProcess) -> None:
    out = run_cli("event", "-name", "cli-fired", "payload!", http_port=dev_agent.http_port)
    assert out.returncode == 0, out.stderr
    event_id = out.stdout.strip().removeprefix("Event ID: ")
    listed = dev_agent.get("/v1/event/list?name=cli-fired").json()
    assert listed[-1]["ID"] == event_id and base64.b64decode(listed[-1]["Payload"]) == b"payload!"
    bad = run_cli("event", "-name", "x", "-tag", "v1", http_port=dev_agent.http_port)
    assert bad.returncode == 1 and "service filter" in bad.stderr


def _lines(resp, count: int) -> list[dict]:  # type: ignore[no-untyped-def]
    out: list[dict] = []
    while len(out) < count:
        line = resp.readline()
        assert line, "stream ended"
        if line.strip():
            out.append(json.loads(line))
    return out


def register(agent: AgentProcess, service: str, port: int) -> None:
    reply = agent.put("/v1/catalog/register", {"Node": "ext", "Address": "10.0.0.9",
                                               "Service": {"Service": service, "Port": port}})
    assert reply.status == 200, reply.text


def test_watch_stream_sends_every_change_of_a_service(dev_agent: AgentProcess) -> None:
    register(dev_agent, "streamed", 1)
    start = dev_agent.get("/v1/health/service/streamed").headers["X-Consul-Index"]
    resp = urllib.request.urlopen(f"{dev_agent.base}/v1/watch?service=streamed&index={start}", timeout=10)
    try:
        assert resp.headers["Content-Type"].startswith("application/x-ndjson")
        for port in (2, 3, 4):
            dev_agent.put("/v1/kv/unrelated", raw=b"x")
            register(dev_agent, "unrelated-svc", port)
            register(dev_agent, "streamed", port)
        frames = _lines(resp, 3)
    finally:
        resp.close()
    assert [f["Nodes"][0]["Service"]["Port"] for f in frames] == [2, 3, 4]
    assert all(f["Service"] == "streamed" for f in frames)
    indexes = [f["Index"] for f in frames]
    assert indexes == sorted(indexes) and int(start) < indexes[0]


def test_watch_stream_services_and_catch_up(dev_agent: AgentProcess) -> None:
    register(dev_agent, "catchup", 1)
    resp = urllib.request.urlopen(f"{dev_agent.base}/v1/watch?service=catchup&index=1", timeout=10)
    try:
        assert _lines(resp, 1)[0]["Nodes"][0]["Service"]["Port"] == 1  # the current answer first
    finally:
        resp.close()
    resp = urllib.request.urlopen(f"{dev_agent.base}/v1/watch?services", timeout=10)
    try:
        register(dev_agent, "brand-new", 1)
        assert "brand-new" in _lines(resp, 1)[0]["Services"]
    finally:
        resp.close()


def _watcher(tmp_path: Path, agent: AgentProcess, *args: str) -> tuple[subprocess.Popen, Path]:
    # a short -wait: the agent's shutdown waits for in-flight blocking queries (see the report)
    out = tmp_path / f"handler-{time.monotonic_ns()}.out"
    env = dict(os.environ, PYTHONPATH=str(ROOT), WAYPOST_HTTP_ADDR=f"127.0.0.1:{agent.http_port}")
    proc = subprocess.Popen([sys.executable, "-m", "agent", "watch", "-wait", "1s", *args, f"cat >> {out}"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, out


def _records(path: Path) -> list[object]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=10) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_watch_key_handler_fires_once_per_real_change(dev_agent: AgentProcess, tmp_path: Path) -> None:
    dev_agent.put("/v1/kv/watched/k", raw=b"one")
    proc, out = _watcher(tmp_path, dev_agent, "-type", "key", "-key", "watched/k")
    try:
        dev_agent.wait_for(lambda: len(_records(out)) == 1, what="first handler run")
        dev_agent.put("/v1/kv/watched/other", raw=b"noise")
        dev_agent.put("/v1/kv/watched/k", raw=b"two")
        dev_agent.wait_for(lambda: len(_records(out)) >= 2, what="second handler run")
        dev_agent.request("DELETE", "/v1/kv/watched/k")
        dev_agent.wait_for(lambda: len(_records(out)) >= 3, what="handler run for the delete")
    finally:
        _stop(proc)
    records = _records(out)
    assert [base64.b64decode(r["Value"]) for r in records[:2]] == [b"one", b"two"]  # type: ignore[index]
    assert records[2] is None and len(records) == 3


def test_watch_service_handler_ignores_unrelated_writes(dev_agent: AgentProcess, tmp_path: Path) -> None:
    register(dev_agent, "handled", 1)
    proc, out = _watcher(tmp_path, dev_agent, "-type", "service", "-service", "handled")
    try:
        dev_agent.wait_for(lambda: len(_records(out)) == 1, what="first handler run")
        register(dev_agent, "not-handled", 5)
        register(dev_agent, "handled", 1)  # rewrites the same instance: same answer, no run
        register(dev_agent, "handled", 2)
        dev_agent.wait_for(lambda: len(_records(out)) >= 2, what="second handler run")
    finally:
        _stop(proc)
    records = _records(out)
    assert [r[0]["Service"]["Port"] for r in records] == [1, 2]  # type: ignore[index]


def test_watch_event_handler_gets_only_new_events(dev_agent: AgentProcess, tmp_path: Path) -> None:
    proc, out = _watcher(tmp_path, dev_agent, "-type", "event", "-name", "rollout")
    try:
        fire(dev_agent, "rollout", b"a")
        dev_agent.wait_for(lambda: len(_records(out)) == 1, what="first event")
        fire(dev_agent, "not-rollout", b"x")
        fire(dev_agent, "rollout", b"b")
        dev_agent.wait_for(lambda: len(_records(out)) >= 2, what="second event")
    finally:
        _stop(proc)
    payloads = [[base64.b64decode(e["Payload"]) for e in r] for r in _records(out)]  # type: ignore[union-attr]
    assert payloads == [[b"a"], [b"b"]]


def test_watch_without_handler_prints_once_and_exits(dev_agent: AgentProcess) -> None:
    register(dev_agent, "printed", 1)
    done = run_cli("watch", "-type", "services", http_port=dev_agent.http_port)
    assert done.returncode == 0, done.stderr
    assert "printed" in json.loads(done.stdout)
    bad = run_cli("watch", "-type", "key", http_port=dev_agent.http_port)
    assert bad.returncode == 1 and "-key" in bad.stderr


def test_watch_stream_service_as_server_sent_events(dev_agent: AgentProcess) -> None:
    register(dev_agent, "sse-svc", 1)
    req = urllib.request.Request(f"{dev_agent.base}/v1/watch?service=sse-svc&index=1",
                                 headers={"Accept": "text/event-stream"})
    resp = urllib.request.urlopen(req, timeout=10)
    try:
        lines = [resp.readline().decode().rstrip("\n") for _ in range(3)]
    finally:
        resp.close()
    assert lines[0].startswith("id: ") and lines[1] == "event: service"
    assert json.loads(lines[2].removeprefix("data: "))["Service"] == "sse-svc"
    assert dev_agent.get("/v1/watch?service=").status == 400
