"""CheckRunner and CheckSet with a fake clock: stagger, interval, skipping, thresholds, TTL,
deregister-after, reload semantics, persistence and error classes. No sleeps."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest

from checks.checkset import CheckSet
from checks.clock import FakeClock
from checks.definition import CheckDefinition, CheckKind, Status
from checks.errors import InvalidStatus, NotTTLCheck, ScriptChecksDisabled, UnknownCheck, UnsupportedCheck
from checks.probes import ProbeKit
from checks.result import CheckResult
from checks.runner import CheckRunner

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL


class ScriptedProbes(ProbeKit):
    """A ProbeKit whose probes answer from per-check queues and record when they ran."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock
        self.answers: dict[str, list[CheckResult]] = {}
        self.calls: dict[str, list[float]] = {}
        self.delay: dict[str, float] = {}

    def build(self, defn, timeout, output_limit):
        if defn.kind in (CheckKind.TTL, CheckKind.NONE):
            return None

        async def probe() -> CheckResult:
            self.calls.setdefault(defn.check_id, []).append(self.clock.now())
            if delay := self.delay.get(defn.check_id):
                await self.clock.sleep_until(self.clock.now() + delay)
            queue = self.answers.get(defn.check_id) or [CheckResult.passing("ok")]
            return queue.pop(0) if len(queue) > 1 else queue[0]

        return probe


def http_check(check_id="web-http", **kw) -> CheckDefinition:
    kw.setdefault("interval", 10.0)
    return CheckDefinition(check_id=check_id, name=check_id, kind=CheckKind.HTTP, http="http://x/", **kw)


def ttl_check(check_id="app-ttl", ttl=30.0, **kw) -> CheckDefinition:
    return CheckDefinition(check_id=check_id, name=check_id, kind=CheckKind.TTL, ttl=ttl, **kw)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def probes(clock):
    return ScriptedProbes(clock)


def make_set(clock, probes, notes, seed=1, **kw) -> CheckSet:
    return CheckSet(
        lambda cid, r: notes.append((cid, r)),
        clock=clock,
        rng=random.Random(seed),
        probes=probes,
        **kw,
    )


async def test_stagger_then_fixed_grid(clock, probes):
    seed = random.randrange(2**32)
    notes: list = []
    async with make_set(clock, probes, notes, seed=seed) as checks:
        await checks.add(http_check(interval=10.0))
        start = clock.now()
        await clock.advance(45.0)
        calls = probes.calls["web-http"]
        assert 4 <= len(calls) <= 5, f"seed={seed}"
        first = calls[0]
        assert start <= first < start + 10.0, f"seed={seed}"
        assert calls == [pytest.approx(first + 10.0 * i) for i in range(len(calls))], f"seed={seed}"


async def test_initial_status_then_change_notified_once(clock, probes):
    notes: list = []
    async with make_set(clock, probes, notes) as checks:
        await checks.add(http_check(status=Status.WARNING))
        assert notes == [("web-http", CheckResult(W, ""))]
        await clock.advance(35.0)  # several passing runs with the same output
        assert notes[1:] == [("web-http", CheckResult(P, "ok"))]
        assert checks.status("web-http") == CheckResult(P, "ok")
        assert [t.reason for t in checks.history("web-http")] == ["initial", "probe"]


async def test_slow_probe_skips_ticks_no_pileup(clock, probes):
    probes.delay["web-http"] = 25.0  # longer than the interval
    notes: list = []
    async with make_set(clock, probes, notes) as checks:
        await checks.add(http_check(interval=10.0))
        await clock.advance(100.0)
        calls = probes.calls["web-http"]
        gaps = [b - a for a, b in itertools.pairwise(calls)]
        assert gaps and all(g == pytest.approx(30.0) for g in gaps)  # runs at t, t+30, t+60: never overlap


async def test_thresholds_through_the_runner(clock, probes):
    probes.answers["web-http"] = [CheckResult.critical("down")] * 3 + [CheckResult.passing("up")] * 3
    notes: list = []
    defn = http_check(
        status=Status.PASSING, failures_before_warning=1, failures_before_critical=3, success_before_passing=2
    )
    async with make_set(clock, probes, notes) as checks:
        await checks.add(defn)
        await clock.advance(60.0)
        statuses = [r.status for _, r in notes]
        assert statuses == [P, W, C, P]
        assert [t.reason for t in checks.history("web-http")] == [
            "initial",
            "failures_before_warning",
            "failures_before_critical",
            "success_before_passing",
        ]


