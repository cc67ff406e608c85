"""Registers the `soak` marker for the long simulation runs (skipped unless WAYPOST_SOAK=1)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "soak: long randomized Raft simulation (set WAYPOST_SOAK=1)")
