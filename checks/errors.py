"""Errors the checks package raises (layer 0). Callers match on the class, never on the text.

Contract (how the agent maps them): `UnknownCheck` → 404 "Unknown check ID"; `NotTTLCheck`,
`InvalidStatus`, `ScriptChecksDisabled`, `UnsupportedCheck` → 400 / a file error.
`checks/` never imports `agent/`, so these do not derive from `agent.errors.WaypostError`;
every one derives from `CheckError`.
"""

from __future__ import annotations


class CheckError(Exception):
    """Base class of every error the checks package raises on purpose."""


class UnknownCheck(CheckError, LookupError):
    def __init__(self, check_id: str):
        self.check_id = check_id
        super().__init__(f'Unknown check ID "{check_id}"')


class NotTTLCheck(CheckError):
    def __init__(self, check_id: str):
        self.check_id = check_id
        super().__init__(f'CheckID "{check_id}" does not have associated TTL')


class InvalidStatus(CheckError, ValueError):
    def __init__(self, status: object):
        self.status = status
        super().__init__(f"Invalid check status: {status!r}")


class ScriptChecksDisabled(CheckError):
    def __init__(self, check_id: str):
        self.check_id = check_id
        super().__init__(
            f'Scripts are disabled on this agent; to enable, configure "enable_script_checks" or '
            f'"enable_local_script_checks" to true (check "{check_id}")'
        )


class UnsupportedCheck(CheckError):
    """A check kind this agent cannot run (docker, grpc without support, alias without a source)."""

    def __init__(self, check_id: str, why: str):
        self.check_id = check_id
        super().__init__(f'Check "{check_id}": {why}')
