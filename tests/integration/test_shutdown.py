"""SIGTERM stops an agent promptly even with blocking queries in flight."""

from __future__ import annotations

import threading
import time


def test_sigterm_with_blocking_queries_in_flight(start_agent) -> None:
    agent = start_agent()
    index = agent.get("/v1/catalog/services").headers["X-Consul-Index"]
    outcomes: list[object] = []

    def block(path: str) -> None:
        try:
            outcomes.append(agent.get(path, timeout=70).status)
        except OSError as exc:  # the agent closes the connection while stopping
            outcomes.append(exc)

    waiters = [threading.Thread(target=block, args=(path,)) for path in
               (f"/v1/catalog/services?index={index}&wait=60s", "/v1/kv/x?index=1&wait=60s")]
    for waiter in waiters:
        waiter.start()
    agent.wait_for(lambda: "GET" in agent.get("/v1/agent/metrics?format=prometheus").text, what="agent serving")
    started = time.monotonic()
    assert agent.stop() == 0
    assert time.monotonic() - started < 10, "blocking queries held the agent up"
    for waiter in waiters:
        waiter.join(timeout=15)
    assert len(outcomes) == 2
