"""Consul-shaped JSON bodies → waypost types (pure functions over dicts; stdlib + layer 0).

Contract:
- Keys are accepted in CamelCase and snake_case, case-insensitively (reference §1.12, §1.14, §2.2,
  §9.3). Every problem found is collected and raised at once as `DefinitionError([Problem(path, 0,
  message), ...])`, `path` being the field path as the user spelled it (`service.checks[1].interval`).
  Untrusted input (lists for objects, nulls, huge strings, junk) only ever produces Problems.
- `decode_service(body, strict_names=False, path="service") -> ServiceDefinition`: /v1/agent/service/
  register and file definitions; `strict_names` makes names/tags that are not DNS labels errors (files)
  instead of acceptable (the API; see `name_warnings`).
- `decode_check(body, path="check", default_service_id="") -> CheckDefinition`: /v1/agent/check/register.
- `decode_catalog_register(body, datacenter) -> RegisterCommand`, `decode_catalog_deregister(body)`.
  Checks keep Type, Interval, Timeout and Definition (Header maps and arg lists included) and
  NodeMeta may hold the agent's own `consul-*` keys (`AGENT_NODE_META_KEYS`), so what a client
  agent's anti-entropy sends (agent/remote/catalog_json.py) decodes to an equal command.
- `check_to_health(defn, node, service) -> HealthCheck`: the catalog row of a local check.
- Check rules (§1.14): exactly one kind; interval required for probe kinds and raised to
  `MIN_INTERVAL`; TTL checks take no interval; timeout defaults per kind and never exceeds the
  interval; failures_before_warning defaults to failures_before_critical and may not exceed it;
  deregister_critical_service_after is kept as given (like Consul, the agent's check supervisor
  applies the 1 min floor, `checks.schedule.deregister_after`).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from agent.catalog.commands import DeregisterCommand, RegisterCommand
from agent.decode_fields import Fields
from agent.errors import DefinitionError, Problem
from agent.types import HealthCheck, Node, NodeService, ServiceDefinition, Weights
from checks.definition import CheckDefinition, CheckKind, Status, format_duration

DNS_NAME_RE = re.compile(r"^[a-zA-Z0-9-]+$")
DNS_LABEL_MAX = 63
MAX_NAME = 512
MIN_INTERVAL = 1.0
DEFAULT_TIMEOUT = 10.0
DEFAULT_SCRIPT_TIMEOUT = 30.0
DEFAULT_OUTPUT_MAX_SIZE = 4096
SERVICE_KINDS = ("", "connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway", "api-gateway")
INTERVAL_KINDS = {CheckKind.SCRIPT, CheckKind.HTTP, CheckKind.TCP, CheckKind.UDP, CheckKind.GRPC,
                  CheckKind.DOCKER, CheckKind.H2PING, CheckKind.OS_SERVICE}
_HOST_PORT_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:/\[\]]+):(\d{1,5})$")
_CHECK_ALIASES = {"checkid": "id", "scriptargs": "args"}
# Consul fields waypost accepts and drops (mesh, enterprise, tokens, read-only echoes).
_SERVICE_IGNORED = ("SocketPath", "Proxy", "Connect", "Namespace", "Partition", "Locality", "Token",
                    "PeerName", "CreateIndex", "ModifyIndex", "ContentHash", "Datacenter")
# node meta keys every agent writes for its own node (Consul's MetaSegmentKey, MetaConsulVersion):
# anti-entropy of client agents registers them through /v1/catalog/register
AGENT_NODE_META_KEYS = frozenset({"consul-network-segment", "consul-version"})
_CHECK_IGNORED = ("Namespace", "Partition", "Token", "Expose", "Type", "CreateIndex", "ModifyIndex",
                  "Definition", "ExposedPort", "ServiceName", "ServiceTags", "Node", "Output")


def _raise_if(problems: list[Problem]) -> None:
    if problems:
        raise DefinitionError(problems)


def name_warnings(service: NodeService) -> list[str]:
    """Consul's warnings for a service that DNS cannot serve (accepted over the API)."""
    out = []
    if not DNS_NAME_RE.match(service.service):
        out.append(f"Service name {service.service!r} will not be discoverable via DNS due to invalid "
                   "characters. Valid characters include all alpha-numerics and dashes.")
    out.extend(f"Service tag {tag!r} will not be discoverable via DNS due to invalid characters. Valid "
               "characters include all alpha-numerics and dashes." for tag in service.tags
               if not DNS_NAME_RE.match(tag))
    return out


