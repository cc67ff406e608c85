"""gRPC health and H2PING probes against a tiny HTTP/2 server started by the test (h2c, loopback).

The server speaks just enough HTTP/2 (preface, SETTINGS, PING, one gRPC unary call); it is not a
real gRPC implementation, so this checks framing and the health protocol encoding, not interop."""

from __future__ import annotations

import asyncio
import struct

import pytest

from checks.definition import Status
from checks.probes import h2


def _service_of(message: bytes) -> str:
    if not message:
        return ""
    assert message[0] == 0x0A
    length, pos = h2._varint(message, 1)
    return message[pos : pos + length].decode()


async def start_server(statuses: dict[str, int], answer_ping: bool = True):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            assert await reader.readexactly(len(h2.PREFACE)) == h2.PREFACE
            writer.write(h2.frame(h2.SETTINGS, 0, 0))
            body = bytearray()
            while True:
                kind, flags, stream, payload = await h2.read_frame(reader)
                if kind == h2.SETTINGS and not flags & h2.ACK:
                    writer.write(h2.frame(h2.SETTINGS, h2.ACK, 0))
                elif kind == h2.PING and not flags & h2.ACK and answer_ping:
                    writer.write(h2.frame(h2.PING, h2.ACK, 0, payload))
                elif kind == h2.DATA and stream == 1:
                    body += payload
                    if flags & h2.END_STREAM:
                        service = _service_of(bytes(body[5:]))
                        head = h2.hpack_literal([(":status", "200"), ("content-type", "application/grpc")])
                        writer.write(h2.frame(h2.HEADERS, h2.END_HEADERS, 1, head))
                        if service in statuses:
                            msg = bytes([0x08, statuses[service]])
                            writer.write(h2.frame(h2.DATA, 0, 1, b"\x00" + struct.pack(">I", len(msg)) + msg))
                            trailer = h2.hpack_literal([("grpc-status", "0")])
                        else:
                            trailer = h2.hpack_literal([("grpc-status", "5")])
                        writer.write(h2.frame(h2.HEADERS, h2.END_HEADERS | h2.END_STREAM, 1, trailer))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.mark.parametrize(
    ("service", "status", "text"),
    [
        ("", Status.PASSING, "SERVING"),
        ("web", Status.CRITICAL, "NOT_SERVING"),
        ("nope", Status.CRITICAL, "no health"),
    ],
)
async def test_grpc_health(service, status, text):
    server, port = await start_server({"": 1, "web": 2})
    async with server:
        target = f"127.0.0.1:{port}" + (f"/{service}" if service else "")
        result = await h2.probe_grpc(target, 2.0)
    assert result.status == status and text in result.output


async def test_grpc_connection_refused():
    server, port = await start_server({})
    server.close()
    await server.wait_closed()
    result = await h2.probe_grpc(f"127.0.0.1:{port}", 1.0)
    assert result.status == Status.CRITICAL


async def test_h2ping_h2c_ok_and_timeout():
    server, port = await start_server({})
    async with server:
        ok = await h2.probe_h2ping(f"127.0.0.1:{port}", 2.0, use_tls=False)
    assert ok.status == Status.PASSING and ok.output == "HTTP2 ping was successful"
    mute, mute_port = await start_server({}, answer_ping=False)
    async with mute:
        bad = await h2.probe_h2ping(f"127.0.0.1:{mute_port}", 0.2, use_tls=False)
    assert bad.status == Status.CRITICAL


def test_request_encoding_round_trip():
    framed = h2.encode_request("my.service")
    assert framed[0] == 0 and int.from_bytes(framed[1:5], "big") == len(framed) - 5
    assert _service_of(framed[5:]) == "my.service"
    assert h2.decode_status(bytes([0x08, 0x01])) == 1
    assert h2.decode_status(b"") == 0
