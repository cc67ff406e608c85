"""Pure parts of checks/: scheduling math, thresholds, TTL state, alias mirroring, helpers."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from checks.definition import CheckDefinition, CheckKind, Status
from checks.probes.alias import mirror
from checks.probes.common import OutputBuffer, split_host_port
from checks.schedule import (
    CriticalSpan,
    deregister_after,
    deregister_due,
    effective_interval,
    effective_timeout,
    first_run_at,
    next_run_at,
    output_limit,
)
from checks.thresholds import Thresholds
from checks.ttl import TTLState

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL


def defn(**kw) -> CheckDefinition:
    return CheckDefinition(check_id="c", name="c", **kw)


def test_interval_raised_to_one_second():
    assert effective_interval(defn(kind=CheckKind.HTTP, interval=0.1)) == 1.0
    assert effective_interval(defn(kind=CheckKind.HTTP, interval=5)) == 5.0


def test_timeout_defaults_and_cap():
    assert effective_timeout(defn(kind=CheckKind.HTTP, interval=60)) == 10.0
    assert effective_timeout(defn(kind=CheckKind.SCRIPT, interval=60)) == 30.0
    assert effective_timeout(defn(kind=CheckKind.TCP, interval=3)) == 3.0
    assert effective_timeout(defn(kind=CheckKind.TCP, interval=60, timeout=2)) == 2.0
    assert effective_timeout(defn(kind=CheckKind.TCP, interval=5, timeout=20)) == 5.0


def test_output_limit_capped_by_agent():
    assert output_limit(defn(output_max_size=100)) == 100
    assert output_limit(defn(output_max_size=100_000)) == 4096
    assert output_limit(defn(output_max_size=0), agent_max=512) == 512


def test_stagger_within_interval():
    rng = random.Random(7)
    for _ in range(100):
        at = first_run_at(50.0, 10.0, rng)
        assert 50.0 <= at < 60.0


@given(
    planned=st.floats(0, 1e6),
    interval=st.floats(1, 100),
    late=st.floats(0, 1000),
)
def test_next_run_on_grid_after_now(planned, interval, late):
    now = planned + late
    nxt = next_run_at(planned, interval, now)
    assert nxt > now
    assert nxt - interval <= now + 1e-6 * max(1.0, now)
    k = (nxt - planned) / interval
    assert abs(k - round(k)) < 1e-6


def test_next_run_skips_missed_ticks():
    assert next_run_at(10.0, 5.0, 10.5) == 15.0
    assert next_run_at(10.0, 5.0, 23.0) == 25.0  # slow probe: ticks 15 and 20 are skipped
    assert next_run_at(10.0, 5.0, 15.0) == 20.0


def test_deregister_after_floor_and_service_only():
    assert deregister_after(defn(service_id="web", deregister_critical_service_after=5)) == 60.0
    assert deregister_after(defn(service_id="web", deregister_critical_service_after=90)) == 90.0
    assert deregister_after(defn(deregister_critical_service_after=90)) == 0.0
    assert deregister_after(defn(service_id="web")) == 0.0


def test_deregister_due():
    spans = [CriticalSpan("a", 0.0, 60.0), CriticalSpan("b", 50.0, 60.0), CriticalSpan("a", 10.0, 60.0)]
    assert deregister_due(spans, 61.0) == ["a"]
    assert deregister_due(spans, 200.0) == ["a", "b"]
    assert deregister_due(spans, 60.0) == []


def feed(t: Thresholds, statuses):
    return [t.observe(s).report for s in statuses]


def test_thresholds_default_reports_everything():
    t = Thresholds.for_definition(defn())
    assert feed(t, [P, C, W, C]) == [P, C, W, C]


def test_success_before_passing():
    t = Thresholds.for_definition(defn(success_before_passing=3))
    assert feed(t, [P, P, C, P, P, P, P]) == [None, None, C, None, None, P, P]


def test_failures_before_critical_and_warning():
    t = Thresholds.for_definition(defn(failures_before_warning=1, failures_before_critical=3))
    assert feed(t, [C, C, C, C, P, C]) == [W, W, C, C, P, W]
    v = Thresholds.for_definition(defn(failures_before_warning=1, failures_before_critical=3))
    assert [v.observe(s).reason for s in [C, C, C]] == [
        "failures_before_warning",
        "failures_before_warning",
        "failures_before_critical",
    ]


def test_failures_before_warning_defaults_to_critical():
    t = Thresholds.for_definition(defn(failures_before_critical=2))
    assert feed(t, [C, C, P, C, C]) == [None, C, P, None, C]


def test_warning_counts_as_success():
    t = Thresholds.for_definition(defn(success_before_passing=2))
    assert feed(t, [W, W]) == [None, W]


def test_ttl_state_expiry_and_revival():
    s = TTLState(ttl=10.0)
    s.start(now=100.0)
    assert not s.due(109.9) and s.due(110.0)
    assert s.expire().output == "TTL expired"
    assert s.deadline is None and not s.due(1e9)
    s.update(P, "ok", now=200.0)
    assert s.remaining(205.0) == 5.0
    result = s.expire()
    assert result.status == C
    assert result.output == "TTL expired (last output before timeout follows): ok"


def test_ttl_restore_caps_remaining():
    s = TTLState(ttl=10.0)
    s.restore(W, "w", remaining=50.0, now=0.0)
    assert s.deadline == 10.0 and s.status == W


def test_alias_mirror():
    assert mirror([], "n", "web").output == "No checks found."
    assert mirror([P, P], "n", "web").status == P
    assert mirror([P, W], "n", "web").status == W
    assert mirror([W, C], "n", "web").status == C
    assert mirror(None, "n", "web").status == C


def test_output_buffer_keeps_tail():
    b = OutputBuffer(4)
    b.write(b"abc")
    assert b.text() == "abc"
    b.write(b"defg")
    assert b.text() == "Captured 4 of 7 bytes\n...\ndefg"


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:53", ("::1", 53)), ("host:1", ("host", 1))],
)
def test_split_host_port(addr, expected):
    assert split_host_port(addr) == expected


@pytest.mark.parametrize("addr", ["nope", "::1:53", "h:0", "h:x", "[::1]"])
def test_split_host_port_rejects(addr):
    with pytest.raises(ValueError):
        split_host_port(addr)