def _check_dns_name(f: Fields, path: str, value: str, what: str) -> None:
    if not DNS_NAME_RE.match(value):
        f.error(path, f"{what} {value!r} is not a valid DNS label (use letters, digits and '-')")
    elif len(value) > DNS_LABEL_MAX:
        f.error(path, f"{what} {value!r} is longer than {DNS_LABEL_MAX} characters")


# --- services ------------------------------------------------------------------------------------


def decode_service(body: dict, *, strict_names: bool = False, path: str = "service") -> ServiceDefinition:
    problems: list[Problem] = []
    result = _service(body, path, problems, strict_names, name_field="Name")
    _raise_if(problems)
    assert result is not None
    return result


def _service(body: object, path: str, problems: list[Problem], strict_names: bool,
             name_field: str) -> ServiceDefinition | None:
    f = Fields(body, path, problems)
    if not f.ok:
        return None
    name = f.str(name_field, max_len=MAX_NAME)
    if not name and not f.has(name_field):
        f.error(path, f"missing required field {name_field.lower()!r} (the service name)")
    service_id = f.str("ID", max_len=MAX_NAME) or name
    tags = f.str_list("Tags", max_len=MAX_NAME)
    if strict_names:
        if name:
            _check_dns_name(f, f.path_of(name_field), name, "service name")
        for index, tag in enumerate(tags):
            _check_dns_name(f, f"{f.path_of('tags')}[{index}]", tag, "tag")
    kind = f.str("Kind")
    if kind not in SERVICE_KINDS:
        f.error(f.path_of("kind"), f"unknown service kind {kind!r}")
    service = NodeService(
        id=service_id,
        service=name,
        tags=tuple(tags),
        address=f.str("Address", max_len=MAX_NAME),
        port=f.int("Port", 0, 0, 65535),
        meta=f.meta("Meta"),
        tagged_addresses=_tagged_addresses(f),
        weights=_weights(f),
        enable_tag_override=f.bool("EnableTagOverride"),
        kind=kind if kind in SERVICE_KINDS else "",
    )
    checks: list[CheckDefinition] = []
    items = f.obj_list("Check") + f.obj_list("Checks")
    for number, (item_path, item) in enumerate(items, start=1):
        check = _check(item, item_path, problems, service_id=service_id, embedded=True)
        if check is None:
            continue
        if not check.check_id:
            check.check_id = f"service:{service_id}" + (f":{number}" if len(items) > 1 else "")
        if not check.name:
            check.name = f"Service '{name}' check"
        if any(c.check_id == check.check_id for c in checks):
            f.error(item_path, f"duplicate check id {check.check_id!r} in this service")
        checks.append(check)
    f.ignore(*_SERVICE_IGNORED)
    f.finish()
    return ServiceDefinition(service=service, checks=checks)


def _weights(f: Fields) -> Weights:
    w = f.obj("Weights")
    if w is None:
        return Weights()
    passing = w.int("Passing", 1)
    warning = w.int("Warning", 1, 0)
    w.finish()
    if passing < 1:
        w.error(w.path_of("passing"), f"weights.passing must be at least 1, got {passing}")
        passing = 1
    return Weights(passing=passing, warning=warning)


def _tagged_addresses(f: Fields) -> dict[str, tuple[str, int]]:
    t = f.obj("TaggedAddresses")
    if t is None:
        return {}
    out: dict[str, tuple[str, int]] = {}
    for raw_key in t.spelled_keys():
        got = t.raw(raw_key)
        if got is not None and isinstance(got[1], str):  # py-consul documents {"lan": "<address>"}
            out[raw_key] = (t.check_str(got[0], got[1], MAX_NAME), 0)
            continue
        entry = t.obj(raw_key)
        if entry is None:
            continue
        out[raw_key] = (entry.str("Address", max_len=MAX_NAME), entry.int("Port", 0, 0, 65535))
        entry.finish()
    return out


