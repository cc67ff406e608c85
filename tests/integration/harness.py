"""Real `waypost agent` processes on loopback for integration tests.

Each agent listens on ephemeral ports (`-http-port 0 -dns-port 0 -server-port 0 -serf-lan-port 0`,
unless the test passes its own); the harness learns them from the startup banner, which it reads
from a log file with a deadline (no sleeps to "let it start").
Agents are stopped by the PID the harness started, never by name.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BANNER = re.compile(r"Client Addr: \[(?P<addr>[^\]]+)\] \(HTTP: (?P<http>-?\d+), DNS: (?P<dns>-?\d+)\)\n"
                    r"\s*Cluster Addr: (?P<cluster>\S+) \(LAN: (?P<lan>-?\d+), WAN: -?\d+"
                    r"(?:, Server: (?P<server>\d+))?\)")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


class AgentProcess:
    def __init__(self, workdir: Path, *args: str, dev: bool = True) -> None:
        self.workdir = workdir
        self.args = ((["-dev"] if dev else []) + ["-http-port", "0", "-dns-port", "0", "-server-port", "0",
                                                  "-serf-lan-port", "0", *args])
        self.log_path = workdir / f"agent-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen | None = None
        self.http_port = 0
        self.dns_port = 0
        self.serf_port = 0    # gossip (LAN) port: what other agents -join / -retry-join
        self.server_port = 0  # servers only
        self.host = "127.0.0.1"  # the client address HTTP and DNS listen on
        self.cluster_addr = "127.0.0.1"
        self.startup_seconds = 0.0

    def start(self, timeout: float = 20.0) -> AgentProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "agent", "agent", *self.args],
                                         stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        deadline = started + timeout
        while time.monotonic() < deadline:
            match = BANNER.search(self.log_path.read_text(errors="replace"))
            if match:
                self.http_port, self.dns_port = int(match["http"]), int(match["dns"])
                self.serf_port, self.server_port = int(match["lan"]), int(match["server"] or 0)
                self.host = "127.0.0.1" if match["addr"] in ("0.0.0.0", "::") else match["addr"]
                self.cluster_addr = match["cluster"]
                self.startup_seconds = time.monotonic() - started
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"agent not ready after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def base(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def serf_addr(self) -> str:
        return f"{self.cluster_addr}:{self.serf_port}"

    def request(self, method: str, path: str, body: object = None, *, raw: bytes | None = None,
                timeout: float = 30.0) -> Reply:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return Reply(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Reply(err.code, dict(err.headers), err.read())

    def get(self, path: str, **kw) -> Reply:
        return self.request("GET", path, **kw)

    def put(self, path: str, body: object = None, **kw) -> Reply:
        return self.request("PUT", path, body, **kw)

    def wait_for(self, predicate, timeout: float = 10.0, what: str = "condition"):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}\n{self.log()[-3000:]}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, *, kill: bool = False) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=5)


def run_cli(*args: str, http_port: int | None = None, timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if http_port is not None:
        env["WAYPOST_HTTP_ADDR"] = f"127.0.0.1:{http_port}"
    return subprocess.run([sys.executable, "-m", "agent", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=ROOT)
