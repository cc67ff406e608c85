"""TCP and UDP probes (layer 2: asyncio streams / datagram endpoints).

Contract:
- `probe_tcp(address, timeout, use_tls, tls_server_name, tls_skip_verify)`: connect (every
  resolved address, v4 and v6) within `timeout` → passing `TCP connect <addr>: Success`; else
  critical `dial tcp <addr>: <error>`. With `use_tls` the TLS handshake must succeed too.
- `probe_udp(address, timeout, payload)`: Consul's rule — send one datagram; an answer or silence
  until `timeout` → passing `UDP connect <addr>: Success`; a send error or ICMP port unreachable
  (connection refused) → critical.
"""

from __future__ import annotations

import asyncio
import contextlib

from checks.probes.common import client_tls, describe, split_host_port
from checks.result import CheckResult

UDP_PAYLOAD = b"waypost health check"


async def probe_tcp(
    address: str,
    timeout: float,
    use_tls: bool = False,
    tls_server_name: str = "",
    tls_skip_verify: bool = False,
) -> CheckResult:
    try:
        host, port = split_host_port(address)
    except ValueError as exc:
        return CheckResult.critical(f"dial tcp {address}: {exc}")
    tls = client_tls(tls_skip_verify) if use_tls else None
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=(tls_server_name or host) if tls else None
            )
    except (OSError, TimeoutError) as exc:
        return CheckResult.critical(f"dial tcp {address}: {describe(exc)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return CheckResult.passing(f"TCP connect {address}: Success")


class _UDPProbe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.outcome: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: object) -> None:
        if not self.outcome.done():
            self.outcome.set_result(None)

    def error_received(self, exc: Exception) -> None:
        if not self.outcome.done():
            self.outcome.set_result(exc)


async def probe_udp(address: str, timeout: float, payload: bytes = UDP_PAYLOAD) -> CheckResult:
    try:
        host, port = split_host_port(address)
    except ValueError as exc:
        return CheckResult.critical(f"UDP connect {address}: {exc}")
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.create_datagram_endpoint(_UDPProbe, remote_addr=(host, port))
    except OSError as exc:
        return CheckResult.critical(f"UDP connect {address}: {describe(exc)}")
    try:
        transport.sendto(payload)
        try:
            error = await asyncio.wait_for(asyncio.shield(protocol.outcome), timeout)
        except TimeoutError:
            error = None  # silence is success for UDP, as in Consul
    finally:
        transport.close()
    if error is not None:
        return CheckResult.critical(f"UDP connect {address}: {describe(error)}")
    return CheckResult.passing(f"UDP connect {address}: Success")