# --- checks --------------------------------------------------------------------------------------


def decode_check(body: dict, *, path: str = "check", default_service_id: str = "") -> CheckDefinition:
    problems: list[Problem] = []
    check = _check(body, path, problems, service_id=default_service_id, embedded=False)
    _raise_if(problems)
    assert check is not None
    return check


def _check(body: object, path: str, problems: list[Problem], *, service_id: str,
           embedded: bool) -> CheckDefinition | None:
    f = Fields(body, path, problems, _CHECK_ALIASES)
    if not f.ok:
        return None
    before = len(problems)
    name = f.str("Name", max_len=MAX_NAME)
    check_id = f.str("ID", max_len=MAX_NAME)
    own_service = f.str("ServiceID", max_len=MAX_NAME)
    if embedded and own_service and own_service != service_id:
        f.error(f.path_of("ServiceID"), f"an embedded check belongs to service {service_id!r}")  # type: ignore[index]
    if not embedded:
        if not name:
            f.error(path, "missing required field 'name'")
        check_id = check_id or name
        service_id = own_service or service_id
    status_text = f.str("Status") or "critical"
    if status_text not in {s.value for s in Status}:
        f.error(f.path_of("status"), f"status must be passing, warning or critical, got {status_text!r}")
        status_text = "critical"
    defn = CheckDefinition(
        check_id=check_id, name=name, service_id=service_id, notes=f.str("Notes"),
        status=Status(status_text), interval=f.duration("Interval"), timeout=f.duration("Timeout"),
        ttl=f.duration("TTL"), args=f.str_list("Args"), shell=f.str("Shell"),
        docker_container_id=f.str("DockerContainerID"), http=f.str("HTTP"),
        method=f.str("Method", max_len=32),
        header=_header(f), body=f.str("Body"), disable_redirects=f.bool("DisableRedirects"),
        tls_server_name=f.str("TLSServerName"), tls_skip_verify=f.bool("TLSSkipVerify"),
        tcp=f.str("TCP"), tcp_use_tls=f.bool("TCPUseTLS"), udp=f.str("UDP"), grpc=f.str("GRPC"),
        grpc_use_tls=f.bool("GRPCUseTLS"), h2ping=f.str("H2PING"),
        h2ping_use_tls=f.bool("H2PingUseTLS", True),
        alias_node=f.str("AliasNode"), alias_service=f.str("AliasService"), os_service=f.str("OSService"),
        success_before_passing=f.int("SuccessBeforePassing", 0, 0),
        failures_before_warning=f.int("FailuresBeforeWarning", -1, 0),
        failures_before_critical=f.int("FailuresBeforeCritical", 0, 0),
        deregister_critical_service_after=f.duration("DeregisterCriticalServiceAfter"),
        output_max_size=f.int("OutputMaxSize", DEFAULT_OUTPUT_MAX_SIZE, 0) or DEFAULT_OUTPUT_MAX_SIZE,
    )
    if f.has("Script"):
        f.raw("Script")
        f.error(f.path_of("script"), "'script' is no longer supported; use 'args' (a list)")
    f.ignore(*_CHECK_IGNORED)
    f.finish()
    if len(problems) == before:
        _check_rules(f, defn)
    return defn


def _header(f: Fields) -> dict[str, list[str]]:
    got = f.raw("Header")
    if got is None:
        return {}
    path, value = got
    if not isinstance(value, dict):
        f.error(path, "expected an object of header name → list of values")
        return {}
    out: dict[str, list[str]] = {}
    for key, item in value.items():
        values = [item] if isinstance(item, str) else item
        if not isinstance(key, str) or not isinstance(values, list) or not all(
                isinstance(v, str) for v in values):
            f.error(f"{path}.{key}", "header values must be a list of strings")
            continue
        out[key] = list(values)
    return out


def _kinds(d: CheckDefinition) -> list[CheckKind]:
    found = []
    if d.docker_container_id:
        found.append(CheckKind.DOCKER)
    elif d.args:
        found.append(CheckKind.SCRIPT)
    for kind, value in ((CheckKind.HTTP, d.http), (CheckKind.TCP, d.tcp), (CheckKind.UDP, d.udp),
                        (CheckKind.TTL, d.ttl), (CheckKind.GRPC, d.grpc), (CheckKind.H2PING, d.h2ping),
                        (CheckKind.ALIAS, d.alias_service or d.alias_node),
                        (CheckKind.OS_SERVICE, d.os_service)):
        if value:
            found.append(kind)
    return found


