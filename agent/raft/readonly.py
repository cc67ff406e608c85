"""Read-index bookkeeping for linearizable (`?consistent`) reads (layer 1, pure).

Contract: the leader records each read request as (context, commit index at arrival, who asked)
and broadcasts a heartbeat carrying the context; once a quorum of voters has answered that
heartbeat, the request — and every request queued before it, which the same round also
confirms — is released as a `ReadState(context, index)`. The asker may serve the read once its
applied index reaches `index`. Requests that arrive before the leader has committed an entry of
its own term wait in `pending_until_commit` (the commit index is not yet known to be current).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ReadState:
    context: bytes
    index: int


@dataclass(slots=True)
class ReadRequest:
    context: bytes
    index: int
    origin: str  # the server that asked (the leader itself or a follower)
    acks: set[str] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self.queue: list[ReadRequest] = []
        self.by_context: dict[bytes, ReadRequest] = {}
        self.pending_until_commit: list[tuple[bytes, str]] = []

    def add(self, context: bytes, index: int, origin: str, self_id: str) -> bool:
        """Queue a request; False when this context is already queued (a duplicate)."""
        if context in self.by_context:
            return False
        request = ReadRequest(context, index, origin, {self_id})
        self.queue.append(request)
        self.by_context[context] = request
        return True

    def ack(self, context: bytes, server_id: str, has_quorum: Callable[[set[str]], bool]) -> list[ReadRequest]:
        """Record a heartbeat answer; return the requests it releases (in arrival order)."""
        request = self.by_context.get(context)
        if request is None:
            return []
        request.acks.add(server_id)
        if not has_quorum(request.acks):
            return []
        pos = self.queue.index(request) + 1
        released, self.queue = self.queue[:pos], self.queue[pos:]
        for r in released:
            del self.by_context[r.context]
        return released

    def last_context(self) -> bytes:
        return self.queue[-1].context if self.queue else b""

    def clear(self) -> None:
        self.queue.clear()
        self.by_context.clear()
        self.pending_until_commit.clear()