async def test_probe_exception_is_critical_and_runner_survives(clock):
    calls = []

    async def bad_probe() -> CheckResult:
        calls.append(clock.now())
        raise RuntimeError("boom")

    reports: list = []
    runner = CheckRunner(
        http_check(), probe=bad_probe, report=lambda *a: reports.append(a), clock=clock, rng=random.Random(3)
    )
    task = asyncio.create_task(runner.run())
    await clock.advance(30.0)
    task.cancel()
    await asyncio.wait([task])
    assert len(calls) == 3
    assert reports[0][1].status == C and "boom" in reports[0][1].output


async def test_ttl_pass_warn_fail_and_expiry(clock, probes):
    notes: list = []
    async with make_set(clock, probes, notes) as checks:
        await checks.add(ttl_check(ttl=30.0))
        await checks.ttl_update("app-ttl", "passing", "fine")
        await clock.advance(20.0)
        await checks.ttl_update("app-ttl", Status.WARNING, "slow")
        await clock.advance(20.0)  # 40 s since the first update, 20 since the last
        assert checks.status("app-ttl") == CheckResult(W, "slow")
        await checks.ttl_update("app-ttl", Status.CRITICAL, "bad")
        await clock.advance(29.0)
        assert checks.status("app-ttl").output == "bad"
        await clock.advance(2.0)
        assert checks.status("app-ttl") == CheckResult(
            C, "TTL expired (last output before timeout follows): bad"
        )
        await checks.ttl_update("app-ttl", Status.PASSING, "")
        assert checks.status("app-ttl").status == P
        await clock.advance(31.0)
        assert checks.status("app-ttl") == CheckResult(C, "TTL expired")
        assert checks.history("app-ttl")[-1].reason == "ttl_expired"


async def test_ttl_expires_without_any_update(clock, probes):
    notes: list = []
    async with make_set(clock, probes, notes) as checks:
        await checks.add(ttl_check(ttl=5.0, status=Status.PASSING))
        await clock.advance(5.0)
        assert checks.status("app-ttl") == CheckResult(C, "TTL expired")


async def test_ttl_update_errors(clock, probes):
    async with make_set(clock, probes, []) as checks:
        await checks.add(http_check())
        await checks.add(ttl_check())
        with pytest.raises(UnknownCheck):
            await checks.ttl_update("nope", "passing")
        with pytest.raises(NotTTLCheck):
            await checks.ttl_update("web-http", "passing")
        with pytest.raises(InvalidStatus):
            await checks.ttl_update("app-ttl", "maintenance")
        with pytest.raises(UnknownCheck):
            await checks.remove("nope")


async def test_script_checks_refused_unless_allowed(clock, probes):
    script = CheckDefinition(check_id="s", name="s", kind=CheckKind.SCRIPT, args=["true"], interval=10)
    async with make_set(clock, probes, []) as checks:
        with pytest.raises(ScriptChecksDisabled):
            await checks.add(script)
        assert "s" not in checks
        await checks.add(script, allow_scripts=True)
        assert "s" in checks


async def test_unsupported_kinds_refused(clock):
    docker = CheckDefinition(
        check_id="d", name="d", kind=CheckKind.DOCKER, args=["x"], interval=10, docker_container_id="abc"
    )
    alias = CheckDefinition(check_id="a", name="a", kind=CheckKind.ALIAS, alias_service="web")
    async with CheckSet(lambda *a: None, clock=clock, allow_scripts=True) as checks:
        for bad in (docker, alias):
            with pytest.raises(UnsupportedCheck):
                await checks.add(bad)


async def test_alias_mirrors_source(clock):
    state = {"web": [P]}

    async def source(node, service_id):
        return state.get(service_id)

    notes: list = []
    alias = CheckDefinition(check_id="a", name="a", kind=CheckKind.ALIAS, alias_service="web")
    async with CheckSet(
        lambda cid, r: notes.append(r), clock=clock, rng=random.Random(1), alias_source=source
    ) as checks:
        await checks.add(alias)
        await clock.advance(1.0)
        assert checks.status("a") == CheckResult(P, "All checks passing.")
        state["web"] = [P, C]
        await clock.advance(1.0)
        assert checks.status("a").status == C


async def test_replace_keeps_unchanged_restarts_changed(clock, probes):
    notes: list = []
    a, b, c = http_check("a"), http_check("b"), http_check("c")
    async with make_set(clock, probes, notes) as checks:
        await checks.replace([a, b, c])
        await clock.advance(15.0)
        runner_a, task_b = checks.runner("a"), checks._entries["b"].task
        b2 = http_check("b", interval=20.0)
        await checks.replace([a, b2, http_check("d")])
        assert checks.ids() == ["a", "b", "d"]
        assert checks.runner("a") is runner_a  # unchanged: same runner, still running
        assert task_b is not None and task_b.done()  # changed: old task gone
        assert checks.definition("b").interval == 20.0
        before = len(probes.calls.get("c", []))
        await clock.advance(30.0)
        assert len(probes.calls.get("c", [])) == before  # removed: never runs again
        live = [e.task for e in checks._entries.values()]
        assert all(t is not None and not t.done() for t in live)
    assert all(t.done() for t in live)


