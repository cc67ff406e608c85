"""Check statuses, durations and the one shape of a check definition (layer 0: stdlib only).

Contract:
- `Status` values are Consul's strings: passing, warning, critical.
- `parse_duration("1m30s") -> 90.0` accepts Go duration strings (ns, us, µs, ms, s, m, h, with
  fractions and sums) and bare numbers (seconds when float, nanoseconds when int as Consul's JSON
  decoder treats plain integers); raises `DurationError` otherwise.
- `format_duration(90.0) -> "1m30s"` renders seconds the way Go's time.Duration.String() does.
- `CheckDefinition` is what a service file, `/v1/agent/check/register` or an embedded service check
  decodes into; `kind` tells which probe runs it. Everything is plain data: no I/O here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    PASSING = "passing"
    WARNING = "warning"
    CRITICAL = "critical"


class CheckKind(StrEnum):
    SCRIPT = "script"
    HTTP = "http"
    TCP = "tcp"
    UDP = "udp"
    TTL = "ttl"
    DOCKER = "docker"
    GRPC = "grpc"
    H2PING = "h2ping"
    ALIAS = "alias"
    OS_SERVICE = "os_service"
    NONE = ""  # catalog-only checks (serfHealth, maintenance, catalog/register)


class DurationError(ValueError):
    """A string that is not a Go duration."""


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds from a Go duration string ("10s", "1m30s", "250ms") or a number."""
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}")
    if isinstance(value, int):
        return value / 1e9  # Go's JSON decoder reads a bare integer as nanoseconds
    if isinstance(value, float):
        return value
    if not isinstance(value, str):
        raise DurationError(f"invalid duration {value!r}")
    text = value.strip()
    if text in ("0", ""):
        return 0.0
    sign = 1.0
    if text[0] in "+-":
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    pos = 0
    total = 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            raise DurationError(f"invalid duration {value!r}")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos == 0:
        raise DurationError(f"invalid duration {value!r}")
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's time.Duration.String(): 0s, 1.5s, 250ms, 1m30s, 2h0m0s."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    nanos = round(abs(seconds) * 1e9)
    if nanos < 1_000:
        return f"{sign}{nanos}ns"
    if nanos < 1_000_000:
        return f"{sign}{_trim(nanos / 1e3)}µs"
    if nanos < 1_000_000_000:
        return f"{sign}{_trim(nanos / 1e6)}ms"
    hours, rest = divmod(nanos, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _trim(rest / 1e9)
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def _trim(number: float) -> str:
    text = f"{number:.9f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass(slots=True)
class CheckDefinition:
    """One health check as defined by a user (file, API, or embedded in a service)."""

    check_id: str
    name: str
    kind: CheckKind = CheckKind.NONE
    service_id: str = ""
    notes: str = ""
    status: Status = Status.CRITICAL
    interval: float = 0.0
    timeout: float = 0.0  # 0 means the kind's default (10 s; 30 s for scripts)
    ttl: float = 0.0
    # script
    args: list[str] = field(default_factory=list)
    shell: str = ""
    docker_container_id: str = ""
    # http
    http: str = ""
    method: str = ""
    header: dict[str, list[str]] = field(default_factory=dict)
    body: str = ""
    disable_redirects: bool = False
    tls_server_name: str = ""
    tls_skip_verify: bool = False
    # tcp / udp / grpc / h2ping
    tcp: str = ""
    tcp_use_tls: bool = False
    udp: str = ""
    grpc: str = ""
    grpc_use_tls: bool = False
    h2ping: str = ""
    h2ping_use_tls: bool = True
    # alias / os service
    alias_node: str = ""
    alias_service: str = ""
    os_service: str = ""
    # thresholds and lifecycle
    success_before_passing: int = 0
    failures_before_warning: int = 0
    failures_before_critical: int = 0
    deregister_critical_service_after: float = 0.0
    output_max_size: int = 4096

    def to_api(self) -> dict[str, object]:
        """The `Definition`-style summary Consul shows in check listings."""
        return {
            "Interval": format_duration(self.interval),
            "Timeout": format_duration(self.timeout),
            "DeregisterCriticalServiceAfter": format_duration(self.deregister_critical_service_after),
            "HTTP": self.http,
            "Header": self.header or None,
            "Method": self.method,
            "Body": self.body,
            "TLSServerName": self.tls_server_name,
            "TLSSkipVerify": self.tls_skip_verify,
            "TCP": self.tcp,
            "UDP": self.udp,
            "GRPC": self.grpc,
            "GRPCUseTLS": self.grpc_use_tls,
            "OSService": self.os_service,
        }
