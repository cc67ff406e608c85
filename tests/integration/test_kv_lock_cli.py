"""`waypost lock` (lock and semaphore) and `waypost elect` as real processes against a dev agent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.harness import ROOT, AgentProcess


def _spawn(agent: AgentProcess, out: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), WAYPOST_HTTP_ADDR=f"127.0.0.1:{agent.http_port}")
    with open(out, "wb") as handle:
        return subprocess.Popen([sys.executable, "-m", "agent", *args], stdout=handle,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _wait_text(path: Path, text: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        content = path.read_text() if path.exists() else ""
        if text in content:
            return content
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not in {path}:\n{path.read_text() if path.exists() else ''}")


def _concurrency(lines: list[str]) -> int:
    now = peak = 0
    for line in lines:
        now += 1 if line == "in" else -1
        peak = max(peak, now)
    return peak


def test_lock_serialises_processes(dev_agent: AgentProcess, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    child = f"echo in >> {marks}; sleep 0.3; echo out >> {marks}; test -n \"$WAYPOST_LOCK_FENCE\""
    procs = [_spawn(dev_agent, tmp_path / f"lock{i}.out", "lock", "-child-exit-code", "jobs/one", child)
             for i in range(3)]
    codes = [p.wait(timeout=60) for p in procs]
    assert codes == [0, 0, 0], [(tmp_path / f"lock{i}.out").read_text() for i in range(3)]
    lines = marks.read_text().split()
    assert len(lines) == 6 and _concurrency(lines) == 1
    assert "Session" not in dev_agent.get("/v1/kv/jobs/one/.lock").json()[0]  # released
    assert dev_agent.get("/v1/session/list").json() == [] or all(
        s["Name"] != "Consul API Lock" for s in dev_agent.get("/v1/session/list").json())


def test_semaphore_allows_n_holders(dev_agent: AgentProcess, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    child = f"echo in >> {marks}; sleep 0.6; echo out >> {marks}"
    procs = [_spawn(dev_agent, tmp_path / f"sem{i}.out", "lock", "-n", "2", "jobs/pool", child) for i in range(4)]
    codes = [p.wait(timeout=60) for p in procs]
    assert codes == [0, 0, 0, 0], [(tmp_path / f"sem{i}.out").read_text() for i in range(4)]
    lines = marks.read_text().split()
    assert len(lines) == 8 and _concurrency(lines) <= 2
    keys = dev_agent.get("/v1/kv/jobs/pool/?keys").json()
    assert keys == ["jobs/pool/.lock"]  # contender keys are removed on release


def test_elect_hands_over_when_the_leader_leaves(dev_agent: AgentProcess, tmp_path: Path) -> None:
    first = _spawn(dev_agent, tmp_path / "a.out", "elect", "-name", "alpha", "svc/elect")
    try:
        _wait_text(tmp_path / "a.out", "Elected leader: alpha")
        second = _spawn(dev_agent, tmp_path / "b.out", "elect", "-name", "beta", "svc/elect")
        try:
            dev_agent.wait_for(lambda: len(dev_agent.get("/v1/session/list").json()) >= 2, what="two sessions")
            assert "Elected" not in (tmp_path / "b.out").read_text()
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=20) == 0
            _wait_text(tmp_path / "b.out", "Elected leader: beta")
            entry = dev_agent.get("/v1/kv/svc/elect/leader").json()[0]
            assert entry["LockIndex"] == 2
            # the leader loses the key (its session is destroyed): it notices and exits 1
            dev_agent.put(f"/v1/session/destroy/{entry['Session']}")
            assert second.wait(timeout=20) == 1
            assert "Lost leadership" in (tmp_path / "b.out").read_text()
        finally:
            if second.poll() is None:
                second.kill()
    finally:
        if first.poll() is None:
            first.kill()
