"""Raft transport: TCP between servers with length-prefixed frames (layer 2).

Contract:
- A frame is `>IB` (body length, kind) + body. Kinds: RAFT (body = `codec.encode(msg)`), HELLO
  (msgpack [id, address, expect, [[id, address], ...]]), FORWARD (msgpack [req_id, data]: a
  follower's write for the leader), FORWARD_RESP (msgpack [req_id, index, term, leader_hint]),
  OPERATOR (msgpack [req_id, op, server_id]: remove-peer / transfer-leader run on the leader)
  and OPERATOR_RESP (msgpack [req_id, error message or ""]).
- Every connection is one-way: a server writes only on its outbound connections and reads only
  inbound ones, so replies travel on the replier's own outbound connection. Each outbound
  connection starts with a HELLO; the receiver learns the sender's id and address from it.
- One outbound connection per peer address, reconnected with exponential backoff
  (`BACKOFF_MIN`..`BACKOFF_MAX`). A frame is written to the socket at once when the connection
  is up, nothing is queued and the socket holds less than `DIRECT_WRITE_LIMIT` unsent bytes (no
  task switch on the replication path); otherwise it waits in a bounded queue of `QUEUE_FRAMES`
  frames — when that is full (slow or unreachable peer) new frames are dropped: Raft retries on
  its own.
- Received frames go to `on_frame(src_id, kind, body)`, called from the inbound protocol's
  `data_received` as soon as a frame is complete (`inbound_protocol()`, the factory for a listener:
  no reader task is woken per frame); HELLOs also go there (src_id is the id inside). A connection
  whose first frame is not a HELLO, or that sends a malformed or oversized frame, is closed.
  Server ids are node names; addresses are host:port of the peer's server port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from collections.abc import Callable

import msgpack

from agent.raft import codec
from agent.raft.messages import Message

FRAME = struct.Struct(">IB")
RAFT, HELLO, FORWARD, FORWARD_RESP, OPERATOR, OPERATOR_RESP = 0, 1, 2, 3, 4, 5
MAX_FRAME = 64 * 1024 * 1024
QUEUE_FRAMES = 4096
DIRECT_WRITE_LIMIT = 1 << 20  # bytes buffered in the socket beyond which frames wait in the queue
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
CONNECT_TIMEOUT = 2.0
log = logging.getLogger("waypost.raft.transport")

FrameHandler = Callable[[str, int, bytes], None]


def frame(kind: int, body: bytes) -> bytes:
    return FRAME.pack(len(body), kind) + body


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Peer:
    def __init__(self, address: str, hello: Callable[[], bytes]) -> None:
        self.address = address
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(QUEUE_FRAMES)
        self._hello = hello
        self.dropped = 0
        self.connected = False
        self._writer: asyncio.StreamWriter | None = None

    def put(self, data: bytes) -> None:
        """Write at once when connected, nothing is queued and the socket buffer is short (no task
        switch on the replication path); otherwise queue for the connection task."""
        writer = self._writer
        if (writer is not None and self.queue.empty()
                and writer.transport.get_write_buffer_size() < DIRECT_WRITE_LIMIT):
            try:
                writer.write(data)
                return
            except (OSError, RuntimeError):  # closing: the connection task reconnects
                self._writer = None
        try:
            self.queue.put_nowait(data)
        except asyncio.QueueFull:
            self.dropped += 1

    async def run(self) -> None:
        backoff = BACKOFF_MIN
        host, port = split_address(self.address)
        while True:
            writer = None
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_TIMEOUT)
                sock = writer.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.connected = True
                backoff = BACKOFF_MIN
                writer.write(self._hello())
                self._writer = writer
                while True:
                    first = await self.queue.get()
                    chunks = [first]
                    while not self.queue.empty() and len(chunks) < 512:
                        chunks.append(self.queue.get_nowait())
                    writer.write(b"".join(chunks))
                    await writer.drain()
            except (OSError, TimeoutError, ConnectionError, RuntimeError) as exc:
                # RuntimeError: uvloop's write on a transport the peer already closed
                log.debug("raft connection to %s: %s", self.address, exc)
            finally:
                self.connected = False
                self._writer = None
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError, ConnectionError):
                        await writer.wait_closed()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)


class Transport:
    def __init__(self, server_id: str, address: str, on_frame: FrameHandler,
                 hello_body: Callable[[], bytes]) -> None:
        self.id = server_id
        self.address = address
        self.on_frame = on_frame
        self._hello_body = hello_body
        self.addresses: dict[str, str] = {}  # server id → address
        self._peers: dict[str, _Peer] = {}   # address → outbound connection
        self._new: list[_Peer] = []
        self._changed = asyncio.Event()
        self._inbound: set[FrameReader] = set()
        self._server: asyncio.Server | None = None

    # --- addressing ---
    def learn(self, server_id: str, address: str) -> bool:
        """Remember `server_id` at `address`; True when that is news."""
        if server_id == self.id or not address or self.addresses.get(server_id) == address:
            return False
        self.addresses[server_id] = address
        self.connect(address)
        return True

    def connect(self, address: str) -> None:
        if address == self.address or address in self._peers:
            return
        peer = _Peer(address, lambda: frame(HELLO, self._hello_body()))
        self._peers[address] = peer
        self._new.append(peer)
        self._changed.set()

    # --- sending ---
    def send(self, msg: Message) -> None:
        self.send_frame(msg.dst, RAFT, codec.encode(msg))

    def send_frame(self, server_id: str, kind: int, body: bytes) -> bool:
        address = self.addresses.get(server_id)
        peer = self._peers.get(address) if address else None
        if peer is None:
            return False
        peer.put(frame(kind, body))
        return True

    def broadcast_hello(self) -> None:
        data = frame(HELLO, self._hello_body())
        for peer in self._peers.values():
            peer.put(data)

    # --- serving ---
    async def listen(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.inbound_protocol, host, port, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                while True:
                    for peer in self._new:
                        group.create_task(peer.run(), name=f"raft-peer-{peer.address}")
                    self._new = []
                    await self._changed.wait()
                    self._changed.clear()
        finally:
            self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for reader in list(self._inbound):
            reader.close()
        self._inbound.clear()

    def inbound_protocol(self) -> FrameReader:
        """The protocol for one accepted Raft connection (a listener's protocol factory)."""
        return FrameReader(self)

    @staticmethod
    def _hello_src(body: bytes) -> str:
        try:
            rec = msgpack.unpackb(body, raw=False)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return ""
        if isinstance(rec, list) and rec and isinstance(rec[0], str):
            return rec[0]
        return ""


class FrameReader(asyncio.Protocol):
    """One inbound connection: frames are cut from the bytes as they arrive and handed to
    `on_frame` from `data_received` itself (no reader task to wake per frame)."""

    def __init__(self, owner: Transport) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._src = ""
        self._closed = False      # no frame is handed on once we decided to close

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._owner._inbound.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._inbound.discard(self)
        self._transport = None

    def close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset, size = 0, len(buffer)
        try:
            while size - offset >= FRAME.size and not self._closed:
                length, kind = FRAME.unpack_from(buffer, offset)
                if length > MAX_FRAME:
                    self.close()
                    return
                end = offset + FRAME.size + length
                if end > size:
                    break
                self._frame(kind, bytes(buffer[offset + FRAME.size:end]))
                offset = end
        except Exception:  # a malformed frame: drop this connection, keep serving others
            log.warning("dropping raft connection after a malformed frame", exc_info=True)
            self.close()
            return
        if self._closed:
            buffer.clear()
        else:
            del buffer[:offset]

    def _frame(self, kind: int, body: bytes) -> None:
        if kind == HELLO:
            self._src = self._owner._hello_src(body) or self._src
        if not self._src:
            self.close()  # the first frame must be a HELLO
            return
        self._owner.on_frame(self._src, kind, body)
