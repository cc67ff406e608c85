"""Go-style command-line flags for the waypost CLI (layer 5 helper, stdlib only).

Contract:
- `FlagSet(name, usage)` declares flags with `.bool()`, `.string()`, `.int()`, `.multi()` (repeatable
  string) and `.mapping()` (repeatable `key=value`), each with one default given at declaration.
- `parse(argv) -> (values, positional)` accepts Consul's shapes: `-flag value`, `-flag=value`,
  `--flag`, booleans as `-flag` or `-flag=true|false`. Like Go's `flag` package, parsing stops at
  the first non-flag argument or at `--`; everything after is positional.
- Errors are exceptions, never exit calls: `HelpRequested` for `-h`/`-help`/`--help`, `UsageError`
  for an unknown flag, a missing value or a bad value. `usage()` renders the help text with a
  sorted flag list (Consul's `flags.Usage` layout).
"""

from __future__ import annotations

from dataclasses import dataclass


class UsageError(Exception):
    """The command line is wrong; the message is one line shown above the usage text."""


class HelpRequested(Exception):
    """`-h`, `-help` or `--help` was given."""


_TRUE = {"1", "t", "true", "TRUE", "True", "T"}
_FALSE = {"0", "f", "false", "FALSE", "False", "F"}
_HELP = {"h", "help"}


@dataclass(slots=True)
class _Flag:
    name: str
    kind: str  # bool | string | int | multi | mapping
    default: object
    help: str
    placeholder: str = "value"


class FlagSet:
    """A declared set of flags for one command."""

    def __init__(self, name: str, usage: str):
        self.name = name
        self.usage_text = usage
        self._flags: dict[str, _Flag] = {}

    def bool(self, name: str, help: str, default: bool = False) -> None:
        self._flags[name] = _Flag(name, "bool", default, help)

    def string(self, name: str, help: str, default: str = "", placeholder: str = "value") -> None:
        self._flags[name] = _Flag(name, "string", default, help, placeholder)

    def int(self, name: str, help: str, default: int = 0) -> None:
        self._flags[name] = _Flag(name, "int", default, help, "int")

    def multi(self, name: str, help: str, placeholder: str = "value") -> None:
        self._flags[name] = _Flag(name, "multi", (), help, placeholder)

    def mapping(self, name: str, help: str) -> None:
        self._flags[name] = _Flag(name, "mapping", (), help, "key=value")

    def parse(self, argv: list[str]) -> tuple[dict[str, object], list[str]]:
        values: dict[str, object] = {}
        for flag in self._flags.values():
            if flag.kind == "multi":
                values[flag.name] = []
            elif flag.kind == "mapping":
                values[flag.name] = {}
            else:
                values[flag.name] = flag.default
        i = 0
        while i < len(argv):
            arg = argv[i]
            if arg == "--":
                i += 1
                break
            if len(arg) < 2 or not arg.startswith("-"):
                break
            body = arg[2:] if arg.startswith("--") else arg[1:]
            if not body or body.startswith(("-", "=")):
                raise UsageError(f"bad flag syntax: {arg}")
            name, has_value, value = body.partition("=")
            if name in _HELP and name not in self._flags:
                raise HelpRequested
            flag = self._flags.get(name)
            if flag is None:
                raise UsageError(f"flag provided but not defined: -{name}")
            i += 1
            if flag.kind == "bool":
                values[name] = _parse_bool(name, value) if has_value else True
                continue
            if not has_value:
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: -{name}")
                value = argv[i]
                i += 1
            _store(flag, value, values)
        return values, list(argv[i:])

    def usage(self) -> str:
        lines = [self.usage_text.strip("\n"), ""]
        if self._flags:
            lines.append("Command Options:" if self.name else "Options:")
            lines.append("")
            for flag in sorted(self._flags.values(), key=lambda f: f.name):
                shape = f"-{flag.name}" if flag.kind == "bool" else f"-{flag.name}=<{flag.placeholder}>"
                lines.append(f"  {shape}")
                lines.append(f"     {flag.help}")
                lines.append("")
        return "\n".join(lines).rstrip("\n") + "\n"


def _parse_bool(name: str, value: str) -> bool:
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise UsageError(f'invalid boolean value "{value}" for -{name}')


def _store(flag: _Flag, value: str, values: dict[str, object]) -> None:
    current = values[flag.name]
    if flag.kind == "string":
        values[flag.name] = value
    elif flag.kind == "int":
        values[flag.name] = _parse_int(flag.name, value)
    elif flag.kind == "multi" and isinstance(current, list):
        current.append(value)
    elif flag.kind == "mapping" and isinstance(current, dict):
        key, val = _parse_pair(flag.name, value)
        current[key] = val


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise UsageError(f'invalid value "{value}" for flag -{name}: parse error') from None


def _parse_pair(name: str, value: str) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise UsageError(f'invalid value "{value}" for flag -{name}: missing "=" in key=value')
    return key, val
