"""Gossip encryption with real agents (issue 6): a server and a client sharing an `encrypt` key
talk; the key is rotated with `waypost keyring` (install → use → remove) while they keep talking;
an agent with a wrong key is not admitted; `waypost keygen` makes keys the agent accepts."""

from __future__ import annotations

import base64
from pathlib import Path

from tests.integration.harness import AgentProcess, run_cli

FAST_GOSSIP = ('{"gossip_lan": {"probe_interval": "200ms", "probe_timeout": "100ms", '
               '"gossip_interval": "50ms", "suspicion_mult": 3}}')


def keygen() -> str:
    done = run_cli("keygen")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip()
    assert len(base64.b64decode(key)) == 32
    return key


def alive(agent: AgentProcess) -> set[str]:
    return {m["Name"] for m in agent.get("/v1/agent/members").json() if m["Status"] == 1}  # type: ignore[union-attr]


def start(tmp: Path, name: str, key: str, *extra: str, server: bool = False) -> AgentProcess:
    conf = tmp / "gossip.json"
    conf.write_text(FAST_GOSSIP)
    args = ["-node", name, "-data-dir", str(tmp / name), "-encrypt", key, "-config-file", str(conf), *extra]
    if server:
        args += ["-server", "-bootstrap"]
    return AgentProcess(tmp, *args, dev=False).start()


def test_rotated_key_keeps_the_cluster_talking_and_a_wrong_key_is_refused(tmp_path: Path) -> None:
    first, second = keygen(), keygen()
    agents: list[AgentProcess] = []
    try:
        server = start(tmp_path, "srv", first, server=True)
        agents.append(server)
        client = start(tmp_path, "cli", first, "-retry-join", server.serf_addr, "-retry-interval", "200ms")
        agents.append(client)
        server.wait_for(lambda: alive(server) == {"srv", "cli"}, what="the client to join")
        assert "Gossip Encryption: true" in client.log()

        for step in (["-install", second], ["-use", second], ["-remove", first]):
            done = run_cli("keyring", *step, http_port=server.http_port)
            assert done.returncode == 0, (step, done.stdout, done.stderr)
        listed = run_cli("keyring", "-list", http_port=client.http_port)
        assert listed.returncode == 0 and second in listed.stdout and first not in listed.stdout, listed.stdout
        saved = (tmp_path / "cli" / "serf" / "local.keyring").read_text()
        assert second in saved and first not in saved  # a restart keeps the rotated key

        client.stop()  # leave: then rejoin with the rotated keyring from its file
        client = start(tmp_path, "cli", first, "-retry-join", server.serf_addr, "-retry-interval", "200ms")
        agents.append(client)
        server.wait_for(lambda: alive(server) == {"srv", "cli"}, what="the client to rejoin with the new key")

        intruder = AgentProcess(tmp_path, "-node", "intruder", "-data-dir", str(tmp_path / "intruder"),
                                "-encrypt", first, "-join", server.serf_addr, dev=False)
        try:
            intruder.start()
            raise AssertionError("an agent with a retired key joined")
        except RuntimeError as exc:
            assert "exited with 1" in str(exc)
        assert "intruder" not in alive(server)
        stats = server.get("/v1/agent/metrics").json()
        assert stats is not None
    finally:
        for agent in agents:
            agent.stop(kill=True)


def test_a_bad_encrypt_key_stops_the_agent_with_a_clear_message(tmp_path: Path) -> None:
    agent = AgentProcess(tmp_path, "-node", "x", "-encrypt", "not-base64!", dev=True)
    try:
        agent.start()
        raise AssertionError("started with a bad key")
    except RuntimeError as exc:
        assert "exited with 1" in str(exc) and "Traceback" not in str(exc)
        assert "key" in agent.log().lower()
