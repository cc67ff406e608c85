"""gRPC health and H2PING probes over a minimal HTTP/2 client (layer 2: asyncio streams only).

No grpcio or h2 package needed: the client speaks just enough HTTP/2 for one request.
Contract:
- `probe_grpc(target, timeout, use_tls, tls_server_name, tls_skip_verify)`: `target` is
  `host:port[/service]`; calls `grpc.health.v1.Health/Check` with that service name. A response
  message with status SERVING → passing `gRPC check <target>: SERVING`; any other status, no
  message (e.g. grpc-status NOT_FOUND in the trailers), a reset stream or a transport error → critical.
- `probe_h2ping(address, timeout, use_tls, ...)`: sends an HTTP/2 PING (TLS with ALPN h2, or h2c
  when `use_tls` is false); the ACK → passing `HTTP2 ping was successful`; else critical.
Limits: response headers are not HPACK-decoded (only DATA frames are read), so a failing gRPC
status is reported by absence of a SERVING message, not by its grpc-status text.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct

from checks.probes.common import client_tls, describe, split_host_port
from checks.result import CheckResult

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY = 0x0, 0x1, 0x3, 0x4, 0x6, 0x7
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4
HEALTH_PATH = "/grpc.health.v1.Health/Check"
SERVING_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _hpack_int(value: int, prefix_bits: int = 7) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([value])
    out, value = bytearray([limit]), value - limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(headers: list[tuple[str, str]]) -> bytes:
    """HPACK: every header as 'literal without indexing, new name', no Huffman."""
    out = bytearray()
    for name, value in headers:
        out.append(0x00)
        for text in (name.encode(), value.encode()):
            out += _hpack_int(len(text)) + text
    return bytes(out)


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def encode_request(service: str) -> bytes:
    """A gRPC-framed grpc.health.v1.HealthCheckRequest."""
    raw = service.encode()
    message = (b"\x0a" + _encode_varint(len(raw)) + raw) if raw else b""
    return b"\x00" + struct.pack(">I", len(message)) + message


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_status(message: bytes) -> int:
    """The `status` field (1) of a HealthCheckResponse protobuf; 0 (UNKNOWN) when absent."""
    pos, status = 0, 0
    while pos < len(message):
        key, pos = _varint(message, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(message, pos)
            if field == 1:
                status = value
        elif wire == 2:
            length, pos = _varint(message, pos)
            pos += length
        elif wire == 5:
            pos += 4
        elif wire == 1:
            pos += 8
        else:
            raise ValueError("bad protobuf wire type")
    return status


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, int, bytes]:
    head = await reader.readexactly(9)
    length = int.from_bytes(head[:3], "big")
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    return head[3], head[4], stream, await reader.readexactly(length)


async def _connect(
    address: str, use_tls: bool, server_name: str, skip_verify: bool
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str, int]:
    host, port = split_host_port(address)
    tls = client_tls(skip_verify, ["h2"]) if use_tls else None
    reader, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname=(server_name or host) if tls else None
    )
    if tls is not None:
        ssl_object = writer.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            writer.close()
            raise ConnectionError("server did not negotiate HTTP/2 (ALPN h2)")
    writer.write(PREFACE + frame(SETTINGS, 0, 0))
    return reader, writer, host, port


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ConnectionError):
        await writer.wait_closed()


async def probe_h2ping(
    address: str,
    timeout: float,
    use_tls: bool = True,
    tls_server_name: str = "",
    tls_skip_verify: bool = False,
) -> CheckResult:
    opaque = os.urandom(8)
    try:
        async with asyncio.timeout(timeout):
            reader, writer, _, _ = await _connect(address, use_tls, tls_server_name, tls_skip_verify)
            try:
                writer.write(frame(PING, 0, 0, opaque))
                while True:
                    kind, flags, _, payload = await read_frame(reader)
                    if kind == SETTINGS and not flags & ACK:
                        writer.write(frame(SETTINGS, ACK, 0))
                    elif kind == PING and flags & ACK and payload == opaque:
                        return CheckResult.passing("HTTP2 ping was successful")
                    elif kind == GOAWAY:
                        raise ConnectionError("server sent GOAWAY")
            finally:
                await _close(writer)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        return CheckResult.critical(f"HTTP2 ping to {address} failed: {describe(exc)}")


async def probe_grpc(
    target: str,
    timeout: float,
    use_tls: bool = False,
    tls_server_name: str = "",
    tls_skip_verify: bool = False,
) -> CheckResult:
    address, _, service = target.partition("/")
    try:
        async with asyncio.timeout(timeout):
            reader, writer, host, port = await _connect(address, use_tls, tls_server_name, tls_skip_verify)
            try:
                headers = [
                    (":method", "POST"),
                    (":scheme", "https" if use_tls else "http"),
                    (":path", HEALTH_PATH),
                    (":authority", f"{host}:{port}"),
                    ("content-type", "application/grpc"),
                    ("te", "trailers"),
                    ("user-agent", "waypost-health-check"),
                ]
                writer.write(frame(HEADERS, END_HEADERS, 1, hpack_literal(headers)))
                writer.write(frame(DATA, END_STREAM, 1, encode_request(service)))
                body = await _read_stream(reader, writer)
            finally:
                await _close(writer)
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as exc:
        return CheckResult.critical(f"gRPC check {target}: {describe(exc)}")
    if len(body) < 5:
        return CheckResult.critical(f"gRPC check {target}: no health response (service unknown or error)")
    length = int.from_bytes(body[1:5], "big")
    try:
        status = decode_status(body[5 : 5 + length])
    except (ValueError, IndexError):
        return CheckResult.critical(f"gRPC check {target}: malformed health response")
    name = SERVING_STATUS.get(status, str(status))
    result = CheckResult.passing if status == 1 else CheckResult.critical
    return result(f"gRPC check {target}: {name}")


async def _read_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
    body = bytearray()
    while True:
        kind, flags, stream, payload = await read_frame(reader)
        if kind == SETTINGS and not flags & ACK:
            writer.write(frame(SETTINGS, ACK, 0))
        elif kind == PING and not flags & ACK:
            writer.write(frame(PING, ACK, 0, payload))
        elif kind == GOAWAY:
            raise ConnectionError("server sent GOAWAY")
        elif stream == 1 and kind == RST_STREAM:
            raise ConnectionError("stream reset by server")
        elif stream == 1 and kind == DATA:
            body += payload
            if flags & END_STREAM:
                return bytes(body)
        elif stream == 1 and kind == HEADERS and flags & END_STREAM:
            return bytes(body)
