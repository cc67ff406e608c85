"""`waypost agent` command-line flags, Consul's shapes (layer 2-ish: pure, stdlib only).

Contract:
- `parse_agent_flags(argv) -> AgentFlags` (a dict). `argv` is what follows `agent`. Accepted shapes:
  `-flag value`, `-flag=value`, `--flag ...`; booleans as `-server` or `-server=true|false` (a bool
  flag never takes the next argument, like Go's flag package).
- `AgentFlags["config"]` is a partial config (nested, snake_case, like a config file) that
  agent.config_schema validates like any other source; `config_paths` keeps `-config-file` and
  `-config-dir` in command-line order; `hcl` holds `-hcl` fragments.
- Consul flags waypost does not implement are accepted with a warning (`CONSUL_ONLY_FLAGS`); a flag
  nobody knows, a missing value, a bad integer or a stray argument raise `ConfigError`.
"""

from __future__ import annotations

from typing import Any, TypedDict

from agent.errors import ConfigError, Problem

# flag → (kind, target): kind bool|str|int|list|meta; target a dotted config key or "@<AgentFlags key>"
FLAGS: dict[str, tuple[str, str]] = {
    "dev": ("bool", "@dev"),
    "server": ("bool", "server"),
    "bootstrap": ("bool", "bootstrap"),
    "bootstrap-expect": ("int", "bootstrap_expect"),
    "client": ("str", "client_addr"),
    "bind": ("str", "bind_addr"),
    "advertise": ("str", "advertise_addr"),
    "node": ("str", "node_name"),
    "node-meta": ("meta", "node_meta"),
    "datacenter": ("str", "datacenter"),
    "data-dir": ("str", "data_dir"),
    "config-file": ("list", "@config_file"),
    "config-dir": ("list", "@config_dir"),
    "config-format": ("str", "@config_format"),
    "hcl": ("list", "@hcl"),
    "http-port": ("int", "ports.http"),
    "dns-port": ("int", "ports.dns"),
    "server-port": ("int", "ports.server"),
    "serf-lan-port": ("int", "ports.serf_lan"),
    "retry-join": ("list", "retry_join"),
    "join": ("list", "start_join"),
    "retry-interval": ("str", "retry_interval"),
    "retry-max": ("int", "retry_max"),
    "log-level": ("str", "log_level"),
    "log-json": ("bool", "log_json"),
    "log-file": ("str", "log_file"),
    "log-rotate-bytes": ("int", "log_rotate_bytes"),
    "log-rotate-duration": ("str", "log_rotate_duration"),
    "log-rotate-max-files": ("int", "log_rotate_max_files"),
    "pid-file": ("str", "pid_file"),
    "ui": ("bool", "ui_config.enabled"),
    "domain": ("str", "domain"),
    "alt-domain": ("str", "alt_domain"),
    "recursor": ("list", "recursors"),
    "enable-script-checks": ("bool", "enable_script_checks"),
    "enable-local-script-checks": ("bool", "enable_local_script_checks"),
    "encrypt": ("str", "encrypt"),
    "disable-keyring-file": ("bool", "disable_keyring_file"),
    "rejoin": ("bool", "rejoin_after_leave"),
}

# Consul agent flags waypost accepts and ignores: name → takes a value
CONSUL_ONLY_FLAGS: dict[str, bool] = {
    "grpc-port": True, "grpc-tls-port": True, "https-port": True, "serf-wan-port": True,
    "ui-dir": True, "ui-content-path": True, "segment": True, "node-id": True, "raft-protocol": True,
    "syslog": False, "disable-host-node-id": False,
    "advertise-wan": True, "serf-lan-bind": True, "serf-wan-bind": True,
    "serf-lan-allowed-cidrs": True, "serf-wan-allowed-cidrs": True, "retry-join-wan": True,
    "retry-interval-wan": True, "retry-max-wan": True, "join-wan": True, "default-query-time": True,
    "max-query-time": True, "auto-reload-config": False, "read-replica": False, "non-voting-server": False,
    "primary-gateway": True, "protocol": True, "client-port": True, "enable-debug": False,
}

_TRUE = {"1", "t", "true", "TRUE", "True", "T"}
_FALSE = {"0", "f", "false", "FALSE", "False", "F"}


class AgentFlags(TypedDict):
    config: dict[str, Any]
    dev: bool
    config_paths: list[tuple[str, str]]  # ("file" | "dir", path) in command-line order
    config_format: str
    hcl: list[str]
    warnings: list[str]


def _fail(flag: str, message: str) -> ConfigError:
    return ConfigError([Problem("command line", 0, f"{flag}: {message}" if flag else message)])


def parse_agent_flags(argv: list[str]) -> AgentFlags:
    flags = AgentFlags(config={}, dev=False, config_paths=[], config_format="", hcl=[], warnings=[])
    at = 0
    while at < len(argv):
        arg = argv[at]
        at += 1
        if not arg.startswith("-") or arg in ("-", "--"):
            raise _fail("", f"unexpected argument {arg!r} (flags only)")
        name, has_value, value = arg.lstrip("-").partition("=")
        shown = f"-{name}"
        if name in CONSUL_ONLY_FLAGS:
            if CONSUL_ONLY_FLAGS[name] and not has_value:
                if at >= len(argv):
                    raise _fail(shown, "flag needs an argument")
                at += 1
            flags["warnings"].append(f"flag {shown} is not supported by waypost and is ignored")
            continue
        if name not in FLAGS:
            raise _fail("", f"unknown flag {shown}")
        kind, target = FLAGS[name]
        if kind == "bool":
            if has_value and value not in _TRUE | _FALSE:
                raise _fail(shown, f"expected true or false, got {value!r}")
            parsed: Any = not has_value or value in _TRUE
        else:
            if not has_value:
                if at >= len(argv):
                    raise _fail(shown, "flag needs an argument")
                value = argv[at]
                at += 1
            parsed = _typed(shown, kind, value)
        _store(flags, target, kind, parsed)
    return flags


def _typed(flag: str, kind: str, value: str) -> Any:
    if kind == "int":
        try:
            return int(value.strip(), 10)
        except ValueError:
            raise _fail(flag, f"expected an integer, got {value!r}") from None
    if kind == "meta":
        key, sep, val = value.partition(":")
        if not sep or not key:
            raise _fail(flag, f"expected key:value, got {value!r}")
        return {key: val}
    return value


def _store(flags: AgentFlags, target: str, kind: str, value: Any) -> None:
    if target == "@dev":
        flags["dev"] = bool(value)
    elif target in ("@config_file", "@config_dir"):
        flags["config_paths"].append((target[len("@config_"):], value))
    elif target == "@config_format":
        if value not in ("json", "yaml", "hcl"):
            raise _fail("-config-format", f"expected json, yaml or hcl, got {value!r}")
        flags["config_format"] = value
    elif target == "@hcl":
        flags["hcl"].append(value)
    else:
        node = flags["config"]
        *parents, leaf = target.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        if kind == "list":
            node.setdefault(leaf, []).append(value)
        elif kind == "meta":
            node.setdefault(leaf, {}).update(value)
        else:
            node[leaf] = value
