"""sd_notify: addresses, environment, datagrams to a socket the test binds, watchdog pacing; the
readiness rules and STATUS/READY sequence of agent.lifecycle against fake agents and a fake clock."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.lifecycle import Readiness, announce_ready
from agent.sdnotify import Notifier, clean_environ, socket_address


@pytest.fixture
def listener(tmp_path: Path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(2)
    yield str(path), sock
    sock.close()


def test_socket_address_forms() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abstract") == b"\0abstract"
    assert socket_address("relative/path") is None
    assert socket_address("") is None


def test_environment_decides_watchdog() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "2000000"}
    assert Notifier.from_environ(env, pid=42).watchdog_interval == 1.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "42"}, pid=42).watchdog_interval == 1.0
    assert Notifier.from_environ({**env, "WATCHDOG_PID": "43"}, pid=42).watchdog_interval is None
    assert Notifier.from_environ({"WATCHDOG_USEC": "2000000"}, pid=42).watchdog_interval is None
    disabled = Notifier.from_environ({}, pid=42)
    assert not disabled.enabled and disabled.ready() is False


def test_messages_arrive_as_datagrams(listener) -> None:
    path, sock = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path})
    assert notifier.ready("serving")
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    notifier.reloading()
    lines = sock.recv(4096).decode().split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) > 0
    notifier.stopping()
    assert sock.recv(4096).startswith(b"STOPPING=1")
    notifier.status("two\nlines")
    assert sock.recv(4096) == b"STATUS=two lines"
    notifier.close()


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"waypost-test-{os.getpid()}-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        Notifier.from_environ({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(100) == b"READY=1"


def test_send_failure_never_raises(tmp_path: Path) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": str(tmp_path / "missing.sock")})
    assert notifier.ready() is False
    assert notifier.ready() is False


async def test_watchdog_pings_at_half_interval_only_when_healthy(listener) -> None:
    path, sock = listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000"})
    slept: list[float] = []
    health = iter([True, False, True])

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) > 3:
            raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await notifier.run_watchdog(lambda: next(health), sleep=fake_sleep)
    assert slept == [1.5] * 4
    sock.setblocking(False)
    got = []
    while True:
        try:
            got.append(sock.recv(100))
        except BlockingIOError:
            break
    assert got == [b"WATCHDOG=1", b"WATCHDOG=1"]  # the unhealthy round sent nothing


def test_clean_environ() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "2", "PATH": "/bin"}
    clean_environ(env)
    assert env == {"PATH": "/bin"}


# --- readiness (agent.lifecycle): what a started agent waits for before READY=1 ---
class FakeRaft:
    def __init__(self) -> None:
        self.leader = ""
        self.applied = 0
        self.commit = 0
        self.fresh = True

    def applied_index(self) -> int:
        return self.applied

    def commit_index(self) -> int:
        return self.commit

    def is_fresh(self) -> bool:
        return self.fresh


class FakeServer:
    def __init__(self, expect: int) -> None:
        self.raft = FakeRaft()
        self.cluster = SimpleNamespace(settings=SimpleNamespace(server_id="s1", expect=expect),
                                       transport=SimpleNamespace(addresses={}))

    def known_leader(self) -> bool:
        return bool(self.raft.leader)


class FakeNotifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def status(self, text: str) -> bool:
        self.sent.append("STATUS=" + text)
        return True

    def ready(self, text: str = "") -> bool:
        self.sent.append("READY=1 " + text)
        return True


def fake_agent(server: FakeServer | None, servers: list[str] | None = None) -> SimpleNamespace:
    known = servers if servers is not None else []
    return SimpleNamespace(server=server, stopped=asyncio.Event(),
                           membership=SimpleNamespace(servers=lambda: list(known)),
                           ready_status=lambda: f"serving; {len(known)} known")


def test_server_waits_for_the_expected_servers_then_a_leader_then_catching_up() -> None:
    server = FakeServer(expect=3)
    readiness = Readiness(fake_agent(server))  # type: ignore[arg-type]
    assert readiness.waiting() == "waiting for 2 more servers"
    server.cluster.transport.addresses["s2"] = "127.0.0.1:2"
    assert readiness.waiting() == "waiting for 1 more server"
    server.cluster.transport.addresses["s3"] = "127.0.0.1:3"
    assert readiness.waiting() == "electing a leader among 3 servers"
    server.raft.fresh = False
    assert readiness.waiting() == "waiting for a leader"  # a restarted server: no formation to wait for
    server.raft.leader, server.raft.applied, server.raft.commit = "s2", 10, 50
    assert readiness.waiting() == "catching up 10/50"
    server.raft.applied, server.raft.commit = 50, 53  # reached what was committed at the last check
    assert readiness.waiting() == ""


def test_single_server_and_client_are_ready_at_once() -> None:
    server = FakeServer(expect=0)
    server.cluster.transport = None
    server.raft.leader, server.raft.applied, server.raft.commit = "s1", 3, 3
    assert Readiness(fake_agent(server)).waiting() == ""  # type: ignore[arg-type]
    assert Readiness(fake_agent(None)).waiting() == ""  # type: ignore[arg-type]


async def run_announce(agent: SimpleNamespace, script: dict[int, Callable[[], None]]) -> FakeNotifier:
    notifier = FakeNotifier()
    clock = [0.0]
    steps = [0]

    async def sleep(seconds: float) -> None:
        clock[0] += seconds
        steps[0] += 1
        if steps[0] in script:
            script[steps[0]]()
        if steps[0] > 200:
            raise AssertionError("never ready")

    await announce_ready(agent, notifier, poll=0.1, status_every=1.0,  # type: ignore[arg-type]
                         clock=lambda: clock[0], sleep=sleep)
    return notifier


async def test_announce_sends_status_lines_then_ready() -> None:
    server = FakeServer(expect=3)
    addresses = server.cluster.transport.addresses

    def leader() -> None:
        server.raft.leader = "s1"

    script = {3: lambda: addresses.update(s2="a"),           # 0.3 s: rate-limited, shown at 1.0 s
              15: lambda: addresses.update(s3="b"), 30: leader}
    notifier = await run_announce(fake_agent(server), script)
    assert notifier.sent == ["STATUS=waiting for 2 more servers", "STATUS=waiting for 1 more server",
                             "STATUS=electing a leader among 3 servers", "READY=1 serving; 0 known"]


async def test_announce_client_without_servers_then_with_one() -> None:
    known: list[str] = []
    agent = fake_agent(None, known)
    notifier = await run_announce(agent, {2: lambda: known.append("s1")})
    assert notifier.sent == ["READY=1 serving; 0 known", "STATUS=waiting for servers", "STATUS=serving; 1 known"]


async def test_announce_says_nothing_once_stopping() -> None:
    server = FakeServer(expect=3)
    agent = fake_agent(server)

    def stop() -> None:
        agent.stopped.set()
        server.raft.leader = "s1"

    notifier = await run_announce(agent, {1: stop})
    assert notifier.sent == ["STATUS=waiting for 2 more servers"]