def _check_rules(f: Fields, d: CheckDefinition) -> None:
    path = f.path
    kinds = _kinds(d)
    if not kinds:
        f.error(path, "a check needs exactly one of args, http, tcp, udp, ttl, grpc, h2ping, "
                      "docker_container_id, alias_service/alias_node or os_service")
        return
    if len(kinds) > 1:
        f.error(path, f"a check may have only one type, got {', '.join(k.value for k in kinds)}")
        return
    d.kind = kinds[0]
    if d.kind in INTERVAL_KINDS:
        if d.interval <= 0 and f.has("Interval"):
            f.error(f.path_of("interval"), f"interval must be greater than 0 for {d.kind.value} checks "
                                           f"(at least 1s is used), got {format_duration(d.interval)}")
            return
        if d.interval <= 0:
            f.error(path, f"interval is required for {d.kind.value} checks")
            return
        d.interval = max(d.interval, MIN_INTERVAL)
        scripted = d.kind in (CheckKind.SCRIPT, CheckKind.DOCKER)
        default = DEFAULT_SCRIPT_TIMEOUT if scripted else DEFAULT_TIMEOUT
        d.timeout = min(d.timeout or default, d.interval)
    elif d.kind is CheckKind.TTL and d.interval:
        f.error(f.path_of("interval"), "a ttl check must not have an interval")
    if d.kind is CheckKind.HTTP:
        parts = urlsplit(d.http)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            f.error(f.path_of("http"), f"expected an http:// or https:// URL, got {d.http!r}")
    for kind, value in ((CheckKind.TCP, d.tcp), (CheckKind.UDP, d.udp), (CheckKind.H2PING, d.h2ping),
                        (CheckKind.GRPC, d.grpc.split("/", 1)[0])):
        if d.kind is kind and not _valid_host_port(value):
            f.error(f.path_of(kind.value), f"expected host:port, got {value!r}")
    if d.failures_before_warning < 0:
        d.failures_before_warning = d.failures_before_critical
    elif d.failures_before_warning > d.failures_before_critical:
        f.error(f.path_of("failures_before_warning"),
                f"failures_before_warning ({d.failures_before_warning}) must not exceed "
                f"failures_before_critical ({d.failures_before_critical})")


def _valid_host_port(value: str) -> bool:
    match = _HOST_PORT_RE.match(value)
    return bool(match) and int(match.group(2)) <= 65535


def check_to_health(defn: CheckDefinition, node: str, service: NodeService | None) -> HealthCheck:
    return HealthCheck(
        node=node, check_id=defn.check_id, name=defn.name, status=defn.status, notes=defn.notes,
        service_id=defn.service_id,
        service_name=service.service if service else "",
        service_tags=service.tags if service else (),
        type=defn.kind,
        interval=format_duration(defn.interval) if defn.interval else "",
        timeout=format_duration(defn.timeout) if defn.timeout else "",
        definition=defn.to_api(),
    )


# --- catalog -------------------------------------------------------------------------------------


def decode_catalog_register(body: dict, datacenter: str) -> RegisterCommand:
    problems: list[Problem] = []
    f = Fields(body, "body", problems)
    if not f.ok:
        raise DefinitionError(problems)
    node_name = f.str("Node", max_len=MAX_NAME)
    address = f.str("Address", max_len=MAX_NAME)
    if not node_name:
        f.error("body.Node", "Must provide node")
    if not address:
        f.error("body.Address", "Must provide address")
    node = Node(node=node_name, address=address, id=f.str("ID", max_len=64),
                datacenter=f.str("Datacenter", max_len=MAX_NAME) or datacenter,
                tagged_addresses=f.str_map("TaggedAddresses"), meta=f.meta("NodeMeta", AGENT_NODE_META_KEYS))
    service = None
    got = f.raw("Service")
    if got is not None:
        definition = _service(got[1], got[0], problems, strict_names=False, name_field="Service")
        if definition is not None:
            if definition.checks:
                f.error(got[0], "checks belong in the request's Check/Checks, not in Service")
            service = definition.service
    checks = []
    for item_path, item in f.obj_list("Check") + f.obj_list("Checks"):
        check = _catalog_check(item, item_path, problems, node_name, service)
        if check is not None:
            checks.append(check)
    skip = f.bool("SkipNodeUpdate")
    f.ignore("Namespace", "Partition", "Locality", "PeerName", "Token", "WriteRequest")
    f.finish()
    _raise_if(problems)
    return RegisterCommand(node=node, service=service, checks=checks, skip_node_update=skip)


