"""`CheckRunner`: drives one check of any kind on the event loop (layer 3).

Contract:
- `CheckRunner(defn, probe=..., report=..., clock=..., rng=...)`; `await runner.run()` runs until
  cancelled and never raises anything else (a probe that raises is a critical result).
- Interval kinds: first run after a random stagger in [0, interval), then on the grid
  `first + k·interval` (no drift); a probe slower than the interval skips the missed ticks — a
  new run never starts while the previous one is alive. Each raw result goes through the
  thresholds (`checks.thresholds`); alias results are mirrored as they are.
- TTL: no probe; `ttl_update(status, output)` sets the status and re-arms the deadline; at the
  deadline the check turns critical (`TTL expired`). `restore_ttl(...)` resumes persisted state.
- Catalog-only checks (no probe, no TTL): `run()` returns at once; the status stays as given.
- Every published status goes through `report(check_id, result, reason)`; the owner de-duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

from checks.clock import Clock
from checks.definition import CheckDefinition, CheckKind, Status, format_duration
from checks.probes import Probe
from checks.result import CheckResult
from checks.schedule import (
    MIN_INTERVAL,
    PROBE_GUARD,
    effective_interval,
    effective_timeout,
    first_run_at,
    next_run_at,
)
from checks.thresholds import Thresholds
from checks.ttl import TTLState

log = logging.getLogger("waypost.checks")

Report = Callable[[str, CheckResult, str], None]


class CheckRunner:
    def __init__(
        self,
        defn: CheckDefinition,
        *,
        probe: Probe | None,
        report: Report,
        clock: Clock,
        rng: random.Random,
        min_interval: float = MIN_INTERVAL,
    ):
        self.defn = defn
        self.probe = probe
        self._report = report
        self._clock = clock
        self._rng = rng
        self.interval = effective_interval(defn, min_interval)
        self.timeout = effective_timeout(defn, min_interval)
        self.thresholds = Thresholds.for_definition(defn)
        self.ttl = TTLState(defn.ttl, status=defn.status) if defn.kind == CheckKind.TTL else None
        self._ttl_changed = asyncio.Event()
        self._restored = False
        self.runs = 0  # completed probe runs (for tests and metrics)

    @property
    def check_id(self) -> str:
        return self.defn.check_id

    # --- TTL -------------------------------------------------------------------------------
    def ttl_update(self, status: Status, output: str) -> CheckResult:
        assert self.ttl is not None
        result = self.ttl.update(status, output, self._clock.now())
        self._ttl_changed.set()
        return result

    def restore_ttl(self, status: Status, output: str, remaining: float) -> CheckResult:
        assert self.ttl is not None
        self._restored = True
        result = self.ttl.restore(status, output, remaining, self._clock.now())
        self._ttl_changed.set()
        return result

    async def _run_ttl(self) -> None:
        assert self.ttl is not None
        if not self._restored:
            self.ttl.start(self._clock.now())
        while True:
            deadline = self.ttl.deadline
            if deadline is None:
                self._ttl_changed.clear()
                await self._ttl_changed.wait()
                continue
            await self._clock.sleep_until(deadline)
            if self.ttl.due(self._clock.now()):
                self._publish(self.ttl.expire(), "ttl_expired")

    # --- probes ----------------------------------------------------------------------------
    async def probe_once(self) -> CheckResult:
        assert self.probe is not None
        try:
            async with asyncio.timeout(self.timeout + PROBE_GUARD):
                return await self.probe()
        except TimeoutError:
            return CheckResult.critical(f"Timed out ({format_duration(self.timeout)}) running check")
        except Exception as exc:  # a probe bug must not stop the check or its neighbours
            log.exception("check %s: probe failed", self.check_id)
            return CheckResult.critical(f"check failed: {exc!r}")

    async def _run_probe(self) -> None:
        planned = first_run_at(self._clock.now(), self.interval, self._rng)
        while True:
            await self._clock.sleep_until(planned)
            result = await self.probe_once()
            self.runs += 1
            if self.defn.kind == CheckKind.ALIAS:
                self._publish(result, "alias")
            else:
                verdict = self.thresholds.observe(result.status)
                if verdict.report is not None:
                    self._publish(CheckResult(verdict.report, result.output), verdict.reason)
            planned = next_run_at(planned, self.interval, self._clock.now())

    def _publish(self, result: CheckResult, reason: str) -> None:
        try:
            self._report(self.check_id, result, reason)
        except Exception:
            log.exception("check %s: report callback failed", self.check_id)

    async def run(self) -> None:
        if self.ttl is not None:
            await self._run_ttl()
        elif self.probe is not None:
            await self._run_probe()
