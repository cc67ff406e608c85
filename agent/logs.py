"""Agent logging: levels, text or JSON lines, a rotating log file, and live monitor streams (layer 2).

Contract:
- Levels are Consul's: TRACE, DEBUG, INFO, WARN, ERROR (`parse_level` also takes `warning`/`err`,
  any case; anything else raises `UnknownLogLevel`). TRACE is level 5.
- Text lines look like hclog's: `2024-05-01T12:00:00.123Z [INFO]  agent: message`; JSON lines
  (`-log-json`) are objects with `@timestamp`, `@level`, `@module`, `@message` (+ `error` with the
  traceback). The module is the logger name without the `waypost.` prefix.
- `RotatingLogFile(path, max_bytes, duration, max_files)` is Consul's `-log-file` rotation: a path
  ending in `/` or naming a directory gets `waypost.log` inside it; before a write, when the
  file holds ≥ `max_bytes` (0 = no limit) or is older than `duration` (0 = never), it is renamed
  `<name>-<unix nanos of its creation><ext>` and a new one is opened; then archives beyond
  `max_files` are deleted, oldest first (0 = keep all, -1 = keep none). Files are 0640. Writes go
  to the page cache (no fsync), so logging never waits on the disk.
- `MonitorHub` is a handler feeding `/v1/agent/monitor` clients: `subscribe(level, json)` gives a
  `Subscription` with a bounded queue; a record is offered without blocking, and a full queue
  drops the line and counts it (per client and in `dropped_total`); the client's next read
  first reports how many lines it missed. `close()` ends every stream (agent shutdown).
- `LogSetup` (from `setup_logging(options, stream)`) owns the root logger's handlers; the root
  level is the lowest of the configured level and the monitors' levels, each handler filtering
  to its own. `set_level(name)` applies a reloaded `log_level`; `close()` ends monitor streams
  and puts back the root logger's previous handlers and level.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from agent.config_model import AgentConfig

TRACE = 5
LEVELS = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "err": logging.ERROR, "error": logging.ERROR}
DEFAULT_FILE_NAME = "waypost.log"
MONITOR_QUEUE = 512  # lines buffered per monitor client before lines are dropped
FILE_MODE = 0o640


class UnknownLogLevel(ValueError):
    """A log level name that is not trace/debug/info/warn/error."""


def parse_level(name: str) -> int:
    level = LEVELS.get(name.strip().lower())
    if level is None:
        raise UnknownLogLevel(f"Unknown log level: {name}")
    return level


def level_name(levelno: int) -> str:
    if levelno <= TRACE:
        return "TRACE"
    if levelno <= logging.DEBUG:
        return "DEBUG"
    if levelno <= logging.INFO:
        return "INFO"
    if levelno <= logging.WARNING:
        return "WARN"
    return "ERROR"


def _module(record: logging.LogRecord) -> str:
    name = record.name
    return name[len("waypost."):] if name.startswith("waypost.") else name


def _timestamp(created: float) -> str:
    seconds, millis = divmod(round(created * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = f"[{level_name(record.levelno)}]".ljust(7)
        line = f"{_timestamp(record.created)} {level} {_module(record)}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {"@timestamp": _timestamp(record.created), "@level": level_name(record.levelno).lower(),
               "@module": _module(record), "@message": record.getMessage()}
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def formatter(as_json: bool) -> logging.Formatter:
    return JsonFormatter() if as_json else TextFormatter()


class RotatingLogFile(logging.Handler):
    def __init__(self, path: str, *, max_bytes: int, duration: float, max_files: int,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        target = Path(path)
        if path.endswith("/") or target.is_dir():
            target = target / DEFAULT_FILE_NAME
        self.path = target
        self.max_bytes = max_bytes
        self.duration = duration
        self.max_files = max_files
        self._clock = clock
        self._file: TextIO | None = None
        self.created = 0.0
        self.written = 0
        self._open()

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, FILE_MODE)
        self._file = os.fdopen(fd, "a", encoding="utf-8")
        self.created = self._clock()
        self.written = os.fstat(fd).st_size

    def _due(self) -> bool:
        if self.max_bytes > 0 and self.written >= self.max_bytes:
            return True
        return self.duration > 0 and self._clock() - self.created >= self.duration

    def rotate(self) -> None:
        if self._file is not None:
            self._file.close()
        stem, ext = self.path.stem, self.path.suffix or ".log"
        archive = self.path.with_name(f"{stem}-{int(self.created * 1e9)}{ext}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, archive)
        self._prune(stem, ext)
        self._open()

    def archives(self) -> list[Path]:
        stem, ext = self.path.stem, self.path.suffix or ".log"
        return self._archives(stem, ext)

    def _archives(self, stem: str, ext: str) -> list[Path]:
        found = []
        for candidate in self.path.parent.glob(f"{stem}-*{ext}"):
            stamp = candidate.name[len(stem) + 1:len(candidate.name) - len(ext)]
            if stamp.isdigit():
                found.append((int(stamp), candidate))
        return [p for _, p in sorted(found)]

    def _prune(self, stem: str, ext: str) -> None:
        if self.max_files == 0:
            return
        archives = self._archives(stem, ext)
        keep = max(self.max_files, 0)
        for old in archives[:len(archives) - keep]:
            with contextlib.suppress(OSError):
                old.unlink()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + "\n"
            if self._due():
                self.rotate()
            assert self._file is not None
            self._file.write(line)
            self._file.flush()
            self.written += len(line.encode("utf-8"))
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        super().close()


class Subscription:
    def __init__(self, hub: MonitorHub, level: int, as_json: bool, maxsize: int) -> None:
        self.hub = hub
        self.level = level
        self.json = as_json
        self.queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize)
        self.dropped = 0
        self._reported = 0

    def offer(self, line: str | None) -> None:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            if line is None:  # the end marker must get through: make room for it
                self.queue.get_nowait()
                self.queue.put_nowait(None)
                return
            self.dropped += 1
            self.hub.dropped_total += 1

    async def next(self) -> str | None:
        """The next line to send, None when the stream is over."""
        if self.dropped > self._reported:
            missed, self._reported = self.dropped - self._reported, self.dropped
            return self._notice(missed)
        return await self.queue.get()

    def _notice(self, missed: int) -> str:
        record = logging.LogRecord("waypost.monitor", logging.WARNING, __file__, 0,
                                   "monitor dropped %d log lines: the client reads too slowly",
                                   (missed,), None)
        return formatter(self.json).format(record)


class MonitorHub(logging.Handler):
    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__(logging.NOTSET)
        self._subs: list[Subscription] = []
        self._on_change = on_change
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._formats = (TextFormatter(), JsonFormatter())
        self.dropped_total = 0

    def subscribe(self, level: int, as_json: bool, maxsize: int = MONITOR_QUEUE) -> Subscription:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        sub = Subscription(self, level, as_json, maxsize)
        self._subs.append(sub)
        self._on_change()
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
            self._on_change()

    def min_level(self) -> int | None:
        return min((s.level for s in self._subs), default=None)

    def close(self) -> None:
        for sub in list(self._subs):
            sub.offer(None)
        self._subs.clear()
        self._on_change()

    def emit(self, record: logging.LogRecord) -> None:
        subs = [s for s in self._subs if record.levelno >= s.level]
        if not subs:
            return
        try:
            lines = {False: self._formats[0].format(record), True: self._formats[1].format(record)}
        except Exception:
            self.handleError(record)
            return
        for sub in subs:
            if threading.get_ident() == self._thread or self._loop is None:
                sub.offer(lines[sub.json])
            else:  # a record logged from a worker thread (e.g. inside asyncio.to_thread)
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(sub.offer, lines[sub.json])


@dataclass(slots=True)
class LogOptions:
    """The logging part of the agent config (defaults live in agent.config_model only)."""

    level: str
    json: bool
    file: str
    rotate_bytes: int
    rotate_duration: float
    rotate_max_files: int

    @classmethod
    def from_config(cls, config: AgentConfig) -> LogOptions:
        return cls(level=config.log_level, json=config.log_json, file=config.log_file,
                   rotate_bytes=config.log_rotate_bytes, rotate_duration=config.log_rotate_duration,
                   rotate_max_files=config.log_rotate_max_files)


class LogSetup:
    def __init__(self, options: LogOptions, stream: TextIO) -> None:
        logging.addLevelName(TRACE, "TRACE")
        self.level = parse_level(options.level)
        self.root = logging.getLogger()
        self.console = logging.StreamHandler(stream)
        self.console.setFormatter(formatter(options.json))
        self.handlers: list[logging.Handler] = [self.console]
        self.file: RotatingLogFile | None = None
        if options.file:
            self.file = RotatingLogFile(options.file, max_bytes=options.rotate_bytes,
                                        duration=options.rotate_duration, max_files=options.rotate_max_files)
            self.file.setFormatter(formatter(options.json))
            self.handlers.append(self.file)
        self.hub = MonitorHub(on_change=self._apply_levels)
        self._previous = (self.root.handlers[:], self.root.level)
        for handler in self.root.handlers[:]:
            self.root.removeHandler(handler)
        for handler in [*self.handlers, self.hub]:
            self.root.addHandler(handler)
        self._apply_levels()

    def _apply_levels(self) -> None:
        for handler in self.handlers:
            handler.setLevel(self.level)
        monitor = self.hub.min_level()
        self.root.setLevel(self.level if monitor is None else min(self.level, monitor))

    def set_level(self, name: str) -> None:
        self.level = parse_level(name)
        self._apply_levels()

    def close(self) -> None:
        self.hub.close()
        for handler in [*self.handlers, self.hub]:
            self.root.removeHandler(handler)
            handler.close()
        handlers, level = self._previous
        for handler in handlers:
            self.root.addHandler(handler)
        self.root.setLevel(level)


def setup_logging(options: LogOptions, stream: TextIO) -> LogSetup:
    return LogSetup(options, stream)
