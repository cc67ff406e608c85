"""The replicated log's entry (layer 0).

Contract: entries are numbered from 1 with no gaps; `term` is the leader's term when written;
`data` is an encoded catalog command (agent.catalog.commands).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Entry:
    index: int
    term: int
    data: bytes
