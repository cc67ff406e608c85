"""Operator snapshots (`/v1/snapshot`, `waypost snapshot`) and `waypost kv export|import` against a
real dev agent."""

from __future__ import annotations

import base64
import http.client
import json
import threading
from pathlib import Path

from tests.integration.harness import AgentProcess, run_cli


def _kv(agent: AgentProcess, prefix: str, stale: bool = False) -> dict[str, tuple[int, bytes]]:
    reply = agent.get(f"/v1/kv/{prefix}?recurse" + ("&stale" if stale else ""))
    if reply.status == 404:
        return {}
    return {e["Key"]: (e["Flags"], base64.b64decode(e["Value"] or "")) for e in reply.json()}


def _nodes(agent: AgentProcess) -> list[str]:
    """Catalog nodes over a keep-alive connection (urllib's `Connection: close` skips the fast path)."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.http_port, timeout=10)
    try:
        conn.request("GET", "/v1/catalog/nodes")
        reply = conn.getresponse()
        assert reply.status == 200
        return [n["Node"] for n in json.loads(reply.read())]
    finally:
        conn.close()


def _services(agent: AgentProcess) -> dict:
    return agent.get("/v1/catalog/services").json()


def test_save_change_restore_brings_state_back(dev_agent: AgentProcess, tmp_path: Path) -> None:
    a = dev_agent
    port = a.http_port
    assert a.put("/v1/kv/snap/a?flags=5", raw=b"one").json() is True
    assert a.put("/v1/kv/snap/b", raw=b"two").json() is True
    assert a.put("/v1/catalog/register", {"Node": "ext1", "Address": "10.1.1.1",
                                          "Service": {"ID": "pay1", "Service": "payments", "Port": 9}}).status == 200
    saved_kv, saved_services = _kv(a, "snap/"), _services(a)

    direct = a.get("/v1/snapshot?stale")
    assert direct.status == 200 and int(direct.headers["X-Consul-Index"]) >= 1

    path = tmp_path / "backup.snap"
    saved = run_cli("snapshot", "save", str(path), http_port=port)
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.startswith("Saved and verified snapshot to index ")
    inspect = run_cli("snapshot", "inspect", str(path))
    assert inspect.returncode == 0, inspect.stderr
    fields = {ln.split()[0]: ln.split()[-1] for ln in inspect.stdout.splitlines() if ln.strip()}
    assert fields["Index"] == saved.stdout.split()[-1] and fields["Version"] == "1"
    assert int(fields["Size"]) > 0 and fields["ID"].count("-") == 2

    # change everything the snapshot covers
    assert a.put("/v1/kv/snap/a", raw=b"changed").json() is True
    assert a.request("DELETE", "/v1/kv/snap/b").json() is True
    assert a.put("/v1/kv/snap/new", raw=b"new").json() is True
    assert a.put("/v1/catalog/deregister", {"Node": "ext1"}).status == 200
    assert "payments" not in _services(a)
    for _ in range(2):  # the second read is answered from the fast path's cache
        assert "ext1" not in _nodes(a)
    before_restore = int(a.get("/v1/kv/snap/?recurse").headers["X-Consul-Index"])

    # a blocking query on the prefix is woken by the restore
    woken: list = []
    waiter = threading.Thread(target=lambda: woken.append(
        a.get(f"/v1/kv/snap/?recurse&index={before_restore}&wait=20s", timeout=30)))
    waiter.start()

    restored = run_cli("snapshot", "restore", str(path), http_port=port)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout.strip() == "Restored snapshot"
    waiter.join(timeout=25)
    assert woken and woken[0].status == 200
    assert _kv(a, "snap/") == saved_kv
    assert _services(a)["payments"] == saved_services["payments"]
    assert "ext1" in _nodes(a)  # cached catalog answers follow the restored store
    # indexes never go back: the restore happened at a later log index
    assert int(a.get("/v1/kv/snap/nothing-here").headers["X-Consul-Index"]) > before_restore
    # the agent keeps working after a restore
    assert a.put("/v1/kv/snap/after", raw=b"ok").json() is True
    assert _kv(a, "snap/")["snap/after"] == (0, b"ok")


def test_corrupt_archive_is_400_and_changes_nothing(dev_agent: AgentProcess, tmp_path: Path) -> None:
    a = dev_agent
    assert a.put("/v1/kv/corrupt/keep", raw=b"v").json() is True
    good = a.get("/v1/snapshot").body
    state = _kv(a, "corrupt/")
    index = int(a.get("/v1/kv/corrupt/keep").headers["X-Consul-Index"])
    flipped = bytearray(good)
    flipped[-5] ^= 0xFF
    for bad in (b"", b"garbage", bytes(flipped), good[:-10], good + b"extra"):
        reply = a.put("/v1/snapshot", raw=bad)
        assert reply.status == 400, (bad[:40], reply.status, reply.text)
        assert reply.text.startswith("Invalid snapshot:")
    assert _kv(a, "corrupt/") == state
    assert int(a.get("/v1/kv/corrupt/keep").headers["X-Consul-Index"]) == index

    path = tmp_path / "corrupt.snap"
    path.write_bytes(bytes(flipped))
    restored = run_cli("snapshot", "restore", str(path), http_port=a.http_port)
    assert restored.returncode == 1 and "Error verifying snapshot file" in restored.stderr
    inspect = run_cli("snapshot", "inspect", str(path))
    assert inspect.returncode == 1 and "checksum mismatch" in inspect.stderr
    missing = run_cli("snapshot", "inspect", str(tmp_path / "nope.snap"))
    assert missing.returncode == 1 and "Error opening snapshot file" in missing.stderr


def test_kv_export_import_round_trip(dev_agent: AgentProcess, tmp_path: Path) -> None:
    a = dev_agent
    port = a.http_port
    data = {f"exp/k{i:03d}": (i, f"value-{i}".encode()) for i in range(150)}
    data["exp/binary"] = (0, bytes(range(256)))
    data["exp/empty"] = (0, b"")
    for key, (flags, value) in data.items():
        assert a.put(f"/v1/kv/{key}?flags={flags}", raw=value).json() is True

    exported = run_cli("kv", "export", "exp/", http_port=port)
    assert exported.returncode == 0, exported.stderr
    doc = json.loads(exported.stdout)
    assert len(doc) == len(data) and set(doc[0]) == {"key", "flags", "value"}
    path = tmp_path / "export.json"
    path.write_text(exported.stdout)

    imported = run_cli("kv", "import", "-prefix", "copy/", str(path), http_port=port)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.count("Imported: copy/exp/") == len(data)
    assert _kv(a, "copy/exp/") == {f"copy/{k}": v for k, v in data.items()}

    assert a.request("DELETE", "/v1/kv/exp/?recurse").json() is True
    again = run_cli("kv", "import", f"@{path}", http_port=port)
    assert again.returncode == 0, again.stderr
    assert _kv(a, "exp/") == data

    empty = run_cli("kv", "export", "no-such-prefix/", http_port=port)
    assert empty.returncode == 0 and json.loads(empty.stdout) == []
    bad = tmp_path / "bad.json"
    bad.write_text('[{"key": "exp/x", "value": "***"}]')
    refused = run_cli("kv", "import", str(bad), http_port=port)
    assert refused.returncode == 1 and "base 64" in refused.stderr
    assert a.get("/v1/kv/exp/x").status == 404


def test_restore_through_a_follower_reaches_every_server(tmp_path: Path) -> None:
    from tests.integration.test_raft_cluster import free_port, server_args, wait_leader

    ports, serf_ports = [free_port() for _ in range(3)], [free_port() for _ in range(3)]
    agents = [AgentProcess(tmp_path, *server_args(tmp_path, i, ports, serf_ports), dev=False) for i in range(3)]
    try:
        for agent in agents:
            agent.start()
        leader = wait_leader(agents)
        followers = [a for a, port in zip(agents, ports, strict=True) if leader != f"127.0.0.1:{port}"]
        assert len(followers) == 2, leader
        follower = followers[0]
        assert follower.put("/v1/kv/cl/a", raw=b"saved", timeout=15).json() is True
        archive = follower.get("/v1/snapshot").body  # default mode: answered with the leader's state
        assert follower.put("/v1/kv/cl/a", raw=b"later", timeout=15).json() is True
        assert follower.put("/v1/kv/cl/b", raw=b"later", timeout=15).json() is True
        assert follower.put("/v1/snapshot", raw=archive, timeout=30).status == 200
        for agent in agents:
            agent.wait_for(lambda a=agent: _kv(a, "cl/", stale=True) == {"cl/a": (0, b"saved")}, timeout=15,
                           what="the restored KV on every server (stale reads: its own store)")
        assert follower.put("/v1/snapshot", raw=archive[:-1], timeout=15).status == 400
    finally:
        for agent in agents:
            agent.stop()


def test_a_restore_survives_kill_9_and_oversized_bodies_are_413(start_agent, tmp_path: Path) -> None:
    args = ("-server", "-bootstrap", "-data-dir", str(tmp_path / "data"), "-node", "durable", "-bind", "127.0.0.1")
    agent = start_agent(*args, dev=False)
    assert agent.put("/v1/kv/dur/a", raw=b"saved").json() is True
    archive = agent.get("/v1/snapshot").body
    assert agent.put("/v1/kv/dur/a", raw=b"later").json() is True
    assert agent.put("/v1/kv/dur/b", raw=b"later").json() is True
    assert agent.put("/v1/snapshot", raw=archive).status == 200
    assert agent.put("/v1/kv/dur/c", raw=b"after").json() is True
    assert agent.stop(kill=True) != 0
    again = start_agent(*args, dev=False)
    again.wait_for(lambda: _kv(again, "dur/") == {"dur/a": (0, b"saved"), "dur/c": (0, b"after")},
                   what="the restore replayed from the durable log")

    from agent.http.snapshot import MAX_ARCHIVE_BYTES

    conn = http.client.HTTPConnection("127.0.0.1", again.http_port, timeout=10)
    try:  # only the header is sent: the limit is checked before the body is read
        conn.putrequest("PUT", "/v1/snapshot")
        conn.putheader("Content-Length", str(MAX_ARCHIVE_BYTES + 1))
        conn.endheaders()
        assert conn.getresponse().status == 413
    finally:
        conn.close()
