"""LocalAgent: the agent-local services and checks, their runners, and their sync (layer 3).

Contract: every `/v1/agent/*` write and every reload goes through here. A change is applied to
`LocalState`, the check runners are told, and the catalog is synced before the call returns
(best effort: if the catalog is unreachable, anti-entropy retries in the background). Errors are
`BadRequest` (invalid, or script checks not enabled) and `NotFound` (unknown service/check ID).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable

from agent.decode import check_to_health
from agent.errors import BadRequest, NotFound
from agent.local.antientropy import AntiEntropy
from agent.local.state import LocalState
from agent.types import NODE_MAINT_CHECK_ID, SERVICE_MAINT_PREFIX, HealthCheck, ServiceDefinition
from checks.checkset import CheckSet
from checks.definition import CheckDefinition, CheckKind, Status
from checks.errors import CheckError
from checks.result import Transition

log = logging.getLogger("waypost.local")

NODE_MAINT_DEFAULT = ("Maintenance mode is enabled for this node, but no reason was provided. "
                      "This is a default message.")
SERVICE_MAINT_DEFAULT = ("Maintenance mode is enabled for this service, but no reason was provided. "
                         "This is a default message.")
SCRIPT_KINDS = frozenset({CheckKind.SCRIPT, CheckKind.DOCKER})


class LocalAgent:
    def __init__(self, state: LocalState, sync: AntiEntropy, runners: CheckSet, *,
                 enable_script_checks: bool, enable_local_script_checks: bool) -> None:
        self.state = state
        self._sync = sync
        self._runners = runners
        self._scripts_from_api = enable_script_checks
        self._scripts_from_files = enable_script_checks or enable_local_script_checks
        self._change_waiters: set[asyncio.Future[None]] = set()

    async def wait_for_change(self, timeout: float) -> None:
        """Return after the next local change, or after `timeout` (hash-based blocking)."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._change_waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            pass
        finally:
            self._change_waiters.discard(waiter)

    def _changed(self) -> None:
        for waiter in self._change_waiters:
            if not waiter.done():
                waiter.set_result(None)

    # --- services ---
    async def register_service(self, definition: ServiceDefinition, *,
                               replace_existing_checks: bool = False) -> None:
        self._validate_service(definition)
        await self._register_service(definition, replace_existing_checks=replace_existing_checks)
        await self.sync()

    def _validate_service(self, definition: ServiceDefinition) -> None:
        for check in definition.checks:
            self._validate_check(check, from_file=definition.source.startswith("file:"))

    async def _register_service(self, definition: ServiceDefinition, *, replace_existing_checks: bool) -> None:
        service = definition.service
        if replace_existing_checks:
            keep = {c.check_id for c in definition.checks}
            for stale in [c.check_id for c in self.state.service_checks(service.id) if c.check_id not in keep]:
                await self._drop_check(stale)
        self.state.add_service(definition)
        for check in definition.checks:
            await self._add_check(dataclasses.replace(check, service_id=service.id), definition.source)

    async def deregister_service(self, service_id: str) -> None:
        if service_id not in self.state.services:
            raise NotFound(f'Unknown service ID "{service_id}". Ensure that the service ID is passed, '
                           "not the service name.")
        await self._remove_service(service_id)
        await self.sync()

    async def _remove_service(self, service_id: str) -> None:
        for check in self.state.service_checks(service_id):
            await self._stop_runner(check.check_id)
        self.state.remove_service(service_id)

    async def deregister_critical_service(self, service_id: str) -> None:
        """A check of this service stayed critical past deregister_critical_service_after."""
        if service_id in self.state.services:
            log.warning("deregistering service %s: critical for too long", service_id)
            await self._remove_service(service_id)
            await self.sync()

    # --- checks ---
    async def register_check(self, definition: CheckDefinition, source: str = "api") -> None:
        self._validate_check(definition, from_file=source.startswith("file:"))
        if definition.service_id and definition.service_id not in self.state.services:
            raise BadRequest(f'ServiceID "{definition.service_id}" does not exist')
        await self._add_check(definition, source)
        await self.sync()

    async def deregister_check(self, check_id: str) -> None:
        if check_id not in self.state.checks:
            raise NotFound(f'Unknown check ID "{check_id}"')
        await self._drop_check(check_id)
        await self.sync()

    async def ttl_update(self, check_id: str, status: Status, output: str) -> None:
        local = self.state.checks.get(check_id)
        if local is None:
            raise NotFound(f'Unknown check ID "{check_id}"')
        if local.definition is None or local.definition.kind != CheckKind.TTL:
            raise BadRequest(f'CheckID "{check_id}" does not have associated TTL')
        result = await self._runners.ttl_update(check_id, status, output)
        # the runner's notify may already have recorded the result; sync either way so the
        # catalog shows it when this call returns
        self.state.update_check(check_id, result.status, result.output)
        await self.sync()

    def check_history(self, check_id: str) -> list[Transition]:
        """A check's recorded status transitions, oldest first. Checks without a runner
        (maintenance, catalog-only) have a status nobody observes changing: an empty list."""
        if check_id not in self.state.checks:
            raise NotFound(f'Unknown check ID "{check_id}"')
        return self._runners.history(check_id) if check_id in self._runners else []

    def notify(self, check_id: str, status: Status, output: str) -> None:
        """Callback for the check runners: a check's result changed."""
        if self.state.update_check(check_id, status, output):
            self._changed()
            self._sync.trigger()

    async def _add_check(self, definition: CheckDefinition, source: str) -> None:
        service = self.state.services.get(definition.service_id)
        row = check_to_health(definition, self.state.node.node, service.service if service else None)
        self.state.add_check(row, definition, source)
        unchanged = definition.check_id in self._runners and self._runners.definition(
            definition.check_id) == definition
        if definition.kind != CheckKind.NONE and not unchanged:
            await self._runners.add(definition, allow_scripts=True)  # permission checked above

    async def _drop_check(self, check_id: str) -> None:
        await self._stop_runner(check_id)
        self.state.remove_check(check_id)

    async def _stop_runner(self, check_id: str) -> None:
        if check_id in self._runners:
            await self._runners.remove(check_id)

    def _validate_check(self, check: CheckDefinition, *, from_file: bool) -> None:
        allowed = self._scripts_from_files if from_file else self._scripts_from_api
        if check.kind in SCRIPT_KINDS and not allowed:
            flag = "enable_local_script_checks" if from_file else "enable_script_checks"
            raise BadRequest(f'Scripts are disabled on this agent; to enable, configure "{flag}" '
                             f'(check "{check.check_id}")')
        if check.kind != CheckKind.NONE:
            try:
                self._runners.validate(check, allow_scripts=True)
            except CheckError as exc:
                raise BadRequest(f'Check "{check.check_id}" is not valid: {exc}') from exc

    # --- maintenance ---
    async def set_node_maintenance(self, enable: bool, reason: str) -> None:
        if enable:
            self._set_maintenance_check(HealthCheck(
                node=self.state.node.node, check_id=NODE_MAINT_CHECK_ID, name="Node Maintenance Mode",
                status=Status.CRITICAL, notes=reason or NODE_MAINT_DEFAULT))
        else:
            self.state.remove_check(NODE_MAINT_CHECK_ID)
        await self.sync()

    async def set_service_maintenance(self, service_id: str, enable: bool, reason: str) -> None:
        definition = self.state.services.get(service_id)
        if definition is None:
            raise NotFound(f'Unknown service ID "{service_id}"')
        check_id = SERVICE_MAINT_PREFIX + service_id
        if enable:
            self._set_maintenance_check(HealthCheck(
                node=self.state.node.node, check_id=check_id, name="Service Maintenance Mode",
                status=Status.CRITICAL, notes=reason or SERVICE_MAINT_DEFAULT, service_id=service_id))
        else:
            self.state.remove_check(check_id)
        await self.sync()

    def _set_maintenance_check(self, check: HealthCheck) -> None:
        if check.check_id not in self.state.checks:
            self.state.add_check(check, None, "maintenance")

    # --- files (startup and reload) ---
    async def replace_file_definitions(self, services: Iterable[ServiceDefinition],
                                       checks: Iterable[CheckDefinition]) -> None:
        """Make file-sourced services/checks equal the given ones; API-registered ones stay.

        Everything is validated before anything changes, so a bad reload changes nothing."""
        services = list(services)
        checks = list(checks)
        for definition in services:
            self._validate_service(definition)
        new_ids = {d.service.id for d in services}
        for check in checks:
            self._validate_check(check, from_file=True)
            if check.service_id and check.service_id not in new_ids and check.service_id not in {
                    sid for sid, d in self.state.services.items() if not d.source.startswith("file:")}:
                raise BadRequest(f'check "{check.check_id}": ServiceID "{check.service_id}" does not exist')
        for service_id, definition in list(self.state.services.items()):
            if definition.source.startswith("file:") and service_id not in new_ids:
                await self._remove_service(service_id)
        for definition in services:
            await self._register_service(definition, replace_existing_checks=True)
        new_check_ids = {c.check_id for c in checks}
        for check_id, local in list(self.state.checks.items()):
            if local.source.startswith("file:") and not local.check.service_id and check_id not in new_check_ids:
                await self._drop_check(check_id)
        for check in checks:
            await self._add_check(check, "file:")
        self._changed()
        self._sync.trigger()

    async def sync(self, *, full: bool = False) -> None:
        self._changed()
        try:
            await self._sync.sync_now(full=full)
        except Exception as exc:  # the background loop retries; the local change stands
            log.warning("catalog sync deferred: %s", exc)
            self._sync.trigger()
