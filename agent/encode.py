"""Our definition types → Consul's registration JSON (layer 0: pure functions over dataclasses).

Contract:
- `service_definition_to_api(sd)` is the body of `PUT /v1/agent/service/register`
  (`api.AgentServiceRegistration`): CamelCase keys, `Name` (not `Service`), no indexes, embedded
  checks under `Checks`. Decoding it again (agent/decode.py) gives back an equal definition.
- `check_definition_to_api(cd, embedded=...)` is one check (`api.AgentServiceCheck` when embedded in
  a service, `api.AgentCheckRegistration` otherwise, which adds `ServiceID`). Like Go's
  `omitempty`, fields at their default are left out, so exactly one check kind appears; durations
  are Go strings (`format_duration`), e.g. `"10s"`, `"1m30s"`.
"""

from __future__ import annotations

from agent.types import ServiceDefinition
from checks.definition import CheckDefinition, CheckKind, Status, format_duration

_DEFAULT_OUTPUT_MAX_SIZE = CheckDefinition("", "").output_max_size
_DEFAULT_H2PING_TLS = CheckDefinition("", "").h2ping_use_tls

# (our field, Consul's JSON key) for plain values copied when not at their zero value.
_CHECK_FIELDS: tuple[tuple[str, str], ...] = (
    ("notes", "Notes"),
    ("args", "Args"),
    ("shell", "Shell"),
    ("docker_container_id", "DockerContainerID"),
    ("http", "HTTP"),
    ("method", "Method"),
    ("header", "Header"),
    ("body", "Body"),
    ("disable_redirects", "DisableRedirects"),
    ("tls_server_name", "TLSServerName"),
    ("tls_skip_verify", "TLSSkipVerify"),
    ("tcp", "TCP"),
    ("tcp_use_tls", "TCPUseTLS"),
    ("udp", "UDP"),
    ("grpc", "GRPC"),
    ("grpc_use_tls", "GRPCUseTLS"),
    ("h2ping", "H2PING"),
    ("alias_node", "AliasNode"),
    ("alias_service", "AliasService"),
    ("os_service", "OSService"),
    ("success_before_passing", "SuccessBeforePassing"),
    ("failures_before_warning", "FailuresBeforeWarning"),
    ("failures_before_critical", "FailuresBeforeCritical"),
)

_DURATION_FIELDS: tuple[tuple[str, str], ...] = (
    ("interval", "Interval"),
    ("timeout", "Timeout"),
    ("ttl", "TTL"),
    ("deregister_critical_service_after", "DeregisterCriticalServiceAfter"),
)


def check_definition_to_api(cd: CheckDefinition, *, embedded: bool = True) -> dict[str, object]:
    """Consul's JSON for one check; `embedded` leaves out `ServiceID` (the service supplies it)."""
    out: dict[str, object] = {}
    if cd.check_id:
        out["CheckID" if embedded else "ID"] = cd.check_id
    if cd.name:
        out["Name"] = cd.name
    if not embedded and cd.service_id:
        out["ServiceID"] = cd.service_id
    if cd.status != Status.CRITICAL:
        out["Status"] = str(cd.status)
    for attr, key in _CHECK_FIELDS:
        value = getattr(cd, attr)
        if value:
            out[key] = _copy(value)
    for attr, key in _DURATION_FIELDS:
        seconds = getattr(cd, attr)
        if seconds:
            out[key] = format_duration(seconds)
    if cd.kind == CheckKind.H2PING and cd.h2ping_use_tls != _DEFAULT_H2PING_TLS:
        out["H2PingUseTLS"] = cd.h2ping_use_tls
    if cd.output_max_size != _DEFAULT_OUTPUT_MAX_SIZE:
        out["OutputMaxSize"] = cd.output_max_size
    return out


def service_definition_to_api(sd: ServiceDefinition) -> dict[str, object]:
    """Body for PUT /v1/agent/service/register built from a definition file's service."""
    svc = sd.service
    out: dict[str, object] = {"ID": svc.id, "Name": svc.service}
    if svc.kind:
        out["Kind"] = svc.kind
    if svc.tags:
        out["Tags"] = list(svc.tags)
    if svc.address:
        out["Address"] = svc.address
    if svc.port:
        out["Port"] = svc.port
    if svc.meta:
        out["Meta"] = dict(svc.meta)
    if svc.tagged_addresses:
        out["TaggedAddresses"] = {
            name: {"Address": addr, "Port": port} for name, (addr, port) in svc.tagged_addresses.items()
        }
    out["Weights"] = svc.weights.to_api()
    if svc.enable_tag_override:
        out["EnableTagOverride"] = True
    if sd.checks:
        out["Checks"] = [check_definition_to_api(c, embedded=True) for c in sd.checks]
    return out


def _copy(value: object) -> object:
    if isinstance(value, dict):
        return {k: list(v) if isinstance(v, list | tuple) else v for k, v in value.items()}
    if isinstance(value, list | tuple):
        return list(value)
    return value
