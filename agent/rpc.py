"""The server port: Raft frames and the cluster HTTP API on one TCP listener (layer 3).

Contract: `ServerPortListener(raft_factory, http_factory)` owns `ports.server` (8300) of a server agent.
Every accepted connection is sniffed on its first bytes: an HTTP request line (`GET `, `PUT `,
`POST`, ...) hands the connection, with every byte read so far, to the HTTP protocol from
`http_factory` (client agents reach servers this way: the same API users see, one protocol to
secure and debug); anything else is a Raft connection and is handed, with the same bytes, to the
protocol from `raft_factory` (agent.raft.transport frames: a frame header's 4-byte length can never
spell an HTTP method, as frames are at most 64 MiB). Without a factory for what arrived, the
connection is closed. A connection that sends nothing for
`SNIFF_TIMEOUT` seconds is closed. `start(host, port)` returns the bound port (0 = ephemeral);
`close()` stops listening and closes the connections still being sniffed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger("waypost.rpc")
HTTP_PREFIXES = (b"GET ", b"PUT ", b"POST", b"DELE", b"HEAD", b"OPTI", b"PATC")
SNIFF_BYTES = 4
SNIFF_TIMEOUT = 10.0
ProtocolFactory = Callable[[], asyncio.Protocol]


class ServerPortListener:
    def __init__(self, raft_factory: ProtocolFactory | None, http_factory: ProtocolFactory | None) -> None:
        self._raft_factory = raft_factory
        self._http_factory = http_factory
        self._server: asyncio.Server | None = None
        self._sniffing: set[_SniffProtocol] = set()

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

    def _dispatch(self, transport: asyncio.Transport, first: bytes) -> None:
        factory = self._http_factory if first[:SNIFF_BYTES] in HTTP_PREFIXES else self._raft_factory
        if factory is None:
            transport.close()  # e.g. Raft frames to a single server, which has no Raft peers
            return
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(first)


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
