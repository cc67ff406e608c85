"""DNS configuration: Consul's `dns_config` keys plus the few agent-level fields DNS needs (layer 0).

Contract:
- `DnsConfig(**section)` accepts the `dns_config` section exactly as Consul spells it (snake_case
  keys, Go duration strings or numbers, `soa` as a dict); unknown keys raise `TypeError` as any
  dataclass does. Agent-level fields (`domain`, `alt_domain`, `recursors`, `datacenter`,
  `node_name`) are passed as keywords by the agent's config loader.
- Every default lives here and nowhere else. Deviations from Consul, on purpose:
  `soa.min_ttl` defaults to 5 s (a non-zero negative-cache TTL, hashicorp/consul#2301) and the TC bit
  is always set when anything is trimmed (`enable_truncate` is accepted and ignored, consul#375).
- After construction the parsed forms are ready: `node_ttl_s`, `service_ttl_for(name)`,
  `recursor_timeout_s`, `soa` (a `SoaConfig`), `recursor_addrs` ((host, port) pairs).
- Bad values raise `DnsConfigError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from checks.definition import DurationError, parse_duration


class DnsConfigError(ValueError):
    """A `dns_config` value that cannot be used."""


@dataclass(frozen=True, slots=True)
class SoaConfig:
    refresh: int = 3600
    retry: int = 600
    expire: int = 86400
    min_ttl: int = 5


@dataclass
class DnsConfig:
    # Consul's dns_config keys (reference §8.10)
    allow_stale: bool = True
    max_stale: str | float = "87600h"
    node_ttl: str | float = "0s"
    service_ttl: dict[str, Any] = field(default_factory=dict)
    enable_truncate: bool = True  # accepted for compatibility; TC is always set when trimmed
    only_passing: bool = False
    recursor_strategy: str = "sequential"
    recursor_timeout: str | float = "2s"
    disable_compression: bool = False
    udp_answer_limit: int = 3
    a_record_limit: int = 0
    enable_additional_node_meta_txt: bool = True
    soa: dict[str, Any] | SoaConfig = field(default_factory=dict)
    use_cache: bool = False
    cache_max_age: str | float = "0s"
    prefer_namespace: bool = False
    # agent-level fields
    domain: str = "consul."
    alt_domain: str = ""
    recursors: list[str] | tuple[str, ...] = ()
    datacenter: str = "dc1"
    node_name: str = ""
    # waypost additions
    max_udp_size: int = 1232  # EDNS ceiling (DNS flag day 2020)
    tcp_idle_timeout: float = 10.0  # seconds a TCP client may stay silent
    max_tcp_clients: int = 256  # concurrent TCP connections
    cache_entries: int = 10_000  # wire answers kept in the hot-path cache
    cache_variants: int = 6  # cached shuffles per answer (rotated per query)

    def __post_init__(self) -> None:
        try:
            self.node_ttl_s = int(parse_duration(self.node_ttl))
            self.max_stale_s = parse_duration(self.max_stale)
            self.recursor_timeout_s = parse_duration(self.recursor_timeout)
            self.cache_max_age_s = parse_duration(self.cache_max_age)
            ttls = {str(k).lower(): int(parse_duration(v)) for k, v in (self.service_ttl or {}).items()}
        except DurationError as exc:
            raise DnsConfigError(str(exc)) from exc
        self._exact_ttl = {k: v for k, v in ttls.items() if not k.endswith("*")}
        self._prefix_ttl = sorted(
            ((k[:-1], v) for k, v in ttls.items() if k.endswith("*")), key=lambda kv: -len(kv[0])
        )
        if not isinstance(self.soa, SoaConfig):
            try:
                self.soa = SoaConfig(**{k: int(v) for k, v in (self.soa or {}).items()})
            except (TypeError, ValueError) as exc:
                raise DnsConfigError(f"dns_config.soa: {exc}") from exc
        if self.recursor_strategy not in ("sequential", "random"):
            raise DnsConfigError(f"bad recursor_strategy {self.recursor_strategy!r}")
        if self.udp_answer_limit < 0 or self.a_record_limit < 0:
            raise DnsConfigError("answer limits must be >= 0")
        if not 512 <= self.max_udp_size <= 65535:
            raise DnsConfigError("max_udp_size must be within 512..65535")
        self.recursors = tuple(self.recursors)
        self.recursor_addrs = tuple(parse_hostport(r) for r in self.recursors)
        if not self.domain.strip("."):
            raise DnsConfigError("domain must not be empty")

    def service_ttl_for(self, service: str) -> int:
        """Exact key first, then the longest `prefix*` key (`*` matches everything), else 0."""
        name = service.lower()
        if name in self._exact_ttl:
            return self._exact_ttl[name]
        for prefix, ttl in self._prefix_ttl:
            if name.startswith(prefix):
                return ttl
        return 0


def parse_hostport(text: str, default_port: int = 53) -> tuple[str, int]:
    """`1.2.3.4`, `1.2.3.4:5353`, `[::1]:53`, `::1` → (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    try:
        number = int(port) if port else default_port
    except ValueError as exc:
        raise DnsConfigError(f"bad recursor address {text!r}") from exc
    if not host or not 0 < number < 65536:
        raise DnsConfigError(f"bad recursor address {text!r}")
    return host, number
