"""Config documents → validated partial dicts → merged → `AgentConfig` (layer 2-ish: pure).

Contract:
- `decode_partial(doc, problems, warnings) -> dict`: checks every key of a parsed config document
  against the `AgentConfig` dataclasses (agent.config_model): the schema IS the dataclasses, so keys
  and defaults are never written twice. Wrong types/values → `Problem(file, line, "key.path: ...")`;
  keys Consul knows but waypost does not implement (`CONSUL_ONLY_KEYS`) → a warning naming file,
  line and key; keys nobody knows → `unknown configuration key "x"`. The definition keys
  (service/services/check/checks) are skipped here (agent.servicedef decodes them).
- `merge(base, extra)`: Consul's rule (§9.2) — maps merge, lists append, scalars override.
- `build(partial) -> AgentConfig` fills everything else from the field defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from agent.config_docs import Document, join_path
from agent.config_model import AgentConfig
from agent.decode_fields import describe
from agent.errors import Problem
from checks.definition import DurationError, parse_duration

DEFINITION_KEYS = frozenset({"service", "services", "check", "checks"})
LEGACY_ALIASES = {"ui": ("ui_config", "enabled")}

# Keys Consul accepts that waypost ignores with a warning (reference §9; dotted = inside a section).


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


CONSUL_ONLY_KEYS = _words("""
acl advertise_addr_ipv4 advertise_addr_ipv6 advertise_addr_wan advertise_addr_wan_ipv4
advertise_addr_wan_ipv6 advertise_reconnect_timeout audit auth_method auto_config auto_encrypt
auto_reload_config autopilot ca_file ca_path cert_file cloud config_entries connect
disable_anonymous_signature disable_coordinates disable_host_node_id
disable_http_unprintable_char_filter
disable_remote_exec disable_update_check discard_check_output discovery_max_stale enable_acl_replication
enable_agent_tls_for_checks enable_central_service_config enable_debug enable_syslog
experiments gossip_wan key_file license_path locality
node_id peering primary_datacenter primary_gateways
primary_gateways_interval raft_boltdb raft_logstore raft_protocol read_replica reconnect_timeout_wan
reporting retry_interval_wan retry_join_wan retry_max_wan rpc segment segments
serf_lan serf_lan_allowed_cidrs serf_wan serf_wan_allowed_cidrs server_name server_rejoin_age_max
start_join_wan syslog_facility telemetry tls translate_wan_addrs unix_sockets use_streaming_backend
verify_incoming verify_incoming_https verify_incoming_rpc verify_outgoing verify_server_hostname watches xds
non_voting_server check_reap_interval dns_config.prefer_namespace dns_config.recursor_strategy_random
ports.sidecar_min_port ports.sidecar_max_port ports.expose_min_port ports.expose_max_port ports.grpc_tls
addresses.https addresses.grpc addresses.grpc_tls http_config.block_endpoints
http_config.allow_write_http_from http_config.use_cache http_config.max_header_bytes limits.rpc_rate
limits.rpc_max_burst limits.rpc_max_conns_per_client limits.rpc_handshake_timeout limits.rpc_client_timeout
limits.request_limits limits.http_session_limits ui_config.dir ui_config.content_path
ui_config.metrics_provider ui_config.metrics_provider_files ui_config.metrics_provider_options_json
ui_config.metrics_proxy ui_config.dashboard_url_templates performance.rpc_hold_timeout_max
gossip_lan.retransmit_mult_max
""")


def decode_partial(doc: Document, problems: list[Problem], warnings: list[str]) -> dict[str, Any]:
    value = doc.value
    if not isinstance(value, dict):
        problems.append(Problem(doc.name, 1, "a config file must hold an object"))
        return {}
    value = {k: v for k, v in value.items() if k not in DEFINITION_KEYS}
    out: dict[str, Any] = {}
    for key, target in LEGACY_ALIASES.items():
        if key in value:
            section, name = target
            value.setdefault(section, {})
            if isinstance(value[section], dict):
                value[section] = {**value[section], name: value.pop(key)}
    _section(AgentConfig, value, "", doc, problems, warnings, out)
    return out


def _section(cls: type, value: dict, path: str, doc: Document, problems: list[Problem],
             warnings: list[str], out: dict[str, Any]) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    hints = typing.get_type_hints(cls)
    for key, item in value.items():
        child = join_path(path, key)
        if not isinstance(key, str):
            problems.append(Problem(doc.name, doc.line_of(path), f"{path or 'config'}: keys must be strings"))
            continue
        if child in CONSUL_ONLY_KEYS:
            warnings.append(f"{doc.name}:{doc.line_of(child)}: configuration key \"{child}\" is not "
                            "supported by waypost and is ignored")
            continue
        spec = fields.get(key)
        if spec is None:
            problems.append(Problem(doc.name, doc.line_of(child), f'unknown configuration key "{child}"'))
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(item, dict):
                _bad(problems, doc, child, f"expected an object, got {describe(item)}")
                continue
            sub: dict[str, Any] = {}
            _section(hint, item, child, doc, problems, warnings, sub)  # type: ignore[arg-type]
            out[key] = sub
            continue
        try:
            out[key] = _convert(hint, spec.metadata, item)
        except ValueError as exc:
            _bad(problems, doc, child, str(exc))


def _bad(problems: list[Problem], doc: Document, path: str, message: str) -> None:
    problems.append(Problem(doc.name, doc.line_of(path), f"{path}: {message}"))


def _convert(hint: Any, meta: Any, value: object) -> object:
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None:
            return None
        (hint,) = [h for h in typing.get_args(hint) if h is not type(None)]
        origin = typing.get_origin(hint)
    if origin is list:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"expected a list of strings, got {describe(value)}")
        return list(value)
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"expected an object, got {describe(value)}")
        out = {}
        for key, item in value.items():
            if meta.get("duration"):
                out[str(key)] = _duration(item)
            elif isinstance(item, str):
                out[str(key)] = item
            else:
                raise ValueError(f"{key}: expected a string, got {describe(item)}")
        return out
    if meta.get("duration"):
        return _duration(value)
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise ValueError(f"expected a boolean, got {describe(value)}")
        return value
    if hint is int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 19:
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {describe(value)}")
        lo, hi = meta.get("min"), meta.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise ValueError(f"must be {bounds}, got {value}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"expected a string, got {describe(value)}")
        choices = meta.get("choices")
        if choices:
            canon = {"WARNING": "WARN"}.get(value.upper(), value.upper()) if choices[0].isupper() else value
            if canon not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
            return canon
        return value
    raise ValueError(f"unsupported setting type {hint!r}")  # pragma: no cover - a model bug


def _duration(value: object) -> float:
    try:
        plain_int = isinstance(value, int) and not isinstance(value, bool)
        seconds = parse_duration(str(value) if plain_int else value)
    except DurationError:
        raise ValueError(f"invalid duration {describe(value)} (use e.g. \"10s\", \"1m30s\")") from None
    if seconds < 0:
        raise ValueError(f"duration must not be negative, got {describe(value)}")
    return seconds


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            out[key] = merge(old, value)
        elif isinstance(old, list) and isinstance(value, list):
            out[key] = old + value
        else:
            out[key] = value
    return out


def build(partial: dict[str, Any], cls: type = AgentConfig) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for key, value in partial.items():
        hint = hints[key]
        values[key] = build(value, hint) if dataclasses.is_dataclass(hint) else value
    return cls(**values)
