"""Errors as exception classes (layer 0). Callers match on the class, never on message text.

Contract: `Problem` is one located complaint (`path:line: message`); `DefinitionError` and
`ConfigError` carry every problem found in a file at once. HTTP maps `BadRequest` → 400,
`NotFound` → 404, `PayloadTooLarge` → 413, `NoLeader` → 500 ("No cluster leader").
"""

from __future__ import annotations

from dataclasses import dataclass


class WaypostError(Exception):
    """Base class of every error waypost raises on purpose."""


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"


class ProblemsError(WaypostError):
    """Several located problems, reported together."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class DefinitionError(ProblemsError):
    """A service or check definition file (or body) is invalid."""


class ConfigError(ProblemsError):
    """An agent configuration file or flag is invalid."""


class BadRequest(WaypostError):
    """Client input is wrong: HTTP 400 with this message."""


class NotFound(WaypostError):
    """The named thing does not exist: HTTP 404 with this message."""


class PayloadTooLarge(WaypostError):
    """A request body over the limit: HTTP 413."""


class NoLeader(WaypostError):
    """No cluster leader is known (Consul answers 500 "No cluster leader")."""

    def __init__(self, message: str = "No cluster leader"):
        super().__init__(message)
