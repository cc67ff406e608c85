"""KV, transactions, sessions, locks and the watch stream against a real dev agent."""

from __future__ import annotations

import base64
import itertools
import json
import threading
import urllib.request

import consul

from tests.integration.harness import AgentProcess, run_cli


def _index(reply) -> int:
    return int(reply.headers["X-Consul-Index"])


def _session(agent: AgentProcess, **body) -> str:
    reply = agent.put("/v1/session/create", body or None)
    assert reply.status == 200, reply.text
    return reply.json()["ID"]


def _in_thread(fn):
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def test_kv_round_trip_and_reads(dev_agent: AgentProcess) -> None:
    a = dev_agent
    assert a.put("/v1/kv/rt/web/foo?flags=42", raw=b"hello").json() is True
    reply = a.get("/v1/kv/rt/web/foo")
    [entry] = reply.json()
    assert entry["Key"] == "rt/web/foo" and entry["Flags"] == 42
    assert base64.b64decode(entry["Value"]) == b"hello" and _index(reply) == entry["ModifyIndex"]
    raw = a.get("/v1/kv/rt/web/foo?raw")
    assert raw.body == b"hello" and raw.headers["X-Content-Type-Options"] == "nosniff"
    missing = a.get("/v1/kv/rt/nope")
    assert missing.status == 404 and missing.body == b"" and _index(missing) >= 1
    a.put("/v1/kv/rt/web/bar", raw=b"")
    a.put("/v1/kv/rt/web/sub/x", raw=b"1")
    assert a.get("/v1/kv/rt/web/?keys&separator=/").json() == ["rt/web/bar", "rt/web/foo", "rt/web/sub/"]
    assert [e["Key"] for e in a.get("/v1/kv/rt/?recurse").json()] == ["rt/web/bar", "rt/web/foo", "rt/web/sub/x"]
    assert a.get("/v1/kv/rt/web/bar").json()[0]["Value"] is None
    assert a.get("/v1/kv/rt/zzz/?recurse").status == 404
    # CAS
    modify = entry["ModifyIndex"]
    assert a.put("/v1/kv/rt/web/foo?cas=0", raw=b"x").json() is False
    assert a.put(f"/v1/kv/rt/web/foo?cas={modify}", raw=b"x").json() is True
    assert a.put(f"/v1/kv/rt/web/foo?cas={modify}", raw=b"y").json() is False
    assert a.request("DELETE", "/v1/kv/rt/web/foo?cas=1").json() is False
    assert a.request("DELETE", "/v1/kv/rt/?recurse").json() is True
    assert a.get("/v1/kv/rt/?recurse").status == 404


def test_bad_input_is_4xx_and_changes_nothing(dev_agent: AgentProcess) -> None:
    a = dev_agent
    before = _index(a.get("/v1/kv/bad/?recurse"))
    assert a.put("/v1/kv/bad/a%00b", raw=b"x").status == 400
    assert a.put("/v1/kv/bad/a/%2E%2E/b", raw=b"x").status == 400
    assert a.put("/v1/kv/bad/x?cas=1&acquire=abc", raw=b"x").status == 400
    assert a.put("/v1/kv/bad/x?flags=-1", raw=b"x").status == 400
    assert a.put("/v1/kv/bad/x?fence=junk", raw=b"x").status == 400
    assert a.put("/v1/kv/bad/big", raw=b"x" * (512 * 1024 + 1)).status == 413
    assert a.get("/v1/kv/").status == 400  # Missing key name
    assert a.request("DELETE", "/v1/kv/").status == 400
    assert a.request("DELETE", "/v1/kv/bad?recurse&cas=1").status == 400
    assert a.put("/v1/kv/bad/x?acquire=00000000-0000-0000-0000-000000000000", raw=b"").status == 500
    assert a.put("/v1/txn", [{"KV": {"Verb": "set", "Key": "bad/t", "Value": "!!notbase64"}}]).status == 400
    assert a.put("/v1/txn", [{"KV": {"Verb": "set", "Key": f"bad/{i}"}} for i in range(65)]).status == 413
    assert a.put("/v1/txn", {"KV": {}}).status == 400
    reply = a.put("/v1/txn", [{"KV": {"Verb": "set", "Key": "bad/t", "Value": "eA=="}},
                              {"KV": {"Verb": "frobnicate", "Key": "bad/u"}},
                              {"KV": {"Verb": "cas", "Key": "bad/missing", "Index": 5}}])
    assert reply.status == 409
    assert [e["OpIndex"] for e in reply.json()["Errors"]] == [1, 2]
    assert a.get("/v1/kv/bad/?recurse").status == 404  # nothing half-applied
    assert _index(a.get("/v1/kv/bad/?recurse")) == before
    assert a.put("/v1/session/create", {"TTL": "1s"}).status == 400
    assert a.put("/v1/session/create", {"Behavior": "explode"}).status == 400
    assert a.put("/v1/session/create", {"Node": "no-such-node"}).status == 400
    assert a.put("/v1/session/destroy/not-a-uuid").status == 400


