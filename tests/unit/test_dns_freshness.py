"""allow_stale / max_stale: when a DNS lookup must confirm freshness through the leader first."""

from __future__ import annotations

import asyncio

from agent.config_model import AgentConfig
from agent.dns_adapter import freshness_barrier


class FakeServer:
    def __init__(self, *, single: bool, last_contact_ms: int) -> None:
        self.single = single
        self._contact = last_contact_ms
        self.barriers: list[str] = []

    def last_contact_ms(self) -> int:
        return self._contact

    async def read_barrier(self, mode: str) -> None:
        self.barriers.append(mode)


def run(config: AgentConfig, server: FakeServer) -> list[str]:
    asyncio.run(freshness_barrier(config, server)())  # type: ignore[arg-type]
    return server.barriers


def test_stale_reads_allowed_answer_from_the_local_store() -> None:
    assert run(AgentConfig(), FakeServer(single=False, last_contact_ms=5_000)) == []


def test_allow_stale_off_goes_through_the_leader() -> None:
    config = AgentConfig()
    config.dns_config.allow_stale = False
    assert run(config, FakeServer(single=False, last_contact_ms=0)) == ["leader"]


def test_too_stale_goes_through_the_leader() -> None:
    config = AgentConfig()
    config.dns_config.max_stale = 2.0
    assert run(config, FakeServer(single=False, last_contact_ms=1_000)) == []
    assert run(config, FakeServer(single=False, last_contact_ms=3_000)) == ["leader"]


def test_a_single_server_is_always_fresh() -> None:
    config = AgentConfig()
    config.dns_config.allow_stale = False
    assert run(config, FakeServer(single=True, last_contact_ms=0)) == []
