"""The Raft transport's inbound side (agent.raft.transport.FrameReader): frames are cut out of the
byte stream however it is split, the first frame must be a HELLO, and a malformed or oversized frame
closes that connection only."""

from __future__ import annotations

import asyncio

import msgpack

from agent.raft import transport as raft_transport
from agent.raft.transport import FORWARD, HELLO, RAFT, Transport, frame


class FakeSocket(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def reader_with(received: list[tuple[str, int, bytes]]) -> tuple[Transport, raft_transport.FrameReader, FakeSocket]:
    owner = Transport("s1", "127.0.0.1:1", lambda src, kind, body: received.append((src, kind, body)), lambda: b"")
    reader = owner.inbound_protocol()
    sock = FakeSocket()
    reader.connection_made(sock)
    return owner, reader, sock


HELLO_S2 = frame(HELLO, msgpack.packb(["s2", "127.0.0.1:2", 3, []]))


def test_frames_are_cut_out_however_the_bytes_arrive() -> None:
    stream = HELLO_S2 + frame(RAFT, b"one") + frame(FORWARD, b"") + frame(RAFT, b"x" * 70_000)
    for chunk in (1, 3, 5, 7, 4096, len(stream)):
        received: list[tuple[str, int, bytes]] = []
        owner, reader, sock = reader_with(received)
        for i in range(0, len(stream), chunk):
            reader.data_received(stream[i:i + chunk])
        assert [(src, kind, len(body)) for src, kind, body in received] == [
            ("s2", HELLO, len(HELLO_S2) - 5), ("s2", RAFT, 3), ("s2", FORWARD, 0), ("s2", RAFT, 70_000)], chunk
        assert received[1][2] == b"one" and not sock.closed
        assert reader._buffer == bytearray()
        reader.connection_lost(None)
        assert reader not in owner._inbound


def test_a_connection_that_does_not_start_with_hello_is_closed() -> None:
    received: list[tuple[str, int, bytes]] = []
    _, reader, sock = reader_with(received)
    reader.data_received(frame(RAFT, b"one") + HELLO_S2)
    assert sock.closed and received == []


def test_an_oversized_frame_closes_the_connection(monkeypatch) -> None:
    monkeypatch.setattr(raft_transport, "MAX_FRAME", 100)
    received: list[tuple[str, int, bytes]] = []
    _, reader, sock = reader_with(received)
    reader.data_received(HELLO_S2 + frame(RAFT, b"y" * 101))
    assert sock.closed and [kind for _, kind, _ in received] == [HELLO]


def test_a_frame_its_handler_rejects_closes_only_that_connection() -> None:
    def on_frame(src: str, kind: int, body: bytes) -> None:
        if kind == RAFT:
            raise ValueError("not a raft message")

    owner = Transport("s1", "127.0.0.1:1", on_frame, lambda: b"")
    bad, good = owner.inbound_protocol(), owner.inbound_protocol()
    bad_sock, good_sock = FakeSocket(), FakeSocket()
    bad.connection_made(bad_sock)
    good.connection_made(good_sock)
    bad.data_received(HELLO_S2 + frame(RAFT, b"junk"))
    good.data_received(HELLO_S2)
    assert bad_sock.closed and not good_sock.closed
    owner.close()
    assert good_sock.closed
