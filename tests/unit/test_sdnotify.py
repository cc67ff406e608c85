"""sd_notify: addresses, environment, datagrams to a socket the test binds, watchdog pacing."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

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
