"""The agent configuration: every setting and its default, in one place (layer 0-ish: stdlib only).

Contract:
- `AgentConfig` and its sections are plain dataclasses; a field's default IS the default (reference
  §9.1, §9.2, §8.10). Durations are float seconds (field metadata `duration`), sizes are bytes.
- Config keys are the field names (Consul's snake_case); `metadata` carries value rules (`min`,
  `max`, `choices`) read by agent.config_schema, and `internal` marks fields no file may set.
- `DEV_OVERRIDES` is what `-dev` changes (applied after defaults, before files and flags).
- `leave_on_terminate` / `skip_leave_on_interrupt` are None until resolved by role (Consul: clients
  leave on terminate, servers skip leave on interrupt); after loading they are always bools.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any

from agent.types import ServiceDefinition
from checks.definition import CheckDefinition

MiB = 1024 * 1024
PORT_RULE = {"min": -1, "max": 65535}


def dur(default: float, **rules: Any) -> Any:
    return field(default=default, metadata={"duration": True, **rules})


def rule(default: Any, **rules: Any) -> Any:
    return field(default=default, metadata=rules)


@dataclass(slots=True)
class Ports:
    dns: int = rule(8600, **PORT_RULE)
    http: int = rule(8500, **PORT_RULE)
    https: int = rule(-1, **PORT_RULE)  # not served by waypost (no TLS listener yet)
    grpc: int = rule(-1, **PORT_RULE)  # not served by waypost
    serf_lan: int = rule(8301, **PORT_RULE)
    serf_wan: int = rule(8302, **PORT_RULE)
    server: int = rule(8300, **PORT_RULE)


@dataclass(slots=True)
class Addresses:
    """Per-listener bind overrides of client_addr ("" = use client_addr)."""

    dns: str = ""
    http: str = ""


@dataclass(slots=True)
class SOAConfig:
    expire: int = rule(86400, min=0)
    min_ttl: int = rule(5, min=0)  # a non-zero negative TTL (Consul: 0) so resolvers cache NXDOMAIN briefly
    refresh: int = rule(3600, min=0)
    retry: int = rule(600, min=0)


@dataclass(slots=True)
class DNSConfig:
    allow_stale: bool = True
    max_stale: float = dur(87600 * 3600.0)
    node_ttl: float = dur(0.0)
    service_ttl: dict[str, float] = field(default_factory=dict, metadata={"duration": True})  # "*" wildcards
    udp_answer_limit: int = rule(3, min=1)
    a_record_limit: int = rule(0, min=0)  # 0 = no limit
    enable_truncate: bool = False
    only_passing: bool = False
    recursor_strategy: str = rule("sequential", choices=("sequential", "random"))
    recursor_timeout: float = dur(2.0)
    disable_compression: bool = False
    enable_additional_node_meta_txt: bool = True
    soa: SOAConfig = field(default_factory=SOAConfig)
    use_cache: bool = False
    cache_max_age: float = dur(0.0)


@dataclass(slots=True)
class Performance:
    raft_multiplier: int = rule(5, min=1, max=10)
    leave_drain_time: float = dur(5.0)
    rpc_hold_timeout: float = dur(7.0)


@dataclass(slots=True)
class HTTPConfig:
    # waypost's own: requests with a larger body get 413 (Consul caps KV values and txns in `limits`)
    max_request_body_bytes: int = rule(1 * MiB, min=1024)
    response_headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Limits:
    http_max_conns_per_client: int = rule(200, min=0)
    kv_max_value_size: int = rule(512 * 1024, min=1)
    txn_max_req_len: int = rule(512 * 1024, min=1)


@dataclass(slots=True)
class GossipConfig:
    """SWIM timing (memberlist's DefaultLANConfig)."""

    gossip_nodes: int = rule(3, min=1)
    gossip_interval: float = dur(0.2)
    probe_interval: float = dur(1.0)
    probe_timeout: float = dur(0.5)
    retransmit_mult: int = rule(4, min=1)
    suspicion_mult: int = rule(4, min=1)


@dataclass(slots=True)
class UIConfig:
    enabled: bool = False


def _hostname() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


@dataclass(slots=True)
class AgentConfig:
    datacenter: str = "dc1"
    node_name: str = field(default_factory=_hostname)
    data_dir: str | None = None  # None = in memory (required unless -dev)
    client_addr: str = "127.0.0.1"
    bind_addr: str = "0.0.0.0"
    advertise_addr: str = ""  # "" = the bind address
    ports: Ports = field(default_factory=Ports)
    addresses: Addresses = field(default_factory=Addresses)
    domain: str = "consul."
    alt_domain: str = ""
    server: bool = False
    bootstrap: bool = False
    bootstrap_expect: int = rule(0, min=0)
    retry_join: list[str] = field(default_factory=list)
    start_join: list[str] = field(default_factory=list)
    retry_interval: float = dur(30.0)
    retry_max: int = rule(0, min=0)  # 0 = forever
    log_level: str = rule("INFO", choices=("TRACE", "DEBUG", "INFO", "WARN", "ERROR"))
    log_json: bool = False
    log_file: str = ""  # "" = no log file; a directory (or a path ending in /) gets waypost.log in it
    log_rotate_bytes: int = rule(0, min=0)  # 0 = no size limit
    log_rotate_duration: float = dur(24 * 3600.0)  # 0 = no time limit
    log_rotate_max_files: int = rule(0, min=-1)  # archives kept: 0 = all, -1 = none
    pid_file: str = ""
    ui_config: UIConfig = field(default_factory=UIConfig)
    enable_script_checks: bool = False
    enable_local_script_checks: bool = False
    encrypt: str = ""  # base64 AES key (16, 24 or 32 bytes) for gossip; "" = no encryption
    encrypt_verify_incoming: bool = True  # False: also accept plaintext gossip (during a rollout)
    encrypt_verify_outgoing: bool = True  # False: send plaintext gossip (during a rollout)
    disable_keyring_file: bool = False  # True: keys live only in memory, not in data_dir/serf/local.keyring
    rejoin_after_leave: bool = False  # True: a restarted agent rejoins even after a graceful leave
    node_meta: dict[str, str] = field(default_factory=dict)
    recursors: list[str] = field(default_factory=list)
    dns_config: DNSConfig = field(default_factory=DNSConfig)
    performance: Performance = field(default_factory=Performance)
    http_config: HTTPConfig = field(default_factory=HTTPConfig)
    limits: Limits = field(default_factory=Limits)
    gossip_lan: GossipConfig = field(default_factory=GossipConfig)
    check_output_max_size: int = rule(4096, min=1)
    check_update_interval: float = dur(300.0)
    default_query_time: float = dur(300.0)
    max_query_time: float = dur(600.0)
    reconnect_timeout: float = dur(72 * 3600.0)
    session_ttl_min: float = dur(10.0)
    raft_snapshot_threshold: int = rule(16384, min=1)
    raft_snapshot_interval: float = dur(30.0)
    raft_trailing_logs: int = rule(10240, min=0)
    leave_on_terminate: bool | None = None  # None: true for clients, false for servers
    skip_leave_on_interrupt: bool | None = None  # None: false for clients, true for servers
    # not settable from files
    dev: bool = field(default=False, metadata={"internal": True})
    config_sources: list[str] = field(default_factory=list, metadata={"internal": True})
    services: list[ServiceDefinition] = field(default_factory=list, metadata={"internal": True})
    checks: list[CheckDefinition] = field(default_factory=list, metadata={"internal": True})

    @property
    def ui(self) -> bool:
        return self.ui_config.enabled

    def http_addr(self) -> tuple[str, int]:
        return (self.addresses.http or self.client_addr, self.ports.http)

    def dns_addr(self) -> tuple[str, int]:
        return (self.addresses.dns or self.client_addr, self.ports.dns)

    def serf_lan_addr(self) -> tuple[str, int]:
        return (self.bind_addr, self.ports.serf_lan)

    def server_addr(self) -> tuple[str, int]:
        return (self.bind_addr, self.ports.server)


DEV_OVERRIDES: dict[str, Any] = {
    "datacenter": "dc1",
    "server": True,
    "bootstrap": True,
    "client_addr": "127.0.0.1",
    "bind_addr": "127.0.0.1",
    "log_level": "DEBUG",
    "ui_config": {"enabled": True},
    "ports": {"http": 8500, "dns": 8600},
    "performance": {"raft_multiplier": 1},
    "gossip_lan": {"gossip_interval": 0.1, "probe_interval": 0.1, "probe_timeout": 0.1, "suspicion_mult": 3},
}
