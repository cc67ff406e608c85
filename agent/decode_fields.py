"""Field readers for untrusted JSON-shaped bodies (layer 0-ish: pure functions, stdlib + checks).

Contract:
- `Fields(body, path, problems)` reads one object. Keys match case-insensitively with underscores
  ignored (`EnableTagOverride` == `enable_tag_override`); `aliases` maps extra spellings to a
  canonical name. Each getter returns a safe default and appends a `Problem(path, 0, message)` on a
  wrong type or value — never raises TypeError/KeyError whatever the body holds.
- Problem paths use the key as the user spelled it (`service.Checks[1].Interval`), so a file's
  line map (agent.config_docs) finds the line.
- `finish()` reports every key nobody asked for as an unknown field; `ignore(...)` marks known
  Consul fields that waypost accepts and drops.
"""

from __future__ import annotations

import re

from agent.errors import Problem
from checks.definition import DurationError, parse_duration

MAX_STRING = 65_536
MAX_LIST = 1_024
META_MAX_PAIRS = 64
META_KEY_MAX = 128
META_VALUE_MAX = 512
META_KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")
META_RESERVED_PREFIX = "consul-"


def norm(key: str) -> str:
    return key.replace("_", "").replace("-", "").lower()


def describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Fields:
    """Reader over one object body; collects problems instead of raising."""

    def __init__(self, body: object, path: str, problems: list[Problem],
                 aliases: dict[str, str] | None = None):
        self.path = path
        self.problems = problems
        self.ok = isinstance(body, dict)
        self._keys: dict[str, tuple[str, object]] = {}
        self._used: set[str] = set()
        if not self.ok:
            problems.append(Problem(path, 0, f"expected an object, got {describe(body)}"))
            return
        assert isinstance(body, dict)
        for raw_key, value in body.items():
            if not isinstance(raw_key, str):
                problems.append(Problem(path, 0, f"keys must be strings, got {describe(raw_key)}"))
                continue
            key = norm(raw_key)
            key = norm(aliases.get(key, key)) if aliases else key
            if key in self._keys:
                problems.append(Problem(self.sub(raw_key), 0,
                                        f"duplicate field (also given as {self._keys[key][0]!r})"))
                continue
            self._keys[key] = (raw_key, value)

    # -- plumbing ---------------------------------------------------------------------------------

    def sub(self, raw_key: str | int) -> str:
        return f"{self.path}[{raw_key}]" if isinstance(raw_key, int) else f"{self.path}.{raw_key}"

    def path_of(self, name: str) -> str:
        """The field's path as the user spelled it (or as `name` when absent)."""
        entry = self._keys.get(norm(name))
        return self.sub(entry[0]) if entry else self.sub(name)

    def error(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, 0, message))

    def spelled_keys(self) -> list[str]:
        """The keys as spelled in the body (for free-form maps)."""
        return [raw_key for raw_key, _ in self._keys.values()]

    def has(self, name: str) -> bool:
        entry = self._keys.get(norm(name))
        return entry is not None and entry[1] is not None

    def raw(self, name: str) -> tuple[str, object] | None:
        """(path, value) of a present, non-null field; marks it used."""
        key = norm(name)
        self._used.add(key)
        entry = self._keys.get(key)
        if entry is None or entry[1] is None:
            return None
        return self.sub(entry[0]), entry[1]

    def ignore(self, *names: str) -> None:
        self._used.update(norm(n) for n in names)

    def finish(self) -> None:
        for key, (raw_key, _) in self._keys.items():
            if key not in self._used:
                self.error(self.sub(raw_key), "unknown field")

    # -- typed getters ----------------------------------------------------------------------------

    def str(self, name: str, default: str = "", max_len: int = MAX_STRING) -> str:
        got = self.raw(name)
        if got is None:
            return default
        path, value = got
        return self.check_str(path, value, max_len, default)

    def check_str(self, path: str, value: object, max_len: int = MAX_STRING, default: str = "") -> str:
        if not isinstance(value, str):
            self.error(path, f"expected a string, got {describe(value)}")
            return default
        if len(value) > max_len:
            self.error(path, f"too long ({len(value)} characters, max {max_len})")
            return default
        return value

    def int(self, name: str, default: int = 0, lo: int | None = None, hi: int | None = None) -> int:
        got = self.raw(name)
        if got is None:
            return default
        path, value = got
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,18}", value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(path, f"expected an integer, got {describe(value)}")
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            self.error(path, f"must be {bounds}, got {value}")
            return default
        return value

    def bool(self, name: str, default: bool = False) -> bool:
        got = self.raw(name)
        if got is None:
            return default
        path, value = got
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.error(path, f"expected a boolean, got {describe(value)}")
            return default
        return value

    def duration(self, name: str) -> float:
        """Seconds (0.0 when absent); negative durations are errors."""
        got = self.raw(name)
        if got is None:
            return 0.0
        path, value = got
        if isinstance(value, str) and len(value) > 64:
            self.error(path, "invalid duration (too long)")
            return 0.0
        try:
            seconds = parse_duration(value)
        except DurationError:
            self.error(path, f"invalid duration {describe(value)} (use e.g. \"10s\", \"1m30s\")")
            return 0.0
        if seconds < 0:
            self.error(path, f"duration must not be negative, got {describe(value)}")
            return 0.0
        return seconds

    def str_list(self, name: str, max_len: int = MAX_STRING) -> list[str]:
        got = self.raw(name)
        if got is None:
            return []
        path, value = got
        if not isinstance(value, list):
            self.error(path, f"expected a list of strings, got {describe(value)}")
            return []
        if len(value) > MAX_LIST:
            self.error(path, f"too many items ({len(value)}, max {MAX_LIST})")
            return []
        out = []
        for index, item in enumerate(value):
            text = self.check_str(f"{path}[{index}]", item, max_len, default="\0")
            if text != "\0":
                out.append(text)
        return out

    def str_map(self, name: str) -> dict[str, str]:
        got = self.raw(name)
        if got is None:
            return {}
        path, value = got
        if not isinstance(value, dict):
            self.error(path, f"expected an object of strings, got {describe(value)}")
            return {}
        if len(value) > MAX_LIST:
            self.error(path, f"too many entries ({len(value)}, max {MAX_LIST})")
            return {}
        out: dict[str, str] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                self.error(path, f"keys must be strings, got {describe(key)}")
                continue
            text = self.check_str(f"{path}.{key}", item, default="\0")
            if text != "\0":
                out[key] = text
        return out

    def meta(self, name: str, reserved_ok: frozenset[str] = frozenset()) -> dict[str, str]:
        """A Meta/NodeMeta map with Consul's limits (`reserved_ok`: `consul-` keys allowed here)."""
        got = self.raw(name)
        if got is None:
            return {}
        path = got[0]
        values = self.str_map(name)
        if len(values) > META_MAX_PAIRS:
            self.error(path, f"too many meta pairs ({len(values)}, max {META_MAX_PAIRS})")
            return {}
        for key, value in values.items():
            sub = f"{path}.{key}"
            if not key:
                self.error(path, "meta keys must not be empty")
            elif len(key) > META_KEY_MAX:
                self.error(sub, f"meta key too long ({len(key)} characters, max {META_KEY_MAX})")
            elif not META_KEY_RE.match(key):
                self.error(sub, "meta keys may only contain letters, digits, '_' and '-'")
            elif key.startswith(META_RESERVED_PREFIX) and key not in reserved_ok:
                self.error(sub, f"meta key prefix {META_RESERVED_PREFIX!r} is reserved")
            if len(value) > META_VALUE_MAX:
                self.error(sub, f"meta value too long ({len(value)} characters, max {META_VALUE_MAX})")
        return values

    def obj(self, name: str, aliases: dict[str, str] | None = None) -> Fields | None:
        got = self.raw(name)
        if got is None:
            return None
        path, value = got
        reader = Fields(value, path, self.problems, aliases)
        return reader if reader.ok else None

    def obj_list(self, name: str) -> list[tuple[str, object]]:
        """(path, item) for each element of a list field; a single object counts as a list of one."""
        got = self.raw(name)
        if got is None:
            return []
        path, value = got
        if isinstance(value, dict):
            return [(path, value)]
        if not isinstance(value, list):
            self.error(path, f"expected a list of objects, got {describe(value)}")
            return []
        if len(value) > MAX_LIST:
            self.error(path, f"too many items ({len(value)}, max {MAX_LIST})")
            return []
        return [(f"{path}[{i}]", item) for i, item in enumerate(value)]
