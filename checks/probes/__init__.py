"""Probes: one async function per check kind, and `ProbeKit` to pick one (layer 2).

Contract: `ProbeKit.build(defn, timeout, output_limit)` returns a `Probe` — a zero-argument async
callable producing a `CheckResult` — or raises `UnsupportedCheck` for a kind it cannot run
(docker; alias without an `AliasSource`; gRPC/H2PING when `checks.probes.h2` is unavailable).
TTL and catalog-only (`CheckKind.NONE`) checks have no probe (`build` returns None).
`await kit.close()` releases the shared HTTP client session.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial

from checks.definition import CheckDefinition, CheckKind
from checks.errors import UnsupportedCheck
from checks.probes.alias import AliasSource, probe_alias
from checks.probes.http import HTTPProbe
from checks.probes.script import probe_os_service, probe_script
from checks.probes.tcp import probe_tcp, probe_udp
from checks.result import CheckResult

Probe = Callable[[], Awaitable[CheckResult]]

__all__ = ["AliasSource", "Probe", "ProbeKit"]


class ProbeKit:
    def __init__(
        self,
        *,
        alias_source: AliasSource | None = None,
        node_name: str = "",
        http: HTTPProbe | None = None,
        systemctl: str = "systemctl",
    ):
        self.alias_source = alias_source
        self.node_name = node_name
        self.http = http or HTTPProbe()
        self.systemctl = systemctl

    async def close(self) -> None:
        await self.http.close()

    def build(self, defn: CheckDefinition, timeout: float, output_limit: int) -> Probe | None:
        kind = defn.kind
        if kind in (CheckKind.TTL, CheckKind.NONE):
            return None
        if kind == CheckKind.HTTP:
            return partial(self.http, defn, timeout, output_limit)
        if kind == CheckKind.TCP:
            return partial(
                probe_tcp, defn.tcp, timeout, defn.tcp_use_tls, defn.tls_server_name, defn.tls_skip_verify
            )
        if kind == CheckKind.UDP:
            return partial(probe_udp, defn.udp, timeout)
        if kind == CheckKind.SCRIPT:
            return partial(probe_script, defn.args, defn.shell, timeout, output_limit)
        if kind == CheckKind.OS_SERVICE:
            return partial(probe_os_service, defn.os_service, timeout, self.systemctl)
        if kind == CheckKind.ALIAS:
            if self.alias_source is None:
                raise UnsupportedCheck(defn.check_id, "alias checks need an alias source")
            return partial(
                probe_alias, self.alias_source, defn.alias_node or self.node_name, defn.alias_service
            )
        if kind in (CheckKind.GRPC, CheckKind.H2PING):
            return self._build_h2(defn, timeout)
        raise UnsupportedCheck(defn.check_id, f"{kind or 'untyped'} checks are not supported")

    def _build_h2(self, defn: CheckDefinition, timeout: float) -> Probe:
        try:
            from checks.probes import h2
        except ImportError as exc:  # pragma: no cover - h2.py ships with the package
            raise UnsupportedCheck(defn.check_id, f"{defn.kind} checks are not supported") from exc
        if defn.kind == CheckKind.GRPC:
            return partial(
                h2.probe_grpc,
                defn.grpc,
                timeout,
                defn.grpc_use_tls,
                defn.tls_server_name,
                defn.tls_skip_verify,
            )
        return partial(
            h2.probe_h2ping,
            defn.h2ping,
            timeout,
            defn.h2ping_use_tls,
            defn.tls_server_name,
            defn.tls_skip_verify,
        )
