"""Integration (issue 6): user events reach every agent of a cluster — a dev server and two client
agents that `-join` it. An event fired at one client is listed on all three with one LTime; a
`?node=` filter keeps it only where it matches; `waypost event` fires through the CLI."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.integration.harness import AgentProcess, run_cli

DEADLINE = 10.0


def alive(agent: AgentProcess) -> set[str]:
    return {m["Name"] for m in agent.get("/v1/agent/members").json() if m["Status"] == 1}  # type: ignore[union-attr]


def events(agent: AgentProcess) -> dict[str, dict]:
    reply = agent.get("/v1/event/list")
    assert reply.status == 200, reply.text
    return {e["ID"]: e for e in reply.json()}  # type: ignore[union-attr]


def fire(agent: AgentProcess, name: str, payload: bytes = b"", query: str = "") -> dict:
    reply = agent.request("PUT", f"/v1/event/fire/{name}{query}", raw=payload)
    assert reply.status == 200, reply.text
    return reply.json()  # type: ignore[return-value]


def test_user_events_reach_every_agent_whose_filters_match(tmp_path: Path) -> None:
    agents: list[AgentProcess] = []
    try:
        server = AgentProcess(tmp_path, "-node", "srv").start()
        agents.append(server)
        for name in ("c1", "c2"):
            agents.append(AgentProcess(tmp_path, "-node", name, "-data-dir", str(tmp_path / name),
                                       "-join", server.serf_addr, dev=False).start())
        _, c1, c2 = agents
        for agent in agents:
            agent.wait_for(lambda a=agent: alive(a) == {"srv", "c1", "c2"}, DEADLINE, "all three members alive")

        # fired at c1: listed on every agent, with the same Lamport time
        deploy = fire(c1, "deploy", b"v1")
        for agent in agents:
            agent.wait_for(lambda a=agent: deploy["ID"] in events(a), DEADLINE, f"the event on {agent.args}")
        seen = [events(a)[deploy["ID"]] for a in agents]
        assert all(base64.b64decode(e["Payload"]) == b"v1" and e["Name"] == "deploy" for e in seen)
        assert len({e["LTime"] for e in seen}) == 1 and seen[0]["LTime"] > 0

        # a node filter: only c2 keeps it (an unfiltered marker fired after it shows the others had their chance)
        only_c2 = fire(c1, "restart", query="?node=^c2$")
        c2.wait_for(lambda: only_c2["ID"] in events(c2), DEADLINE, "the filtered event on c2")
        marker = fire(c1, "marker")
        for agent in (server, c1):
            agent.wait_for(lambda a=agent: marker["ID"] in events(a), DEADLINE, "the marker event")
            assert only_c2["ID"] not in events(agent)

        # the CLI, at the other client
        done = run_cli("event", "-name", "deploy", "v2", http_port=c2.http_port)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("Event ID: "), done.stdout
        cli_id = done.stdout.split("Event ID: ", 1)[1].strip()
        for agent in agents:
            agent.wait_for(lambda a=agent: cli_id in events(a), DEADLINE, "the CLI's event everywhere")
        listed = server.get("/v1/event/list?name=deploy").json()
        assert [base64.b64decode(e["Payload"]) for e in listed] == [b"v1", b"v2"]  # type: ignore[union-attr]
    finally:
        for agent in agents:
            agent.stop(kill=True)
