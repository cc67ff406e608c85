"""The server port: Raft frames and the cluster HTTP API on one TCP listener (layer 3).

Contract: `ServerPortListener(on_raft, http_factory)` owns `ports.server` (8300) of a server agent.
Every accepted connection is sniffed on its first bytes: an HTTP request line (`GET `, `PUT `,
`POST`, ...) hands the connection, with every byte read so far, to the HTTP protocol from
`http_factory` (client agents reach servers this way: the same API users see, one protocol to
secure and debug); anything else is a Raft connection and is handed to a stream reader/writer pair
served by `on_raft(reader, writer)` (agent.raft.transport frames: a frame header's 4-byte length
can never spell an HTTP method, as frames are at most 64 MiB). A connection that sends nothing for
`SNIFF_TIMEOUT` seconds is closed. `start(host, port)` returns the bound port (0 = ephemeral);
`close()` stops listening and closes the connections still being sniffed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("waypost.rpc")
HTTP_PREFIXES = (b"GET ", b"PUT ", b"POST", b"DELE", b"HEAD", b"OPTI", b"PATC")
SNIFF_BYTES = 4
SNIFF_TIMEOUT = 10.0
STREAM_LIMIT = 2 ** 16

RaftHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class ServerPortListener:
    def __init__(self, on_raft: RaftHandler | None, http_factory: Callable[[], asyncio.Protocol] | None) -> None:
        self._on_raft = on_raft
        self._http_factory = http_factory
        self._server: asyncio.Server | None = None
        self._sniffing: set[_SniffProtocol] = set()
        self._raft_tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _SniffProtocol(self), host or None, port,
                                                reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for protocol in list(self._sniffing):
            protocol.abort()
        for task in list(self._raft_tasks):
            task.cancel()

    def _dispatch(self, transport: asyncio.Transport, first: bytes) -> None:
        if first[:SNIFF_BYTES] in HTTP_PREFIXES:
            if self._http_factory is None:
                transport.close()
                return
            protocol: asyncio.Protocol = self._http_factory()
        elif self._on_raft is None:
            transport.close()  # no Raft peers here (a single server)
            return
        else:
            reader = asyncio.StreamReader(limit=STREAM_LIMIT)
            protocol = asyncio.StreamReaderProtocol(reader, self._raft_connected)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(first)

    def _raft_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._on_raft is not None
        task = asyncio.get_running_loop().create_task(self._on_raft(reader, writer), name="raft-inbound")
        self._raft_tasks.add(task)
        task.add_done_callback(self._raft_tasks.discard)


class _SniffProtocol(asyncio.Protocol):
    def __init__(self, owner: ServerPortListener) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._owner._sniffing.add(self)
        self._timer = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT, self.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.close()
        self._done()

    def _done(self) -> None:
        self._owner._sniffing.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._transport = None

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) < SNIFF_BYTES or self._transport is None:
            return
        transport, first = self._transport, self._buffer
        self._done()
        try:
            self._owner._dispatch(transport, first)
        except Exception:  # never let one odd connection take the listener down
            log.warning("closing a server-port connection that could not be handed over", exc_info=True)
            transport.close()
