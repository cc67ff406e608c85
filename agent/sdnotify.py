"""systemd's notify protocol, written out (layer 2 adapter: a unix datagram socket, no library).

Contract:
- `Notifier.from_environ(environ, pid)` reads `$NOTIFY_SOCKET` (a path, or `@name` for the
  abstract namespace) and `$WATCHDOG_USEC`/`$WATCHDOG_PID` (sd_watchdog_enabled(3): the watchdog
  is ours when WATCHDOG_PID is unset or equals our pid). Without a socket every call is a no-op.
- `notify(*lines)` sends one datagram `"\\n".join(lines)` (e.g. `notify(READY, status("serving"))`).
  Sending never raises: a failure is logged once and further sends keep trying (systemd may
  come back). `ready()`, `reloading()` (carries `MONOTONIC_USEC=`, required by
  Type=notify-reload), `stopping()` and `status(text)` build the usual messages.
- `watchdog_interval` is half of WATCHDOG_USEC in seconds (None when disabled);
  `run_watchdog(healthy)` is a task that sends `WATCHDOG=1` at that interval from the event loop,
  skipping the ping while `healthy()` is false, so a wedged loop or a dead core task gets the
  service restarted by systemd.
- `clean_environ(environ)` drops the variables so child processes (script checks) do not inherit
  them (sd_notify's `unset_environment`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, MutableMapping

log = logging.getLogger("waypost.sdnotify")

READY = "READY=1"
RELOADING = "RELOADING=1"
STOPPING = "STOPPING=1"
WATCHDOG = "WATCHDOG=1"
ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def status(text: str) -> str:
    return "STATUS=" + text.replace("\n", " ")


def monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def socket_address(value: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` → a sendto() address: a path, or b"\\0name" for `@name`; None if unusable."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and relative paths are not supported


class Notifier:
    def __init__(self, address: str | bytes | None, watchdog_usec: int = 0) -> None:
        self.address = address
        self.watchdog_interval: float | None = watchdog_usec / 2_000_000 if watchdog_usec > 0 else None
        self._sock: socket.socket | None = None
        self._failed = False
        self.ready_sent = False  # READY=1 went out once: a reload may then say READY again

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int | None = None) -> Notifier:
        address = socket_address(environ.get("NOTIFY_SOCKET", ""))
        usec = 0
        watchdog_pid = environ.get("WATCHDOG_PID", "")
        mine = not watchdog_pid or watchdog_pid == str(os.getpid() if pid is None else pid)
        raw = environ.get("WATCHDOG_USEC", "")
        if mine and raw.isdigit():
            usec = int(raw)
        return cls(address, usec if address is not None else 0)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        if self.address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.setblocking(False)
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                log.warning("sd_notify to %r failed: %s", self.address, exc)
            self._failed = True
            return False
        self._failed = False
        return True

    def ready(self, text: str = "") -> bool:
        self.ready_sent = True
        return self.notify(READY, *([status(text)] if text else []))

    def reloading(self, text: str = "reloading") -> bool:
        return self.notify(RELOADING, f"MONOTONIC_USEC={monotonic_usec()}", status(text))

    def stopping(self, text: str = "stopping") -> bool:
        return self.notify(STOPPING, status(text))

    def status(self, text: str) -> bool:
        return self.notify(status(text))

    async def run_watchdog(self, healthy: Callable[[], bool] = lambda: True, *,
                           sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        interval = self.watchdog_interval
        if interval is None:
            return
        while True:
            await sleep(interval)
            if healthy():
                self.notify(WATCHDOG)
            else:
                log.error("watchdog: a core task is not running; not pinging systemd")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def clean_environ(environ: MutableMapping[str, str]) -> None:
    for name in ENV_VARS:
        environ.pop(name, None)
