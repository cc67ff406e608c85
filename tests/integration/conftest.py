"""Fixtures: a dev agent per test module (fast), and a factory for agents with custom flags."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import AgentProcess


@pytest.fixture(scope="module")
def dev_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    agent = AgentProcess(tmp_path_factory.mktemp("dev"), "-node", "itest").start()
    yield agent
    agent.stop()


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator:
    started: list[AgentProcess] = []

    def start(*args: str, dev: bool = True) -> AgentProcess:
        agent = AgentProcess(tmp_path, *args, dev=dev).start()
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()