def _catalog_check(body: object, path: str, problems: list[Problem], node: str,
                   service: NodeService | None) -> HealthCheck | None:
    f = Fields(body, path, problems)
    if not f.ok:
        return None
    name = f.str("Name", max_len=MAX_NAME)
    check_id = f.str("CheckID", max_len=MAX_NAME) or name
    if not check_id:
        f.error(path, "missing required field 'CheckID' or 'Name'")
    check_node = f.str("Node", max_len=MAX_NAME)
    if check_node and node and check_node != node:
        f.error(f.path_of("Node"), f"check node {check_node!r} does not match the request's node {node!r}")
    status_text = f.str("Status") or "critical"
    if status_text not in {s.value for s in Status}:
        f.error(f.path_of("Status"), f"status must be passing, warning or critical, got {status_text!r}")
        status_text = "critical"
    service_id = f.str("ServiceID", max_len=MAX_NAME)
    definition: dict[str, object] = {}
    got = f.raw("Definition")
    if got is not None:
        if isinstance(got[1], dict) and all(_definition_value(v) for v in got[1].values()) and len(got[1]) <= 64:
            definition = dict(got[1])
        else:
            f.error(got[0], "expected an object of scalar values, string lists or a Header map")
    type_text = f.str("Type", max_len=MAX_NAME)  # Consul stores it; kinds waypost does not know read as ""
    same = service is not None and service_id == service.id
    check = HealthCheck(
        node=node, check_id=check_id, name=name, status=Status(status_text), notes=f.str("Notes"),
        output=f.str("Output"), service_id=service_id,
        service_name=service.service if same and service else f.str("ServiceName", max_len=MAX_NAME),
        service_tags=service.tags if same and service else tuple(f.str_list("ServiceTags")),
        type=CheckKind(type_text) if type_text in _CHECK_KIND_VALUES else CheckKind.NONE,
        interval=f.str("Interval", max_len=64), timeout=f.str("Timeout", max_len=64),
        definition=definition,
    )
    f.ignore("ExposedPort", "Namespace", "Partition", "PeerName",
             "CreateIndex", "ModifyIndex", "ServiceName", "ServiceTags")
    f.finish()
    return check


_CHECK_KIND_VALUES = frozenset(k.value for k in CheckKind)
_SCALAR = (str, int, float, bool, type(None))


def _definition_value(value: object) -> bool:
    """What a check's `Definition` may hold: scalars, lists of scalars (ScriptArgs), and a
    string → list-of-strings map (Header), as `CheckDefinition.to_api` writes them."""
    if isinstance(value, _SCALAR):
        return True
    if isinstance(value, list):
        return len(value) <= 1024 and all(isinstance(v, _SCALAR) for v in value)
    if isinstance(value, dict):
        return len(value) <= 64 and all(isinstance(k, str) and isinstance(v, list) and len(v) <= 64
                                        and all(isinstance(x, str) for x in v) for k, v in value.items())
    return False


def decode_catalog_deregister(body: dict) -> DeregisterCommand:
    problems: list[Problem] = []
    f = Fields(body, "body", problems)
    if not f.ok:
        raise DefinitionError(problems)
    node = f.str("Node", max_len=MAX_NAME)
    if not node:
        f.error("body.Node", "Must provide node")
    command = DeregisterCommand(node=node, service_id=f.str("ServiceID", max_len=MAX_NAME),
                                check_id=f.str("CheckID", max_len=MAX_NAME))
    f.ignore("Datacenter", "Namespace", "Partition", "PeerName", "Token", "WriteRequest")
    f.finish()
    _raise_if(problems)
    return command
