"""Logging: levels, line formats, Consul-style rotation (fake clock), monitor fan-out and drops."""

from __future__ import annotations

import io
import json
import logging
import stat
from pathlib import Path

import pytest

from agent.logs import (
    TRACE,
    JsonFormatter,
    LogOptions,
    MonitorHub,
    RotatingLogFile,
    TextFormatter,
    UnknownLogLevel,
    parse_level,
    setup_logging,
)


def record(message: str, level: int = logging.INFO, name: str = "waypost.agent") -> logging.LogRecord:
    rec = logging.LogRecord(name, level, __file__, 1, message, (), None)
    rec.created = 1714564800.123
    return rec


def test_levels() -> None:
    assert parse_level("trace") == TRACE and parse_level("WARN") == logging.WARNING
    assert parse_level("warning") == logging.WARNING and parse_level(" Error ") == logging.ERROR
    with pytest.raises(UnknownLogLevel):
        parse_level("loud")


def test_text_and_json_lines() -> None:
    assert TextFormatter().format(record("hello")) == "2024-05-01T12:00:00.123Z [INFO]  agent: hello"
    assert TextFormatter().format(record("x", logging.WARNING, "dns.server")).endswith("[WARN]  dns.server: x")
    line = json.loads(JsonFormatter().format(record("hi", TRACE)))
    assert line == {"@timestamp": "2024-05-01T12:00:00.123Z", "@level": "trace", "@module": "agent",
                    "@message": "hi"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rotation_by_size_keeps_max_files(tmp_path: Path) -> None:
    clock = Clock()
    handler = RotatingLogFile(str(tmp_path) + "/", max_bytes=100, duration=0, max_files=2, clock=clock)
    handler.setFormatter(logging.Formatter("%(message)s"))
    assert handler.path == tmp_path / "waypost.log"
    assert stat.S_IMODE(handler.path.stat().st_mode) == 0o640
    for i in range(12):
        clock.now += 1
        handler.emit(record(f"line {i:02d} " + "x" * 40))  # 49 bytes: a file holds 3 lines
    handler.close()
    archives = sorted(tmp_path.glob("waypost-*.log"))
    assert len(archives) == 2  # older ones pruned
    assert handler.path.read_text().splitlines() == [f"line 09 {'x' * 40}", f"line 10 {'x' * 40}",
                                                     f"line 11 {'x' * 40}"]
    assert archives[-1].read_text().startswith("line 06")


def test_rotation_by_duration_and_keep_all_or_none(tmp_path: Path) -> None:
    clock = Clock()
    keep_all = RotatingLogFile(str(tmp_path / "a.log"), max_bytes=0, duration=60, max_files=0, clock=clock)
    keep_all.setFormatter(logging.Formatter("%(message)s"))
    for _ in range(4):
        keep_all.emit(record("tick"))
        clock.now += 61
    keep_all.close()
    assert len(list(tmp_path.glob("a-*.log"))) == 3
    created = int(1000.0 * 1e9)
    assert (tmp_path / f"a-{created}.log").exists()  # named after the archived file's creation time

    none = RotatingLogFile(str(tmp_path / "b.log"), max_bytes=1, duration=0, max_files=-1, clock=clock)
    none.setFormatter(logging.Formatter("%(message)s"))
    for _ in range(3):
        none.emit(record("tock"))
    none.close()
    assert list(tmp_path.glob("b-*.log")) == [] and (tmp_path / "b.log").read_text() == "tock\n"


def test_reopen_counts_existing_bytes(tmp_path: Path) -> None:
    path = tmp_path / "c.log"
    path.write_text("x" * 500)
    handler = RotatingLogFile(str(path), max_bytes=100, duration=0, max_files=0)
    handler.setFormatter(logging.Formatter("%(message)s"))
    handler.emit(record("new"))
    handler.close()
    assert path.read_text() == "new\n" and len(handler.archives()) == 1


async def test_monitor_filters_levels_and_drops_when_full() -> None:
    hub = MonitorHub()
    debug = hub.subscribe(logging.DEBUG, as_json=True, maxsize=3)
    info = hub.subscribe(logging.INFO, as_json=False, maxsize=100)
    hub.handle(record("quiet", logging.DEBUG))
    for i in range(5):
        hub.handle(record(f"loud {i}"))
    assert debug.dropped == 3 and hub.dropped_total == 3 and info.dropped == 0
    notice = await debug.next()
    assert "dropped 3 log lines" in json.loads(notice)["@message"]
    assert json.loads(await debug.next())["@message"] == "quiet"
    assert [(await info.next()).split(": ", 1)[1] for _ in range(5)] == [f"loud {i}" for i in range(5)]
    hub.close()
    assert await info.next() is None
    assert [await debug.next() for _ in range(3)][-1] is None


async def test_setup_lowers_root_level_only_while_a_monitor_listens() -> None:
    stream = io.StringIO()
    options = LogOptions(level="INFO", json=False, file="", rotate_bytes=0, rotate_duration=0,
                         rotate_max_files=0)
    root = logging.getLogger()
    before = (root.handlers[:], root.level)
    setup = setup_logging(options, stream)
    try:
        assert root.level == logging.INFO
        sub = setup.hub.subscribe(TRACE, as_json=False)
        assert root.level == TRACE
        logging.getLogger("waypost.test").debug("only for the monitor")
        assert "only for the monitor" in (await sub.next() or "")
        assert "only for the monitor" not in stream.getvalue()
        setup.hub.unsubscribe(sub)
        assert root.level == logging.INFO
        setup.set_level("warn")
        logging.getLogger("waypost.test").info("hidden")
        logging.getLogger("waypost.test").warning("shown")
        assert "hidden" not in stream.getvalue() and "[WARN]  test: shown" in stream.getvalue()
    finally:
        setup.close()
    assert (root.handlers, root.level) == before
