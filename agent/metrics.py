"""A small metrics registry with Consul's JSON shape and Prometheus text output (layer 2).

Contract:
- `Metrics(prefix)` is owned by the agent and passed to whoever records; there is no global
  registry. Names are dotted without the prefix (`raft.apply`); outputs add it (`consul.raft.apply`,
  Prometheus `consul_raft_apply`). Labels are a dict of strings.
- `incr(name, value, labels)` — counter; `set_gauge(name, value, labels)` — gauge;
  `observe(name, value, labels)` — sample (timers in milliseconds, like go-metrics). Recording is
  O(1) and never blocks. `add_source(fn)` registers a function called at scrape time that yields
  `(name, labels, value)` gauges (catalog sizes, check counts, runtime facts): those are computed
  fresh on every scrape, never stale. `add_source(fn, counter=True)` does the same for totals
  another component already counts (DNS queries, cache hits): they are shown as counters.
- `to_json()` → `{"Timestamp", "Gauges", "Points", "Counters", "Samples"}` as Consul's
  `/v1/agent/metrics`. Aggregates are cumulative since start (Consul shows its last 10 s
  interval); `Rate` is Sum per second over the registry's lifetime.
- `to_prometheus()` → text exposition format 0.0.4: one `# HELP`/`# TYPE` block per family,
  counters, gauges, and samples as summaries (quantiles 0.5/0.9/0.99 over the last
  `SAMPLE_WINDOW` observations, plus `_sum`/`_count`). Names and label names are sanitised,
  label values escaped.
- `runtime_gauges()`, `catalog_gauges(store)`, `check_gauges(statuses)` are ready-made sources;
  `sample_loop_lag(metrics, interval)` is a task measuring how late the event loop wakes.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Protocol

import psutil

DEFAULT_PREFIX = "consul"  # Consul's telemetry.metrics_prefix, so existing dashboards work
SAMPLE_WINDOW = 1024  # observations kept per sample series for quantiles
QUANTILES = (0.5, 0.9, 0.99)
LAG_INTERVAL = 0.5  # seconds between event-loop lag probes

Labels = tuple[tuple[str, str], ...]
Gauge = tuple[str, dict[str, str], float]
Source = Callable[[], Iterable[Gauge]]

_BAD_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")
HELP: dict[str, str] = {
    "api.http": "HTTP API requests served through the router, by method, route and status (ms)",
    "raft.apply": "Raft log entries applied",
    "raft.commitTime": "time to append and fsync a batch of Raft entries (ms)",
    "raft.state.leader": "times this server became leader",
    "raft.leader.lastContact": "ms since the leader was last heard from (0 on the leader)",
    "raft.applied_index": "last applied Raft index",
    "dns.queries": "DNS queries received, by transport",
    "dns.cache_hits": "DNS queries answered from the answer cache",
    "dns.query_time": "time to answer a DNS query that missed the cache (ms)",
    "state.nodes": "nodes in the catalog",
    "state.services": "distinct services in the catalog",
    "state.service_instances": "service instances in the catalog",
    "state.checks": "health checks in the catalog, by status",
    "agent.checks": "checks registered with this agent, by status",
    "agent.monitor.dropped": "log lines dropped because a monitor client was too slow",
    "runtime.event_loop_lag": "how late the event loop woke a timer (ms)",
    "runtime.rss_bytes": "resident set size of the agent process",
    "runtime.open_fds": "open file descriptors",
    "runtime.num_tasks": "asyncio tasks alive",
    "runtime.total_gc_runs": "garbage collector runs, all generations",
    "runtime.gc_objects": "objects tracked by the garbage collector (generation counts)",
    "runtime.cpu_seconds": "CPU time used by the agent process (user + system)",
}


def _key(labels: dict[str, str] | None) -> Labels:
    return tuple(sorted(labels.items())) if labels else ()


class _Aggregate:
    __slots__ = ("count", "max", "min", "recent", "sum", "sumsq")

    def __init__(self, keep: bool) -> None:
        self.count = 0
        self.sum = 0.0
        self.sumsq = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.recent: deque[float] | None = deque(maxlen=SAMPLE_WINDOW) if keep else None

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.sumsq += value * value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if self.recent is not None:
            self.recent.append(value)

    def json(self, name: str, labels: Labels, seconds: float) -> dict:
        mean = self.sum / self.count if self.count else 0.0
        variance = self.sumsq / self.count - mean * mean if self.count > 1 else 0.0
        return {"Name": name, "Count": self.count, "Rate": self.sum / seconds if seconds > 0 else 0.0,
                "Sum": self.sum, "Min": self.min if self.count else 0.0, "Max": self.max if self.count else 0.0,
                "Mean": mean, "Stddev": math.sqrt(max(variance, 0.0)), "Labels": dict(labels)}

    def quantile(self, q: float) -> float:
        if not self.recent:
            return math.nan
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class Metrics:
    def __init__(self, prefix: str = DEFAULT_PREFIX, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self._clock = clock
        self._wall = wall
        self._started = clock()
        self._counters: dict[str, dict[Labels, _Aggregate]] = {}
        self._samples: dict[str, dict[Labels, _Aggregate]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._sources: list[Source] = []
        self._counter_sources: list[Source] = []

    # --- recording ---
    def incr(self, name: str, value: float = 1.0, labels: dict[str, str] | None = None) -> None:
        series = self._counters.setdefault(name, {})
        key = _key(labels)
        agg = series.get(key)
        if agg is None:
            agg = series[key] = _Aggregate(keep=False)
        agg.add(value)

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        series = self._samples.setdefault(name, {})
        key = _key(labels)
        agg = series.get(key)
        if agg is None:
            agg = series[key] = _Aggregate(keep=True)
        agg.add(value)

    def set_gauge(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        self._gauges.setdefault(name, {})[_key(labels)] = float(value)

    def add_source(self, source: Source, *, counter: bool = False) -> None:
        (self._counter_sources if counter else self._sources).append(source)

    # --- reading ---
    def counter_value(self, name: str, labels: dict[str, str] | None = None) -> float:
        agg = self.counters().get(name, {}).get(_key(labels))
        return agg.sum if agg else 0.0

    def counters(self) -> dict[str, dict[Labels, _Aggregate]]:
        """Recorded counters plus the counter sources' current totals."""
        out = {name: dict(series) for name, series in self._counters.items()}
        for source in self._counter_sources:
            for name, labels, value in source():
                agg = _Aggregate(keep=False)
                agg.add(float(value))
                agg.count = int(value)
                out.setdefault(name, {})[_key(labels)] = agg
        return out

    def gauges(self) -> dict[str, dict[Labels, float]]:
        """Set gauges merged with the sources' fresh values (sources win)."""
        out = {name: dict(series) for name, series in self._gauges.items()}
        for source in self._sources:
            for name, labels, value in source():
                out.setdefault(name, {})[_key(labels)] = float(value)
        return out

    def _full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def to_json(self) -> dict:
        seconds = self._clock() - self._started
        stamp = datetime.fromtimestamp(self._wall(), UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
        gauges = [{"Name": self._full(name), "Value": value, "Labels": dict(labels)}
                  for name, series in sorted(self.gauges().items()) for labels, value in sorted(series.items())]

        def aggregates(table: dict[str, dict[Labels, _Aggregate]]) -> list[dict]:
            return [agg.json(self._full(name), labels, seconds)
                    for name, series in sorted(table.items()) for labels, agg in sorted(series.items())]

        return {"Timestamp": stamp, "Gauges": gauges, "Points": [],
                "Counters": aggregates(self.counters()), "Samples": aggregates(self._samples)}

    def to_prometheus(self) -> str:
        lines: list[str] = []
        families: dict[str, tuple[str, str, Callable[[str], Iterator[str]]]] = {}
        for name, series in self.gauges().items():
            families[prom_name(self._full(name))] = (name, "gauge", _gauge_lines(series))
        for name, table in self.counters().items():
            families[prom_name(self._full(name))] = (name, "counter", _counter_lines(table))
        for name, table in self._samples.items():
            families[prom_name(self._full(name))] = (name, "summary", _summary_lines(table))
        for family in sorted(families):
            name, kind, render = families[family]
            lines.append(f"# HELP {family} {_escape_help(HELP.get(name, self._full(name)))}")
            lines.append(f"# TYPE {family} {kind}")
            lines.extend(render(family))
        return "\n".join(lines) + "\n"


# --- Prometheus text format helpers ---
def prom_name(name: str) -> str:
    out = _BAD_NAME.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


def _label_name(name: str) -> str:
    out = _BAD_LABEL.sub("_", name)
    return "_" + out if not out or out[0].isdigit() else out


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _labels(labels: Labels, extra: tuple[str, str] | None = None) -> str:
    pairs = [*labels, extra] if extra else list(labels)
    if not pairs:
        return ""
    return "{" + ",".join(f'{_label_name(k)}="{_escape_value(v)}"' for k, v in pairs) + "}"


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() or abs(value) >= 1e15 else str(int(value))


def _gauge_lines(series: dict[Labels, float]) -> Callable[[str], Iterator[str]]:
    def render(family: str) -> Iterator[str]:
        for labels, value in sorted(series.items()):
            yield f"{family}{_labels(labels)} {_number(value)}"
    return render


def _counter_lines(table: dict[Labels, _Aggregate]) -> Callable[[str], Iterator[str]]:
    def render(family: str) -> Iterator[str]:
        for labels, agg in sorted(table.items()):
            yield f"{family}{_labels(labels)} {_number(agg.sum)}"
    return render


def _summary_lines(table: dict[Labels, _Aggregate]) -> Callable[[str], Iterator[str]]:
    def render(family: str) -> Iterator[str]:
        for labels, agg in sorted(table.items()):
            for q in QUANTILES:
                yield f"{family}{_labels(labels, ('quantile', str(q)))} {_number(agg.quantile(q))}"
            yield f"{family}_sum{_labels(labels)} {_number(agg.sum)}"
            yield f"{family}_count{_labels(labels)} {agg.count}"
    return render


# --- ready-made sources ---
class _Store(Protocol):
    def nodes(self) -> tuple[int, list]: ...
    def services(self) -> tuple[int, dict[str, list[str]]]: ...
    def service_nodes(self, service: str) -> tuple[int, list]: ...
    def checks_in_state(self, state: str) -> tuple[int, list]: ...


STATUSES = ("passing", "warning", "critical")


def catalog_gauges(store: _Store) -> Iterator[Gauge]:
    _, nodes = store.nodes()
    _, services = store.services()
    yield "state.nodes", {}, len(nodes)
    yield "state.services", {}, len(services)
    yield "state.service_instances", {}, sum(len(store.service_nodes(name)[1]) for name in services)
    for status in STATUSES:
        yield "state.checks", {"status": status}, len(store.checks_in_state(status)[1])


def check_gauges(statuses: Iterable[str], name: str = "agent.checks") -> Iterator[Gauge]:
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    for status, count in sorted(counts.items()):
        yield name, {"status": status}, count


def runtime_gauges(process: psutil.Process | None = None) -> Iterator[Gauge]:
    proc = process or psutil.Process(os.getpid())
    with proc.oneshot():
        memory = proc.memory_info()
        cpu = proc.cpu_times()
        yield "runtime.rss_bytes", {}, memory.rss
        yield "runtime.vms_bytes", {}, memory.vms
        yield "runtime.open_fds", {}, proc.num_fds()
        yield "runtime.cpu_seconds", {}, cpu.user + cpu.system
    stats = gc.get_stats()
    yield "runtime.total_gc_runs", {}, sum(s["collections"] for s in stats)
    for generation, count in enumerate(gc.get_count()):
        yield "runtime.gc_objects", {"generation": str(generation)}, count
    try:
        yield "runtime.num_tasks", {}, len(asyncio.all_tasks())
    except RuntimeError:  # no running loop (a scrape outside the agent, e.g. in a unit test)
        pass


async def sample_loop_lag(metrics: Metrics, interval: float = LAG_INTERVAL) -> None:
    """Sleep `interval` again and again; how much later than asked the loop woke is the lag."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        lag_ms = max(0.0, (loop.time() - asked) * 1000.0)
        metrics.observe("runtime.event_loop_lag", lag_ms)
        metrics.set_gauge("runtime.event_loop_lag_last", lag_ms)