def test_txn_commits_atomically(dev_agent: AgentProcess) -> None:
    a = dev_agent
    ops = [{"KV": {"Verb": "set", "Key": "tx/a", "Value": base64.b64encode(b"1").decode(), "Flags": 3}},
           {"KV": {"Verb": "check-not-exists", "Key": "tx/b"}},
           {"KV": {"Verb": "get-tree", "Key": "tx/"}}]
    reply = a.put("/v1/txn", ops)
    assert reply.status == 200, reply.text
    results = reply.json()["Results"]
    assert results[0]["KV"]["Value"] is None and results[1]["KV"]["Value"] == "MQ=="
    read = a.put("/v1/txn", [{"KV": {"Verb": "get", "Key": "tx/a"}}])
    assert read.status == 200 and "X-Consul-KnownLeader" in read.headers


def test_blocking_prefix_wakes_only_for_its_prefix_and_on_delete(dev_agent: AgentProcess) -> None:
    a = dev_agent
    a.put("/v1/kv/cfg/app/port", raw=b"80")
    index = _index(a.get("/v1/kv/cfg/app/?recurse"))
    thread, out = _in_thread(lambda: a.get(f"/v1/kv/cfg/app/?recurse&index={index}&wait=20s"))
    a.put("/v1/kv/cfg/db/host", raw=b"db1")
    thread.join(timeout=0.5)
    assert thread.is_alive(), "a write outside the prefix woke the watcher"
    a.put("/v1/kv/cfg/app/host", raw=b"h")
    thread.join(timeout=10)
    assert _index(out[0]) > index and len(out[0].json()) == 2
    # a blocked reader of a key sees its delete (tombstone index)
    index = _index(a.get("/v1/kv/cfg/app/port"))
    thread, out = _in_thread(lambda: a.get(f"/v1/kv/cfg/app/port?index={index}&wait=20s"))
    a.request("DELETE", "/v1/kv/cfg/app/port")
    thread.join(timeout=10)
    assert out[0].status == 404 and _index(out[0]) > index


def test_sessions_locks_lock_delay_and_fencing(dev_agent: AgentProcess) -> None:
    a = dev_agent
    s1 = _session(a, Name="one", LockDelay="1s", TTL="30s")
    s2 = _session(a, Name="two")
    info = a.get(f"/v1/session/info/{s1}").json()
    assert info[0]["Node"] == "itest" and info[0]["LockDelay"] == 1_000_000_000 and info[0]["TTL"] == "30s"
    assert {s["ID"] for s in a.get("/v1/session/node/itest").json()} >= {s1, s2}
    assert a.put(f"/v1/session/renew/{s1}").json()[0]["ID"] == s1
    assert a.put("/v1/session/renew/00000000-0000-0000-0000-000000000000").status == 404
    acquired = a.put(f"/v1/kv/svc/leader?acquire={s1}", raw=b"one")
    assert acquired.json() is True
    token = acquired.headers["X-Waypost-Fence-Token"]
    assert a.put(f"/v1/kv/svc/leader?acquire={s2}", raw=b"two").json() is False
    assert a.put(f"/v1/kv/svc/data?fence={token}", raw=b"by one").json() is True
    entry = a.get("/v1/kv/svc/leader").json()[0]
    assert entry["Session"] == s1 and entry["LockIndex"] == 1
    assert a.put(f"/v1/session/destroy/{s1}").json() is True
    assert "Session" not in a.get("/v1/kv/svc/leader").json()[0]
    assert a.put(f"/v1/kv/svc/leader?acquire={s2}", raw=b"two").json() is False  # lock-delay (1s)
    a.wait_for(lambda: a.put(f"/v1/kv/svc/leader?acquire={s2}", raw=b"two").json(), 5, "lock-delay end")
    assert a.get("/v1/kv/svc/leader").json()[0]["LockIndex"] == 2
    assert a.put(f"/v1/kv/svc/data?fence={token}", raw=b"stale").json() is False
    assert base64.b64decode(a.get("/v1/kv/svc/data").json()[0]["Value"]) == b"by one"
    assert a.put(f"/v1/kv/svc/leader?release={s2}", raw=b"").json() is True
    assert a.put(f"/v1/session/destroy/{s2}").json() is True
    assert a.get(f"/v1/session/info/{s2}").json() == []


