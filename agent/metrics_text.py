"""Prometheus text exposition format 0.0.4 pieces for agent.metrics (layer 2, pure).

Contract: `prom_name(dotted)` sanitises a metric name (`consul.raft.apply` → `consul_raft_apply`);
`gauge_lines(series)`, `counter_lines(table)`, `summary_lines(table)` return a renderer that,
given the family name, yields that family's sample lines (label names sanitised, label values
escaped; summaries: quantiles `QUANTILES` from `agg.quantile(q)`, then `_sum` and `_count`);
`escape_help(text)` escapes a `# HELP` text. Aggregates are anything with `sum`, `count` and
`quantile(q)` (agent.metrics' `_Aggregate`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

Labels = tuple[tuple[str, str], ...]
QUANTILES = (0.5, 0.9, 0.99)
_BAD_NAME = re.compile(r"[^a-zA-Z0-9_:]")
_BAD_LABEL = re.compile(r"[^a-zA-Z0-9_]")


class Aggregate(Protocol):
    sum: float
    count: int

    def quantile(self, q: float) -> float: ...


def prom_name(name: str) -> str:
    out = _BAD_NAME.sub("_", name)
    return "_" + out if out[:1].isdigit() else out


def _label_name(name: str) -> str:
    out = _BAD_LABEL.sub("_", name)
    return "_" + out if not out or out[0].isdigit() else out


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
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


def gauge_lines(series: dict[Labels, float]) -> Callable[[str], Iterator[str]]:
    def render(family: str) -> Iterator[str]:
        for labels, value in sorted(series.items()):
            yield f"{family}{_labels(labels)} {_number(value)}"
    return render


def counter_lines(table: Mapping[Labels, Aggregate]) -> Callable[[str], Iterator[str]]:
    def render(family: str) -> Iterator[str]:
        for labels, agg in sorted(table.items()):
            yield f"{family}{_labels(labels)} {_number(agg.sum)}"
    return render


def summary_lines(table: Mapping[Labels, Aggregate]) -> Callable[[str], Iterator[str]]:
    def render(family: str) -> Iterator[str]:
        for labels, agg in sorted(table.items()):
            for q in QUANTILES:
                yield f"{family}{_labels(labels, ('quantile', str(q)))} {_number(agg.quantile(q))}"
            yield f"{family}_sum{_labels(labels)} {_number(agg.sum)}"
            yield f"{family}_count{_labels(labels)} {agg.count}"
    return render