async def test_replace_validates_everything_first(clock, probes):
    script = CheckDefinition(check_id="s", name="s", kind=CheckKind.SCRIPT, args=["true"], interval=10)
    async with make_set(clock, probes, []) as checks:
        await checks.replace([http_check("a")])
        with pytest.raises(ScriptChecksDisabled):
            await checks.replace([http_check("b"), script])
        assert checks.ids() == ["a"]


async def test_deregister_critical_service_after(clock, probes):
    reaped: list[str] = []
    probes.answers["svc-check"] = [CheckResult.critical("down")]
    defn = http_check("svc-check", service_id="web", deregister_critical_service_after=90.0)
    async with make_set(clock, probes, [], on_critical_too_long=reaped.append, reap_interval=5.0) as checks:
        await checks.add(defn)
        await clock.advance(85.0)
        assert reaped == []
        await clock.advance(10.0)
        assert reaped == ["web"]
        await clock.advance(100.0)
        assert reaped == ["web"]  # once per critical episode


async def test_deregister_async_callback_and_recovery_resets(clock, probes):
    reaped: list[str] = []

    async def on_critical(service_id: str) -> None:
        reaped.append(service_id)

    probes.answers["k"] = [CheckResult.passing("up")]
    defn = http_check("k", service_id="db", deregister_critical_service_after=60.0, interval=10.0)
    async with make_set(clock, probes, [], on_critical_too_long=on_critical, reap_interval=5.0) as checks:
        await checks.add(defn)  # starts critical, then passes at its first run
        await clock.advance(200.0)
        assert reaped == []


async def test_ttl_state_persisted_and_restored(clock, probes, tmp_path):
    async with make_set(clock, probes, [], state_dir=tmp_path) as checks:
        await checks.add(ttl_check(ttl=60.0))
        await checks.ttl_update("app-ttl", Status.WARNING, "degraded")
    assert len(list(tmp_path.glob("*.json"))) == 1
    await clock.advance(10.0)
    notes: list = []
    async with make_set(clock, probes, notes, state_dir=tmp_path) as checks:
        await checks.add(ttl_check(ttl=60.0))
        assert notes == [("app-ttl", CheckResult(W, "degraded"))]
        assert checks.history("app-ttl")[0].reason == "restored"
        await clock.advance(49.0)
        assert checks.status("app-ttl").status == W
        await clock.advance(2.0)  # the restored deadline, not a fresh 60 s
        assert checks.status("app-ttl").status == C


async def test_ttl_state_not_restored_when_changed_or_expired(clock, probes, tmp_path):
    async with make_set(clock, probes, [], state_dir=tmp_path) as checks:
        await checks.add(ttl_check(ttl=60.0))
        await checks.ttl_update("app-ttl", Status.PASSING, "ok")
    async with make_set(clock, probes, [], state_dir=tmp_path) as checks:
        await checks.add(ttl_check(ttl=60.0, notes="changed"))
        assert checks.status("app-ttl") == CheckResult(C, "")
    assert list(tmp_path.glob("*.json")) == []
    async with make_set(clock, probes, [], state_dir=tmp_path) as checks:
        await checks.add(ttl_check(ttl=60.0))
        await checks.ttl_update("app-ttl", Status.PASSING, "ok")
    await clock.advance(61.0)
    async with make_set(clock, probes, [], state_dir=tmp_path) as checks:
        await checks.add(ttl_check(ttl=60.0))
        assert checks.status("app-ttl").status == C
        await checks.remove("app-ttl")
    assert list(tmp_path.glob("*.json")) == []


async def test_corrupt_state_file_ignored(clock, probes, tmp_path):
    async with make_set(clock, probes, [], state_dir=tmp_path) as checks:
        await checks.add(ttl_check())
        await checks.ttl_update("app-ttl", Status.PASSING, "ok")
    for path in tmp_path.glob("*.json"):
        path.write_text("{not json")
    async with make_set(clock, probes, [], state_dir=tmp_path) as checks:
        await checks.add(ttl_check())
        assert checks.status("app-ttl").status == C


async def test_notify_failure_does_not_break_checks(clock, probes):
    def notify(cid, result):
        raise RuntimeError("listener bug")

    async with CheckSet(notify, clock=clock, rng=random.Random(1), probes=probes) as checks:
        await checks.add(http_check())
        await clock.advance(20.0)
        assert checks.status("web-http").status == P


async def test_catalog_only_check_is_static(clock, probes):
    static = CheckDefinition(check_id="m", name="m", status=Status.CRITICAL)
    async with make_set(clock, probes, []) as checks:
        await checks.add(static)
        await clock.advance(100.0)
        assert checks.status("m") == CheckResult(C, "")