def test_watch_stream_delivers_every_write_in_order(dev_agent: AgentProcess) -> None:
    a = dev_agent
    start = _index(a.get("/v1/kv/stream/?recurse"))
    request = urllib.request.Request(f"{a.base}/v1/watch?prefix=stream/&index={start}")
    with urllib.request.urlopen(request, timeout=30) as response:
        for i in range(1000):
            a.put(f"/v1/kv/stream/k{i % 7}", raw=str(i).encode())
            if i % 100 == 0:
                a.put("/v1/kv/elsewhere", raw=b"noise")
        seen: list[dict] = []
        while len(seen) < 1000:
            line = response.readline()
            if line.strip():
                seen.append(json.loads(line))
    assert [base64.b64decode(e["Entry"]["Value"]).decode() for e in seen] == [str(i) for i in range(1000)]
    assert all(x["Index"] < y["Index"] for x, y in itertools.pairwise(seen))
    assert all(e["Key"].startswith("stream/") for e in seen)


def test_py_consul_kv_session_txn(dev_agent: AgentProcess) -> None:
    c = consul.Consul(host="127.0.0.1", port=dev_agent.http_port)
    assert c.kv.put("py/a", "1", flags=7)
    _, data = c.kv.get("py/a")
    assert data["Value"] == b"1" and data["Flags"] == 7
    assert c.kv.put("py/a", "2", cas=data["ModifyIndex"])
    assert not c.kv.put("py/a", "3", cas=data["ModifyIndex"])
    _, keys = c.kv.get("py/", keys=True)
    assert keys == ["py/a"]
    assert c.kv.get("py/none")[1] is None
    sid = c.session.create(name="py", ttl=15, lock_delay=0)
    assert c.kv.put("py/lock", "me", acquire=sid)
    _, held = c.kv.get("py/lock")
    assert held["Session"] == sid
    assert c.session.renew(sid)["ID"] == sid
    _, sessions = c.session.list()
    assert sid in {s["ID"] for s in sessions}
    result = c.txn.put([{"KV": {"Verb": "get", "Key": "py/a"}}])
    assert base64.b64decode(result["Results"][0]["KV"]["Value"]) == b"2"
    assert c.kv.put("py/lock", "bye", release=sid)
    assert c.session.destroy(sid)
    assert c.kv.delete("py/", recurse=True)
    assert c.kv.get("py/a")[1] is None


def test_cli_kv_get_put_delete(dev_agent: AgentProcess) -> None:
    port = dev_agent.http_port
    put = run_cli("kv", "put", "cli/key", "some value", http_port=port)
    assert put.returncode == 0 and put.stdout.strip() == "Success! Data written to: cli/key"
    got = run_cli("kv", "get", "cli/key", http_port=port)
    assert got.returncode == 0 and got.stdout == "some value\n"
    missing = run_cli("kv", "get", "cli/none", http_port=port)
    assert missing.returncode == 1 and "No key exists at: cli/none" in missing.stderr
    run_cli("kv", "put", "cli/other", "2", http_port=port)
    listing = run_cli("kv", "get", "-recurse", "cli/", http_port=port)
    assert listing.stdout.splitlines() == ["cli/key:some value", "cli/other:2"]
    deleted = run_cli("kv", "delete", "-recurse", "cli/", http_port=port)
    assert deleted.returncode == 0 and "Success! Deleted keys with prefix: cli/" in deleted.stdout
