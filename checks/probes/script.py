"""Script and OS-service probes (layer 2: asyncio subprocesses).

Contract:
- `probe_script(args, shell, timeout, output_limit)`: run `args` directly (no shell), or
  `[shell, "-c", " ".join(args)]` when `shell` is set, in a new session (its own process group),
  stdin from /dev/null, stdout+stderr captured into a ring buffer of `output_limit` bytes.
  Exit 0 → passing, 1 → warning, anything else / failure to start → critical. At `timeout` the
  whole process group gets SIGKILL and the result is critical `Timed out (<d>) running check`.
  If the probe is cancelled the process group is killed too: no process outlives its probe.
- `probe_os_service(unit, timeout, systemctl)`: `systemctl is-active -- <unit>`; exit 0 → passing,
  else critical; output `Service "<unit>" is <state>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from checks.definition import format_duration
from checks.probes.common import OutputBuffer
from checks.result import CheckResult

READ_CHUNK = 65536
REAP_GRACE = 1.0  # seconds to wait for a killed group to be reaped


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def _drain(stream: asyncio.StreamReader, buffer: OutputBuffer) -> None:
    while chunk := await stream.read(READ_CHUNK):
        buffer.write(chunk)


async def run_captured(argv: list[str], timeout: float, output_limit: int) -> tuple[int | None, str]:
    """(exit code, output) of `argv` in its own process group; exit code None on timeout."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    buffer = OutputBuffer(output_limit)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(timeout):
            await _drain(proc.stdout, buffer)
            code = await proc.wait()
    except TimeoutError:
        _kill_group(proc.pid)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REAP_GRACE):
                await proc.wait()
        return None, buffer.text()
    finally:
        if proc.returncode is None:  # cancelled: never leave the group behind
            _kill_group(proc.pid)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                async with asyncio.timeout(REAP_GRACE):
                    await proc.wait()
    return code, buffer.text()


async def probe_script(args: list[str], shell: str, timeout: float, output_limit: int) -> CheckResult:
    if not args:
        return CheckResult.critical("no script arguments")
    argv = [shell, "-c", " ".join(args)] if shell else list(args)
    try:
        code, output = await run_captured(argv, timeout, output_limit)
    except OSError as exc:
        return CheckResult.critical(f"Failed to run check {argv[0]}: {exc}")
    if code is None:
        return CheckResult.critical(f"Timed out ({format_duration(timeout)}) running check")
    if code == 0:
        return CheckResult.passing(output)
    if code == 1:
        return CheckResult.warning(output)
    return CheckResult.critical(output)


async def probe_os_service(unit: str, timeout: float, systemctl: str = "systemctl") -> CheckResult:
    if not unit or unit.startswith("-"):
        return CheckResult.critical(f'invalid service name "{unit}"')
    try:
        code, output = await run_captured([systemctl, "is-active", "--", unit], timeout, 256)
    except OSError as exc:
        return CheckResult.critical(f'Service "{unit}": {exc}')
    if code is None:
        return CheckResult.critical(f"Timed out ({format_duration(timeout)}) running check")
    state = output.strip() or "unknown"
    result = CheckResult.passing if code == 0 else CheckResult.critical
    return result(f'Service "{unit}" is {state}')
