"""The fast path's KV writes and reads (agent.http.fastpath.FastPathProtocol) against a fake
catalog: the proposed command, the read barrier, the answer for each outcome, replies kept in
request order, the hand-off after."""

from __future__ import annotations

import asyncio

import pytest

from agent.catalog.commands import KVCommand
from agent.catalog.kv import KVEntry
from agent.errors import NoLeader
from agent.http.fastpath import FastPathServer, ReadCache


class FakeSocket(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.sent = b""
        self.paused = False

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.sent += data

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def close(self) -> None:
        pass

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol


class FakeKV:
    def __init__(self) -> None:
        self.entries: dict[str, KVEntry] = {}
        self.watchers: list[tuple[list[str], object]] = []

    def watch(self, wake, keys: list[str]):
        watcher = (keys, wake)
        self.watchers.append(watcher)
        return type("Handle", (), {"cancel": lambda _: self.watchers.remove(watcher)})()

    def put(self, entry: KVEntry) -> None:
        self.entries[entry.key] = entry
        for keys, wake in list(self.watchers):
            if entry.key in keys:
                wake(entry.modify_index)  # type: ignore[operator]

    def get(self, key: str) -> tuple[int, KVEntry | None]:
        entry = self.entries.get(key)
        return (entry.modify_index if entry else 3), entry


class FakeCatalog:
    def __init__(self) -> None:
        self.proposed: list[KVCommand] = []
        self.outcomes: list[asyncio.Future[object]] = []
        self.barriers: list[asyncio.Future[None]] = []
        self.fsm = type("FSM", (), {"kv": FakeKV()})()
        self.lease = True

    def reads_locally(self) -> bool:
        return self.lease

    def read_ready(self, mode: str) -> bool:
        return mode == "stale" or (mode == "leader" and self.lease)

    async def read_barrier(self, mode: str) -> None:
        if self.read_ready(mode):
            return
        barrier: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.barriers.append(barrier)
        await barrier

    def known_leader(self) -> bool:
        return True

    def last_contact_ms(self) -> int:
        return 0

    async def apply(self, command: KVCommand) -> object:
        self.proposed.append(command)
        outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self.outcomes.append(outcome)
        return await outcome


class Fallback(asyncio.Protocol):
    received = b""

    def data_received(self, data: bytes) -> None:
        Fallback.received += data


def put(key: str, body: bytes) -> bytes:
    return f"PUT /v1/kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def bodies(sent: bytes) -> list[tuple[int, bytes]]:
    out = []
    for response in sent.split(b"HTTP/1.1 ")[1:]:
        status = int(response[:3])
        out.append((status, response.partition(b"\r\n\r\n")[2]))
    return out


@pytest.fixture
def connection():
    catalog = FakeCatalog()
    server = FastPathServer(ReadCache(), catalog, Fallback, max_body_bytes=1 << 20)
    sock = FakeSocket()
    protocol = server()
    protocol.connection_made(sock)
    return catalog, server, protocol, sock


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_each_outcome_gets_its_answer_in_request_order(connection) -> None:
    catalog, server, protocol, sock = connection
    Fallback.received = b""
    protocol.data_received(put("a", b"1") + put("b", b"22") + put("c", b"") + put("d", b"4")
                           + b"GET /v1/agent/self HTTP/1.1\r\n\r\n")
    await settle()
    assert len(catalog.proposed) == 1  # the next request waits for the first answer
    op = catalog.proposed[0].op
    assert (op.verb, op.key, op.value, op.flags) == ("set", "a", b"1", 0)
    catalog.outcomes[0].set_result(True)
    await settle()
    catalog.outcomes[1].set_result(False)
    await settle()
    catalog.outcomes[2].set_exception(NoLeader("No cluster leader"))
    await settle()
    catalog.outcomes[3].set_exception(RuntimeError("boom"))
    await settle()
    assert [c.op.key for c in catalog.proposed] == ["a", "b", "c", "d"]
    assert catalog.proposed[2].op.value == b""
    assert bodies(sock.sent) == [(200, b"true"), (200, b"false"), (500, b"No cluster leader"),
                                 (500, b"Internal error")]
    assert b"Traceback" not in sock.sent and b"boom" not in sock.sent
    assert Fallback.received == b"GET /v1/agent/self HTTP/1.1\r\n\r\n"  # handed off once the writes were answered
    assert server.served == 4 and not server.pending


async def test_a_body_arriving_in_pieces_is_written_once_complete(connection) -> None:
    catalog, _, protocol, sock = connection
    request = put("k", b"x" * 3000)
    for i in range(0, len(request), 700):
        protocol.data_received(request[i:i + 700])
        await settle()
    assert [c.op.value for c in catalog.proposed] == [b"x" * 3000]
    catalog.outcomes[0].set_result(True)
    await settle()
    assert bodies(sock.sent) == [(200, b"true")]


async def test_a_flood_behind_a_pending_write_stops_reading_until_it_is_answered(connection, monkeypatch) -> None:
    from agent.http import fastpath

    monkeypatch.setattr(fastpath, "PAUSE_BUFFERED", 100)
    catalog, _, protocol, sock = connection
    protocol.data_received(put("k", b"1"))
    await settle()
    protocol.data_received(put("k", b"2" * 200))
    assert sock.paused
    catalog.outcomes[0].set_result(True)
    await settle()
    assert not sock.paused and [c.op.value for c in catalog.proposed] == [b"1", b"2" * 200]


async def test_a_client_gone_before_the_answer_leaves_the_write_standing(connection) -> None:
    catalog, server, protocol, sock = connection
    protocol.data_received(put("k", b"1"))
    await settle()
    protocol.connection_lost(None)
    catalog.outcomes[0].set_result(True)
    await settle()
    assert sock.sent == b"" and not server.pending and len(catalog.proposed) == 1


def get(target: str) -> bytes:
    return f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def header(reply: bytes, name: bytes) -> bytes:
    for line in reply.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(name.lower() + b":"):
            return line.partition(b":")[2].strip()
    return b""


async def test_kv_reads_wait_for_their_barrier_and_answer_in_order(connection) -> None:
    catalog, server, protocol, sock = connection
    catalog.fsm.kv.entries["cfg/a"] = KVEntry("cfg/a", b"hello", 0, create_index=5, modify_index=7)
    Fallback.received = b""
    protocol.data_received(get("/v1/kv/cfg/a") + get("/v1/kv/cfg/a?consistent") + get("/v1/kv/cfg/a?stale")
                           + get("/v1/kv/cfg/a?consistent") + get("/v1/kv/cfg/missing?consistent"))
    await settle()
    assert bodies(sock.sent) == [(200, b'[{"LockIndex":0,"Key":"cfg/a","Flags":0,"Value":"aGVsbG8=",'
                                       b'"CreateIndex":5,"ModifyIndex":7}]')]   # default: the lease vouches
    assert header(sock.sent, b"X-Consul-Effective-Consistency") == b"leader"
    assert header(sock.sent, b"X-Consul-Index") == b"7" and header(sock.sent, b"X-Consul-KnownLeader") == b"true"
    assert len(catalog.barriers) == 1                     # ?consistent waits for its read-index round
    catalog.fsm.kv.entries["cfg/a"] = KVEntry("cfg/a", b"newer", 0, create_index=5, modify_index=9)
    catalog.barriers[0].set_result(None)
    await settle()
    replies = sock.sent.split(b"HTTP/1.1 ")[1:]
    assert len(replies) == 3 and b'"ModifyIndex":9' in replies[1] and b'"ModifyIndex":9' in replies[2]
    assert [header(b"HTTP/1.1 " + r, b"X-Consul-Effective-Consistency") for r in replies] == [
        b"leader", b"consistent", b"stale"]
    catalog.barriers[1].set_exception(NoLeader("No cluster leader"))
    await settle()
    assert bodies(sock.sent)[-1] == (500, b"No cluster leader")
    catalog.barriers[2].set_result(None)
    await settle()
    assert bodies(sock.sent)[-1] == (404, b"")
    assert header(sock.sent.split(b"HTTP/1.1 ")[-1], b"X-Consul-Index") == b"3"
    assert Fallback.received == b"" and server.served == 5 and not server.pending


async def test_a_default_read_without_a_fresh_lease_takes_a_barrier(connection) -> None:
    catalog, _, protocol, sock = connection
    catalog.lease = False
    catalog.fsm.kv.entries["k"] = KVEntry("k", b"", 0, create_index=2, modify_index=2)
    protocol.data_received(get("/v1/kv/k"))
    await settle()
    assert sock.sent == b"" and len(catalog.barriers) == 1
    catalog.barriers[0].set_result(None)
    await settle()
    assert bodies(sock.sent) == [(200, b'[{"LockIndex":0,"Key":"k","Flags":0,"Value":null,'
                                       b'"CreateIndex":2,"ModifyIndex":2}]')]


async def test_a_blocking_read_parks_until_its_key_changes_and_a_gone_client_frees_it(connection) -> None:
    catalog, server, protocol, sock = connection
    kv = catalog.fsm.kv
    kv.put(KVEntry("cfg/b", b"1", 0, create_index=4, modify_index=4))
    protocol.data_received(get("/v1/kv/cfg/b?index=4&wait=1m") + get("/v1/kv/cfg/b?stale"))
    await settle()
    assert sock.sent == b"" and len(kv.watchers) == 1     # parked; the read behind it waits its turn
    kv.put(KVEntry("cfg/other", b"x", 0, create_index=5, modify_index=5))
    await settle()
    assert sock.sent == b""                                # another key: still parked
    kv.put(KVEntry("cfg/b", b"2", 0, create_index=4, modify_index=6))
    await settle()
    replies = sock.sent.split(b"HTTP/1.1 ")[1:]
    assert [header(b"HTTP/1.1 " + r, b"X-Consul-Index") for r in replies] == [b"6", b"6"]
    assert not kv.watchers
    protocol.data_received(get("/v1/kv/cfg/b?index=6"))    # parks again (default wait: 5 min)
    await settle()
    assert len(kv.watchers) == 1 and len(server.pending) == 1
    protocol.connection_lost(None)
    await settle()
    assert not kv.watchers and not server.pending          # nothing left behind for a gone client


async def test_a_blocking_read_already_passed_answers_at_once(connection) -> None:
    catalog, _, protocol, sock = connection
    catalog.fsm.kv.put(KVEntry("k", b"v", 0, create_index=8, modify_index=8))
    protocol.data_received(get("/v1/kv/k?index=3&wait=10s&consistent"))
    await settle()
    assert len(catalog.barriers) == 1 and sock.sent == b""   # ?consistent: the barrier first
    catalog.barriers[0].set_result(None)
    await settle()
    assert header(sock.sent, b"X-Consul-Index") == b"8" and header(sock.sent, b"X-Consul-Effective-Consistency") \
        == b"consistent"


async def test_a_parked_read_keeps_its_connection_open_past_the_idle_timeout(connection) -> None:
    from agent.http.fastpath import IDLE_SECONDS

    catalog, server, protocol, sock = connection
    sock.closed = False
    sock.close = lambda: setattr(sock, "closed", True)  # type: ignore[method-assign]
    catalog.fsm.kv.put(KVEntry("k", b"v", 0, create_index=2, modify_index=2))
    protocol.data_received(get("/v1/kv/k?index=2&wait=10m"))
    await settle()
    server.close_idle(protocol.last_seen + IDLE_SECONDS + 1)
    assert not sock.closed and protocol.busy
    catalog.fsm.kv.put(KVEntry("k", b"w", 0, create_index=2, modify_index=3))
    await settle()
    server.close_idle(protocol.last_seen + IDLE_SECONDS + 1)
    assert sock.closed


async def test_readers_of_one_version_share_one_encoded_reply(connection, monkeypatch) -> None:
    import json

    from agent.http import fastpath

    encoded: list[object] = []
    monkeypatch.setattr(fastpath, "json", type("J", (), {"dumps": staticmethod(
        lambda data, **kw: encoded.append(data) or json.dumps(data, **kw))}))
    catalog, server, protocol, sock = connection
    catalog.fsm.kv.put(KVEntry("k", b"v", 0, create_index=2, modify_index=2))
    protocol.data_received(get("/v1/kv/k") + get("/v1/kv/k"))
    first = server.last_kv_reply
    assert first is not None and sock.sent == first[1] * 2 and len(encoded) == 1   # encoded once, sent twice
    catalog.fsm.kv.put(KVEntry("k", b"w", 0, create_index=2, modify_index=3))
    protocol.data_received(get("/v1/kv/k"))
    assert server.last_kv_reply is not None and server.last_kv_reply[1] != first[1]
    assert b'"ModifyIndex":3' in sock.sent.split(b"HTTP/1.1 ")[-1] and len(encoded) == 2
