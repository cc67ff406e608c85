"""Catalog verbs in /v1/txn (raw HTTP and py-consul) and `waypost queue` against a dev agent."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import consul
import pytest

from tests.integration.harness import ROOT, AgentProcess, run_cli


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_txn_catalog_ops_commit_atomically_with_kv(dev_agent: AgentProcess) -> None:
    ops = [{"Node": {"Verb": "set", "Node": {"Node": "txn-n1", "Address": "10.1.0.1", "Meta": {"r": "a"}}}},
           {"Service": {"Verb": "set", "Node": "txn-n1", "Service": {"ID": "db1", "Service": "txndb", "Port": 5432}}},
           {"Check": {"Verb": "set", "Check": {"Node": "txn-n1", "CheckID": "db-alive", "Name": "db alive",
                                               "Status": "passing", "ServiceID": "db1"}}},
           {"KV": {"Verb": "set", "Key": "txn/cat/a", "Value": _b64("1")}}]
    reply = dev_agent.put("/v1/txn", ops)
    assert reply.status == 200, reply.text
    results = reply.json()["Results"]
    assert results[0]["Node"]["Meta"] == {"r": "a"} and results[1]["Service"]["Port"] == 5432
    assert results[2]["Check"]["ServiceName"] == "txndb" and results[3]["KV"]["Key"] == "txn/cat/a"
    assert dev_agent.get("/v1/catalog/service/txndb").json()[0]["ServiceAddress"] == ""
    assert dev_agent.get("/v1/health/checks/txndb").json()[0]["Status"] == "passing"
    modify = results[1]["Service"]["ModifyIndex"]

    # a stale service cas plus a KV write: 409, Consul's error shape, nothing applied
    bad = [{"KV": {"Verb": "set", "Key": "txn/cat/b", "Value": _b64("2")}},
           {"Service": {"Verb": "cas", "Node": "txn-n1",
                        "Service": {"ID": "db1", "Service": "txndb", "Port": 1, "ModifyIndex": modify + 100}}}]
    reply = dev_agent.put("/v1/txn", bad)
    assert reply.status == 409
    assert reply.json() == {"Results": None, "Errors": [
        {"OpIndex": 1, "What": 'failed to set service "db1" on node "txn-n1", index is stale'}]}
    assert dev_agent.get("/v1/kv/txn/cat/b").status == 404
    assert dev_agent.get("/v1/catalog/service/txndb").json()[0]["ServicePort"] == 5432

    # read-only catalog gets are served like reads
    reply = dev_agent.put("/v1/txn", [{"Node": {"Verb": "get", "Node": {"Node": "txn-n1"}}},
                                      {"Service": {"Verb": "get", "Node": "txn-n1", "Service": {"ID": "db1"}}}])
    assert reply.status == 200 and int(reply.headers["X-Consul-Index"]) > 0
    assert reply.json()["Results"][1]["Service"]["ModifyIndex"] == modify
    # bad input: a Node set without an address is a 400
    assert dev_agent.put("/v1/txn", [{"Node": {"Verb": "set", "Node": {"Node": "x"}}}]).status == 400


def test_py_consul_txn_with_node_and_service_ops(dev_agent: AgentProcess) -> None:
    client = consul.Consul(host="127.0.0.1", port=dev_agent.http_port)
    out = client.txn.put([
        {"Node": {"Verb": "set", "Node": {"Node": "pyc-n", "Address": "10.2.0.1"}}},
        {"Service": {"Verb": "set", "Node": "pyc-n", "Service": {"ID": "c1", "Service": "pyc-cache", "Port": 6379}}},
        {"KV": {"Verb": "set", "Key": "pyc/txn", "Value": _b64("x")}},
    ])
    assert out["Errors"] is None and out["Results"][1]["Service"]["Service"] == "pyc-cache"
    _, nodes = client.catalog.service("pyc-cache")
    assert [n["Node"] for n in nodes] == ["pyc-n"]
    with pytest.raises(consul.ConsulException, match="index is stale"):  # py-consul raises on a 409
        client.txn.put([{"Node": {"Verb": "delete-cas", "Node": {"Node": "pyc-n", "ModifyIndex": 1}}}])
    node_index = client.catalog.node("pyc-n")[1]["Node"]["ModifyIndex"]
    out = client.txn.put([{"Node": {"Verb": "delete-cas", "Node": {"Node": "pyc-n", "ModifyIndex": node_index}}}])
    assert out["Errors"] is None and client.catalog.service("pyc-cache")[1] == []


def _pop(agent: AgentProcess, out: Path, prefix: str, timeout: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), WAYPOST_HTTP_ADDR=f"127.0.0.1:{agent.http_port}")
    script = (f"for i in $(seq 1 100); do {sys.executable} -m agent queue pop -timeout {timeout} {prefix} "
              "|| exit 0; done")
    with open(out, "wb") as handle:
        return subprocess.Popen(["sh", "-c", script], stdout=handle, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)


def test_queue_push_pop_fifo_and_timeout(dev_agent: AgentProcess) -> None:
    port = dev_agent.http_port
    for item in ("first", "second", "third"):
        done = run_cli("queue", "push", "q/fifo", item, http_port=port)
        assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "q/fifo/items/" + "3".rjust(20, "0")
    assert dev_agent.get("/v1/kv/q/fifo/.counter?raw").text == "3"
    popped = [run_cli("queue", "pop", "q/fifo", http_port=port).stdout.strip() for _ in range(3)]
    assert popped == ["first", "second", "third"]
    empty = run_cli("queue", "pop", "-timeout", "300ms", "q/fifo", http_port=port)
    assert empty.returncode == 2 and "No item" in empty.stderr


@pytest.mark.timeout(120)
def test_two_concurrent_consumers_get_disjoint_items(dev_agent: AgentProcess, tmp_path: Path) -> None:
    items = [f"job-{i}" for i in range(10)]
    consumers = [_pop(dev_agent, tmp_path / f"c{i}.out", "q/work", "2s") for i in range(2)]
    for item in items:  # pushed while the consumers are already waiting on the empty queue
        done = run_cli("queue", "push", "q/work", item, http_port=dev_agent.http_port)
        assert done.returncode == 0, done.stderr
    for proc in consumers:
        assert proc.wait(timeout=90) == 0
    got = [(tmp_path / f"c{i}.out").read_text().split() for i in range(2)]
    assert sorted(got[0] + got[1]) == sorted(items)  # every item exactly once
    assert not set(got[0]) & set(got[1])
    assert dev_agent.get("/v1/kv/q/work/items/?keys").status == 404


@pytest.mark.timeout(120)
def test_scheduler_example_runs_each_job_once_on_the_leader(dev_agent: AgentProcess, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    env = dict(os.environ, PYTHONPATH=str(ROOT), WAYPOST_HTTP_ADDR=f"127.0.0.1:{dev_agent.http_port}",
               WAYPOST=f"{sys.executable} -m agent", POP_TIMEOUT="2s")
    logs = [tmp_path / f"s{i}.log" for i in range(2)]
    procs = []
    for log in logs:
        with open(log, "wb") as handle:
            procs.append(subprocess.Popen(["sh", "examples/scheduler/scheduler.sh", "sched"], stdout=handle,
                                          stderr=subprocess.STDOUT, env=env, cwd=ROOT))
    try:
        jobs = [f"echo job{i} $WAYPOST_LEADER_FENCE >> {marks}" for i in range(4)]
        for job in jobs:
            assert run_cli("queue", "push", "sched/jobs", job, http_port=dev_agent.http_port).returncode == 0
        dev_agent.wait_for(lambda: marks.exists() and len(marks.read_text().split("\n")) > 4, timeout=30,
                           what="four jobs run")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            assert proc.wait(timeout=30) == 0
    lines = marks.read_text().split("\n")[:-1]
    assert sorted(line.split()[0] for line in lines) == ["job0", "job1", "job2", "job3"], lines
    assert len({line.split()[1] for line in lines}) == 1  # one leader (one fencing token) ran them all
    assert sum("leader: running jobs" in log.read_text() for log in logs) == 1
