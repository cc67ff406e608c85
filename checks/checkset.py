"""`CheckSet`: the supervisor of every local check of an agent (layer 3).

Contract:
- `async with CheckSet(notify, ...) as checks:` owns one TaskGroup: one task per running check
  plus the reaper; leaving the block (or `await checks.stop()`) cancels and awaits them all.
- `await add(defn)`, `await remove(check_id)`, `await replace(defns)` (reload: new ids start,
  missing ids stop, changed definitions restart — the old task is cancelled and awaited first —
  and unchanged ones keep running untouched). `replace` validates everything before changing
  anything. `add` of an existing id replaces it.
- `notify(check_id, result)` (sync, must not block) is called when a check's status or output
  changes, including once on `add` with its initial status (or its restored TTL state).
- `await ttl_update(check_id, status, output)`: raises `UnknownCheck`, `NotTTLCheck` or
  `InvalidStatus`; persists the TTL state to `state_dir` (when set) before returning.
- Script/docker checks raise `ScriptChecksDisabled` on add unless scripts are allowed.
- Service checks with `deregister_critical_service_after`: the reaper (every `reap_interval`)
  calls `on_critical_too_long(service_id)` once per critical episode (sync or async callback).
- `status(id)`, `results()`, `definition(id)`, `history(id)` (bounded list of `Transition`s).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from checks.clock import Clock, LoopClock
from checks.definition import CheckDefinition, CheckKind, Status
from checks.errors import InvalidStatus, NotTTLCheck, ScriptChecksDisabled, UnknownCheck
from checks.persist import TTLRecord, TTLStore, fingerprint
from checks.probes import AliasSource, ProbeKit
from checks.result import HISTORY_OUTPUT_EXCERPT, CheckResult, Transition
from checks.runner import CheckRunner
from checks.schedule import (
    HISTORY_SIZE,
    MIN_DEREGISTER_AFTER,
    MIN_INTERVAL,
    OUTPUT_MAX_SIZE,
    REAP_INTERVAL,
    SCRIPT_KINDS,
    CriticalSpan,
    deregister_after,
    deregister_due,
    output_limit,
)

log = logging.getLogger("waypost.checks")

Notify = Callable[[str, CheckResult], None]
OnCriticalTooLong = Callable[[str], Awaitable[None] | None]


@dataclass(slots=True)
class _Entry:
    defn: CheckDefinition
    runner: CheckRunner
    result: CheckResult
    task: asyncio.Task[None] | None = None
    critical_since: float | None = None
    reaped: bool = False
    history: deque[Transition] = field(default_factory=deque)


class CheckSet:
    def __init__(
        self,
        notify: Notify,
        *,
        allow_scripts: bool = False,
        state_dir: Path | None = None,
        on_critical_too_long: OnCriticalTooLong | None = None,
        alias_source: AliasSource | None = None,
        node_name: str = "",
        clock: Clock | None = None,
        rng: random.Random | None = None,
        probes: ProbeKit | None = None,
        reap_interval: float = REAP_INTERVAL,
        min_interval: float = MIN_INTERVAL,
        min_deregister_after: float = MIN_DEREGISTER_AFTER,
        output_max_size: int = OUTPUT_MAX_SIZE,
        history_size: int = HISTORY_SIZE,
    ):
        self._notify = notify
        self.allow_scripts = allow_scripts
        self._store = TTLStore(state_dir) if state_dir is not None else None
        self._on_critical_too_long = on_critical_too_long
        self._clock: Clock = clock or LoopClock()
        self._rng = rng or random.Random()
        self._probes = probes or ProbeKit(alias_source=alias_source, node_name=node_name)
        self._reap_interval = reap_interval
        self._min_interval = min_interval
        self._min_deregister_after = min_deregister_after
        self._output_max_size = output_max_size
        self._history_size = history_size
        self._entries: dict[str, _Entry] = {}
        self._group: asyncio.TaskGroup | None = None
        self._reaper: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------
    async def __aenter__(self) -> CheckSet:
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        self._reaper = self._group.create_task(self._reap_loop(), name="checks-reaper")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()
        group, self._group = self._group, None
        if group is not None:
            await group.__aexit__(exc_type, exc, tb)

    async def stop(self) -> None:
        """Cancel every check task and the reaper, and wait until they are gone."""
        tasks = [e.task for e in self._entries.values() if e.task is not None]
        if self._reaper is not None:
            tasks.append(self._reaper)
            self._reaper = None
        for entry in self._entries.values():
            entry.task = None
        await _cancel_all(tasks)
        await self._probes.close()

    # --- queries ---------------------------------------------------------------------------
    def __contains__(self, check_id: object) -> bool:
        return check_id in self._entries

    def ids(self) -> list[str]:
        return sorted(self._entries)

    def status(self, check_id: str) -> CheckResult:
        return self._entry(check_id).result

    def results(self) -> dict[str, CheckResult]:
        return {cid: e.result for cid, e in self._entries.items()}

    def definition(self, check_id: str) -> CheckDefinition:
        return self._entry(check_id).defn

    def runner(self, check_id: str) -> CheckRunner:
        return self._entry(check_id).runner

    def history(self, check_id: str) -> list[Transition]:
        return list(self._entry(check_id).history)

    def _entry(self, check_id: str) -> _Entry:
        entry = self._entries.get(check_id)
        if entry is None:
            raise UnknownCheck(check_id)
        return entry

    # --- changes ---------------------------------------------------------------------------
    def validate(self, defn: CheckDefinition, *, allow_scripts: bool | None = None) -> None:
        """Raise the error `add` would raise, without changing anything."""
        allowed = self.allow_scripts if allow_scripts is None else allow_scripts
        if defn.kind in SCRIPT_KINDS and not allowed:
            raise ScriptChecksDisabled(defn.check_id)
        self._build_runner(defn)

    def _build_runner(self, defn: CheckDefinition) -> CheckRunner:
        runner = CheckRunner(
            defn,
            probe=None,
            report=self._record,
            clock=self._clock,
            rng=self._rng,
            min_interval=self._min_interval,
        )
        runner.probe = self._probes.build(defn, runner.timeout, output_limit(defn, self._output_max_size))
        return runner

    async def add(self, defn: CheckDefinition, *, allow_scripts: bool | None = None) -> None:
        self.validate(defn, allow_scripts=allow_scripts)
        if defn.check_id in self._entries:
            await self.remove(defn.check_id, forget_state=False)
        await self._start(defn)

    async def _start(self, defn: CheckDefinition) -> None:
        if self._group is None:
            raise RuntimeError("CheckSet is not running (use `async with CheckSet(...)`)")
        runner = self._build_runner(defn)
        initial, reason = CheckResult(defn.status), "initial"
        if runner.ttl is not None and self._store is not None:
            record = await self._store.load(defn.check_id)
            if record is not None and record.fingerprint == fingerprint(defn):
                remaining = record.expires - self._clock.wall()
                if remaining > 0:
                    initial = runner.restore_ttl(record.status, record.output, remaining)
                    reason = "restored"
            elif record is not None:
                await self._store.delete(defn.check_id)
        if defn.check_id in self._entries:  # raced with another add while loading
            await self.remove(defn.check_id, forget_state=False)
        entry = _Entry(defn, runner, initial, history=deque(maxlen=self._history_size))
        self._entries[defn.check_id] = entry
        self._note_transition(entry, None, initial, reason)
        self._call_notify(defn.check_id, initial)
        entry.task = self._group.create_task(runner.run(), name=f"check:{defn.check_id}")

    async def remove(self, check_id: str, *, forget_state: bool = True) -> None:
        entry = self._entries.pop(check_id, None)
        if entry is None:
            raise UnknownCheck(check_id)
        if entry.task is not None:
            await _cancel_all([entry.task])
        if forget_state and self._store is not None and entry.runner.ttl is not None:
            await self._store.delete(check_id)

    async def replace(self, defns: Iterable[CheckDefinition], *, allow_scripts: bool | None = None) -> None:
        wanted = {d.check_id: d for d in defns}
        for defn in wanted.values():
            self.validate(defn, allow_scripts=allow_scripts)
        for check_id in sorted(set(self._entries) - set(wanted)):
            await self.remove(check_id)
        for check_id, defn in wanted.items():
            current = self._entries.get(check_id)
            if current is not None and current.defn == defn:
                continue
            if current is not None:
                await self.remove(check_id, forget_state=False)
            await self._start(defn)

    async def ttl_update(self, check_id: str, status: Status | str, output: str = "") -> CheckResult:
        entry = self._entry(check_id)
        if entry.runner.ttl is None:
            raise NotTTLCheck(check_id)
        try:
            status = Status(status)
        except ValueError:
            raise InvalidStatus(status) from None
        result = entry.runner.ttl_update(status, output)
        self._record(check_id, result, "ttl_update")
        if self._store is not None:
            expires = self._clock.wall() + entry.defn.ttl
            await self._store.save(TTLRecord(check_id, fingerprint(entry.defn), status, output, expires))
        return result

    # --- results ---------------------------------------------------------------------------
    def _record(self, check_id: str, result: CheckResult, reason: str) -> None:
        entry = self._entries.get(check_id)
        if entry is None:
            return
        old = entry.result
        if old == result:
            return
        entry.result = result
        if old.status != result.status:
            self._note_transition(entry, old.status, result, reason)
        self._call_notify(check_id, result)

    def _note_transition(self, entry: _Entry, old: Status | None, result: CheckResult, reason: str) -> None:
        if result.status == Status.CRITICAL:
            if entry.critical_since is None:
                entry.critical_since = self._clock.now()
        else:
            entry.critical_since = None
            entry.reaped = False
        excerpt = result.output[:HISTORY_OUTPUT_EXCERPT]
        entry.history.append(Transition(self._clock.wall(), old, result.status, excerpt, reason))

    def _call_notify(self, check_id: str, result: CheckResult) -> None:
        try:
            self._notify(check_id, result)
        except Exception:
            log.exception("check %s: notify callback failed", check_id)

    # --- deregister_critical_service_after -------------------------------------------------
    def critical_spans(self) -> list[CriticalSpan]:
        spans = []
        for entry in self._entries.values():
            allowed = deregister_after(entry.defn, self._min_deregister_after)
            if allowed and entry.critical_since is not None and not entry.reaped:
                spans.append(CriticalSpan(entry.defn.service_id, entry.critical_since, allowed))
        return spans

    async def reap_once(self) -> list[str]:
        """Tell the owner about every service critical for too long; returns their ids."""
        due = deregister_due(self.critical_spans(), self._clock.now())
        for entry in self._entries.values():
            if entry.defn.service_id in due and entry.critical_since is not None:
                entry.reaped = True
        for service_id in due:
            if self._on_critical_too_long is None:
                continue
            try:
                outcome = self._on_critical_too_long(service_id)
                if inspect.isawaitable(outcome):
                    await outcome
            except Exception:
                log.exception("deregistering critical service %s failed", service_id)
        return due

    async def _reap_loop(self) -> None:
        while True:
            await self._clock.sleep_until(self._clock.now() + self._reap_interval)
            await self.reap_once()


async def _cancel_all(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks)


__all__ = ["CheckKind", "CheckSet", "Notify", "OnCriticalTooLong"]
