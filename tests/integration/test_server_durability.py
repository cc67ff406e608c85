"""A `-server -bootstrap` agent with a data dir keeps acknowledged writes across kill -9."""

from __future__ import annotations

from pathlib import Path


def test_acknowledged_writes_survive_kill_9(start_agent, tmp_path: Path) -> None:
    data = tmp_path / "data"
    args = ("-server", "-bootstrap", "-data-dir", str(data), "-node", "durable", "-bind", "127.0.0.1")
    agent = start_agent(*args, dev=False)
    for i in range(20):
        body = {"Node": f"ext-{i}", "Address": f"192.0.2.{i + 1}",
                "Service": {"Service": "db", "ID": f"db-{i}", "Port": 5000 + i}}
        assert agent.put("/v1/catalog/register", body).status == 200
    assert agent.stop(kill=True) != 0
    again = start_agent(*args, dev=False)
    rows = again.get("/v1/catalog/service/db").json()
    assert sorted(r["ServiceID"] for r in rows) == sorted(f"db-{i}" for i in range(20))
    node_id = again.get("/v1/agent/self").json()["Config"]["NodeID"]
    assert (data / "node-id").read_text().strip() == node_id
