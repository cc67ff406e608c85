"""The fast path's KV writes (agent.http.fastpath.FastPathProtocol) against a fake catalog: the
proposed command, the answer for each outcome, replies kept in request order, the hand-off after."""

from __future__ import annotations

import asyncio

import pytest

from agent.catalog.commands import KVCommand
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


class FakeCatalog:
    def __init__(self) -> None:
        self.proposed: list[KVCommand] = []
        self.outcomes: list[asyncio.Future[object]] = []

    def reads_locally(self) -> bool:
        return True

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
    assert server.served == 4 and not server.writes


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
    assert sock.sent == b"" and not server.writes and len(catalog.proposed) == 1
