"""A strict reader of the Prometheus text exposition format 0.0.4, for tests.

`parse(text) -> {family: (type, help, [(sample name, labels, value)])}`; raises AssertionError on
anything the format does not allow (bad names, unescaped label values, samples before their TYPE,
a family split in two, a sample not belonging to its family's type).
"""

from __future__ import annotations

import math
import re

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE = re.compile(rf"^({NAME})(?:\{{(.*)\}})? (\S+)$")
PAIR = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')
SUFFIXES = {"counter": ("", "_total"), "gauge": ("",), "summary": ("", "_sum", "_count"),
            "histogram": ("_bucket", "_sum", "_count"), "untyped": ("",)}


def _labels(raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    at = 0
    while at < len(raw):
        match = PAIR.match(raw, at)
        assert match, f"bad labels {raw!r} at {at}"
        out[match[1]] = match[2].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
        at = match.end()
    return out


def _value(raw: str) -> float:
    if raw in ("+Inf", "-Inf", "NaN"):
        return {"+Inf": math.inf, "-Inf": -math.inf, "NaN": math.nan}[raw]
    return float(raw)


def parse(text: str) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, tuple[str, str, list]] = {}
    helps: dict[str, str] = {}
    current = ""
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("# HELP "):
            name, _, doc = line[7:].partition(" ")
            assert re.fullmatch(NAME, name), line
            helps[name] = doc
            continue
        if line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert re.fullmatch(NAME, name) and kind in SUFFIXES, line
            assert name not in families, f"second TYPE for {name}"
            families[name] = (kind, helps.get(name, ""), [])
            current = name
            continue
        assert not line.startswith("#"), line
        match = SAMPLE.match(line)
        assert match, f"bad sample line {line!r}"
        name, labels, value = match[1], _labels(match[2] or ""), _value(match[3])
        assert current and any(name == current + s for s in SUFFIXES[families[current][0]]), \
            f"{name} outside its family (current {current})"
        families[current][2].append((name, labels, value))
    return families


def value(families: dict, name: str, **labels: str) -> float:
    for family in families.values():
        for sample, sample_labels, number in family[2]:
            if sample == name and all(sample_labels.get(k) == v for k, v in labels.items()):
                return number
    raise KeyError(f"{name} {labels} not in the exposition")
