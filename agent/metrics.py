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
  `/v1/agent/metrics` (go-metrics' inmem sink): recording goes to 10-second intervals aligned to
  the wall clock (`INTERVAL`); the registry keeps the current interval and the last completed
  one and answers with the completed one (the current one until a first interval completes).
  `Timestamp` is that interval's start; Counters and Samples hold only what was recorded in it
  (`Rate` = Sum / 10 s, `Stddev` the sample standard deviation, as go-metrics); Gauges are the
  values set in it plus the sources' fresh values. Counter sources are shown as the increase
  of their totals over the interval (sampled when an interval rolls over; recording or a
  scrape rolls it, and the agent's loop-lag sampler records every 0.5 s; an interval nobody
  touched shows no increase). A counter or sample with nothing in the interval is left out.
- `to_prometheus()` → text exposition format 0.0.4, cumulative since start (Prometheus computes
  rates itself): one `# HELP`/`# TYPE` block per family, counters, gauges, and samples as
  summaries (quantiles 0.5/0.9/0.99 over the last `SAMPLE_WINDOW` observations, plus
  `_sum`/`_count`). Names and label names are sanitised, label values escaped.
- `runtime_gauges()`, `catalog_gauges(store)`, `check_gauges(statuses)`, `member_gauges(statuses)`
  (serf.members by status) and `gossip_counters(stats)` (the gossip node's counters under
  memberlist.* names, `GOSSIP_COUNTERS`) are ready-made sources;
  `sample_loop_lag(metrics, interval)` is a task measuring how late the event loop wakes.
"""

from __future__ import annotations

import asyncio
import gc
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

import psutil

from agent.metrics_text import Labels, counter_lines, escape_help, gauge_lines, prom_name, summary_lines

DEFAULT_PREFIX = "consul"  # Consul's telemetry.metrics_prefix, so existing dashboards work
SAMPLE_WINDOW = 1024  # observations kept per sample series for quantiles
LAG_INTERVAL = 0.5  # seconds between event-loop lag probes
INTERVAL = 10.0  # seconds per JSON interval: Consul's inmem sink (telemetry) aggregates 10 s intervals

Gauge = tuple[str, dict[str, str], float]
Source = Callable[[], Iterable[Gauge]]

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
    "serf.members": "LAN gossip members known to this agent, by status",
    "serf.lan.members": "LAN gossip members known to this agent (any status)",
    "memberlist.health.score": "Lifeguard awareness: 0 healthy, higher when this agent misses acks",
    "memberlist.probes": "failure-detector probes sent to other members",
    "memberlist.indirect_probes": "indirect probes (ping-req) sent through other members",
    "memberlist.acks": "probe acks received",
    "memberlist.msg.suspect": "members this agent marked suspect (own probe or gossip)",
    "memberlist.msg.dead": "members this agent marked failed",
    "memberlist.refutes": "times this agent refuted a suspicion or death about itself",
    "memberlist.push_pulls": "full state exchanges (push-pull) with other members",
    "memberlist.tcp_pings": "fallback pings sent over TCP while a UDP probe went unanswered",
    "memberlist.unauthenticated": "gossip packets dropped because they did not authenticate (wrong or no key)",
    "memberlist.malformed": "gossip packets or messages dropped as malformed",
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
        n = self.count
        mean = self.sum / n if n else 0.0
        # go-metrics AggregateSample.Stddev: the sample (n - 1) standard deviation
        variance = (n * self.sumsq - self.sum * self.sum) / (n * (n - 1)) if n > 1 else 0.0
        return {"Name": name, "Count": n, "Rate": self.sum / seconds if seconds > 0 else 0.0,
                "Sum": self.sum, "Min": self.min if n else 0.0, "Max": self.max if n else 0.0,
                "Mean": mean, "Stddev": math.sqrt(max(variance, 0.0)), "Labels": dict(labels)}

    def quantile(self, q: float) -> float:
        if not self.recent:
            return math.nan
        ordered = sorted(self.recent)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


class _Interval:
    """What was recorded during one JSON interval (see the module docstring)."""

    __slots__ = ("base", "counters", "gauges", "increase", "samples", "start")

    def __init__(self, start: float, base: dict[tuple[str, Labels], float]) -> None:
        self.start = start
        self.base = base  # the counter sources' totals when the interval opened
        self.increase: dict[tuple[str, Labels], float] | None = None  # set when it closes
        self.counters: dict[str, dict[Labels, _Aggregate]] = {}
        self.samples: dict[str, dict[Labels, _Aggregate]] = {}
        self.gauges: dict[str, dict[Labels, float]] = {}

    def close(self, totals: dict[tuple[str, Labels], float]) -> None:
        self.increase = _increase(self.base, totals)


def _increase(base: dict[tuple[str, Labels], float], totals: dict[tuple[str, Labels], float]) -> dict:
    return {key: value - base.get(key, 0.0) for key, value in totals.items() if value - base.get(key, 0.0) > 0}


def _add(table: dict[str, dict[Labels, _Aggregate]], name: str, key: Labels, value: float, keep: bool) -> None:
    series = table.get(name)
    if series is None:
        series = table[name] = {}
    agg = series.get(key)
    if agg is None:
        agg = series[key] = _Aggregate(keep=keep)
    agg.add(value)


class Metrics:
    def __init__(self, prefix: str = DEFAULT_PREFIX, *, wall: Callable[[], float] = time.time,
                 interval: float = INTERVAL) -> None:
        self.prefix = prefix
        self.interval = interval
        self._wall = wall
        self._counters: dict[str, dict[Labels, _Aggregate]] = {}
        self._samples: dict[str, dict[Labels, _Aggregate]] = {}
        self._gauges: dict[str, dict[Labels, float]] = {}
        self._sources: list[Source] = []
        self._counter_sources: list[Source] = []
        self._current = _Interval(self._interval_start(), {})
        self._previous: _Interval | None = None

    # --- recording ---
    def incr(self, name: str, value: float = 1.0, labels: dict[str, str] | None = None) -> None:
        key = _key(labels)
        _add(self._counters, name, key, value, False)
        _add(self._interval().counters, name, key, value, False)

    def observe(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        key = _key(labels)
        _add(self._samples, name, key, value, True)
        _add(self._interval().samples, name, key, value, False)

    def set_gauge(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        key = _key(labels)
        self._gauges.setdefault(name, {})[key] = float(value)
        self._interval().gauges.setdefault(name, {})[key] = float(value)

    def add_source(self, source: Source, *, counter: bool = False) -> None:
        (self._counter_sources if counter else self._sources).append(source)

    # --- intervals ---
    def _interval_start(self) -> float:
        return math.floor(self._wall() / self.interval) * self.interval

    def _interval(self) -> _Interval:
        """The current interval, rolling over first when the wall clock has left it (a clock
        stepping back keeps recording into the current one)."""
        current = self._current
        start = self._interval_start()
        if start <= current.start:
            return current
        totals = self._source_totals()
        current.close(totals)
        if start - current.start < 2 * self.interval - 1e-6:
            self._previous = current
        else:  # whole intervals passed untouched: the last completed one is empty
            self._previous = _Interval(start - self.interval, totals)
            self._previous.close(totals)
        self._current = _Interval(start, totals)
        return self._current

    def _source_totals(self) -> dict[tuple[str, Labels], float]:
        return {(name, _key(labels)): float(value)
                for source in self._counter_sources for name, labels, value in source()}

    # --- reading ---
    def counter_value(self, name: str, labels: dict[str, str] | None = None) -> float:
        """The cumulative total (what Prometheus shows)."""
        agg = self.counters().get(name, {}).get(_key(labels))
        return agg.sum if agg else 0.0

    def counters(self) -> dict[str, dict[Labels, _Aggregate]]:
        """Cumulative recorded counters plus the counter sources' current totals."""
        out = {name: dict(series) for name, series in self._counters.items()}
        for (name, key), value in self._source_totals().items():
            out.setdefault(name, {})[key] = _total(value)
        return out

    def gauges(self) -> dict[str, dict[Labels, float]]:
        """The last value of every set gauge merged with the sources' fresh values (sources win)."""
        return self._with_sources(self._gauges)

    def _with_sources(self, gauges: dict[str, dict[Labels, float]]) -> dict[str, dict[Labels, float]]:
        out = {name: dict(series) for name, series in gauges.items()}
        for source in self._sources:
            for name, labels, value in source():
                out.setdefault(name, {})[_key(labels)] = float(value)
        return out

    def _full(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def to_json(self) -> dict:
        current = self._interval()
        shown = self._previous or current  # the last completed interval, else the one in progress
        increase = shown.increase if shown.increase is not None else _increase(shown.base, self._source_totals())
        counters = {name: dict(series) for name, series in shown.counters.items()}
        for (name, key), value in increase.items():
            counters.setdefault(name, {})[key] = _total(value)
        stamp = datetime.fromtimestamp(shown.start, UTC).strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
        gauges = [{"Name": self._full(name), "Value": value, "Labels": dict(labels)}
                  for name, series in sorted(self._with_sources(shown.gauges).items())
                  for labels, value in sorted(series.items())]

        def aggregates(table: dict[str, dict[Labels, _Aggregate]]) -> list[dict]:
            return [agg.json(self._full(name), labels, self.interval)
                    for name, series in sorted(table.items()) for labels, agg in sorted(series.items())]

        return {"Timestamp": stamp, "Gauges": gauges, "Points": [],
                "Counters": aggregates(counters), "Samples": aggregates(shown.samples)}

    def to_prometheus(self) -> str:
        self._interval()  # keeps the JSON intervals' source baselines close to their boundaries
        lines: list[str] = []
        families: dict[str, tuple[str, str, Callable[[str], Iterator[str]]]] = {}
        for name, series in self.gauges().items():
            families[prom_name(self._full(name))] = (name, "gauge", gauge_lines(series))
        for name, table in self.counters().items():
            families[prom_name(self._full(name))] = (name, "counter", counter_lines(table))
        for name, table in self._samples.items():
            families[prom_name(self._full(name))] = (name, "summary", summary_lines(table))
        for family in sorted(families):
            name, kind, render = families[family]
            lines.append(f"# HELP {family} {escape_help(HELP.get(name, self._full(name)))}")
            lines.append(f"# TYPE {family} {kind}")
            lines.extend(render(family))
        return "\n".join(lines) + "\n"


def _total(value: float) -> _Aggregate:
    """A counter source's total (or increase) as one aggregate: Count and Sum are the value."""
    agg = _Aggregate(keep=False)
    agg.add(value)
    agg.count = int(value)
    return agg


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


MEMBER_STATUSES = ("alive", "failed", "left")


def member_gauges(statuses: Iterable[str]) -> Iterator[Gauge]:
    """`serf.members` by Serf status (alive includes suspect members, as Serf's own view)."""
    counts = dict.fromkeys(MEMBER_STATUSES, 0)
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
    for status, count in sorted(counts.items()):
        yield "serf.members", {"status": status}, count


# the gossip node's stats (agent.gossip.node.GossipNode.stats) → metric names; memberlist's own
# names where it has the counter (msg.suspect, msg.dead), otherwise memberlist.<what>
GOSSIP_COUNTERS: dict[str, tuple[str, ...]] = {
    "memberlist.probes": ("probes",),
    "memberlist.indirect_probes": ("indirect_probes",),
    "memberlist.acks": ("acks",),
    "memberlist.msg.suspect": ("suspicions",),
    "memberlist.msg.dead": ("failed",),
    "memberlist.refutes": ("refutes",),
    "memberlist.push_pulls": ("push_pulls",),
    "memberlist.tcp_pings": ("tcp_pings",),
    "memberlist.unauthenticated": ("unauthenticated",),
    "memberlist.malformed": ("malformed", "malformed_packets"),  # the SWIM core's + the transport's
}


def gossip_counters(stats: Mapping[str, int]) -> Iterator[Gauge]:
    for name, keys in GOSSIP_COUNTERS.items():
        yield name, {}, sum(stats.get(k, 0) for k in keys)


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
