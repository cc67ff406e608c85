"""Helpers shared by the probes (layer 2).

Contract: `split_host_port("h:1")`, `("[::1]:53")` → (host, port), raising `ValueError`;
`OutputBuffer` keeps the last `limit` bytes written (Consul's circbuf) and renders Consul's
`Captured N of M bytes\\n...\\n<tail>` when it overflowed; `describe(exc)` gives a short error
text (errno strerror when there is one).
"""

from __future__ import annotations

import ssl


def split_host_port(address: str) -> tuple[str, int]:
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"address {address}: missing port in address")
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise ValueError(f"address {address}: missing port in address")
        if ":" in host:
            raise ValueError(f"address {address}: too many colons in address")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"address {address}: invalid port")
    return host, int(port_text)


def describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    if isinstance(exc, TimeoutError):
        return "i/o timeout"
    return str(exc) or type(exc).__name__


def client_tls(skip_verify: bool, alpn: list[str] | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class OutputBuffer:
    """A ring buffer of the last `limit` bytes, counting everything written."""

    def __init__(self, limit: int):
        self.limit = max(limit, 0)
        self.total = 0
        self._data = bytearray()

    def write(self, chunk: bytes) -> None:
        self.total += len(chunk)
        self._data += chunk
        if len(self._data) > self.limit:
            del self._data[: len(self._data) - self.limit]

    def text(self) -> str:
        body = self._data.decode("utf-8", errors="replace")
        if self.total > self.limit:
            return f"Captured {len(self._data)} of {self.total} bytes\n...\n{body}"
        return body
