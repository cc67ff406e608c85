"""Which HTTP status each domain error is answered with (layer 4).

Contract: `status_of(exc)` → the status for the error classes the API knows (`BadRequest`,
`ProblemsError` and check errors → 400, `NotFound` and `UnknownCheck` → 404, `PayloadTooLarge` →
413, `NoLeader` → 500), or None for anything else (an internal error). The aiohttp error middleware
and the fast path both answer from it, with `str(exc)` as a text/plain body.
"""

from __future__ import annotations

from agent.errors import BadRequest, NoLeader, NotFound, PayloadTooLarge, ProblemsError
from checks.errors import CheckError, UnknownCheck

# first match wins: UnknownCheck is a CheckError
ERROR_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (BadRequest, 400), (ProblemsError, 400), (UnknownCheck, 404), (CheckError, 400), (NotFound, 404),
    (PayloadTooLarge, 413), (NoLeader, 500))


def status_of(exc: BaseException) -> int | None:
    for cls, status in ERROR_STATUS:
        if isinstance(exc, cls):
            return status
    return None
