"""ServerPool: which server a client agent talks to (layer 3).

Contract:
- `ServerPool(members, datacenter)`: the servers are the gossip members that are alive (ALIVE or
  SUSPECT) with `tags["role"] == "consul"`, `tags["dc"] == datacenter` and a numeric
  `tags["port"]` (the server port, which serves the HTTP API): `Server.url` is
  `http://{address}:{port}`. `servers()` lists them in a stable order (by name).
- `candidates()` is the order one request tries them in, each at most once: the last server that
  worked first, then the others in a rotation that starts at a random offset (spreading clients
  over servers, like Consul's shuffled server list) and moves on after each failure; servers
  marked bad in the last `bad_for` seconds come last (they are still tried: a pool never refuses
  to try a server it knows about). `mark_good(server)` / `mark_bad(server)` record outcomes.
- `run(attempt)` calls `attempt(server)` for each candidate until one returns; an attempt raises
  `Unreachable` to say "the request never reached this server, try the next"; any other error
  propagates at once (the server answered, so it counts as reachable). No server known, or all
  unreachable → `NoServers` ("No known Consul servers", HTTP 500 through `NoLeader`'s mapping).
- `on_available(callback)`: called (synchronously) when a server becomes usable after none was:
  the first time `refresh()` / `servers()` sees a server after seeing none, and when a request
  succeeds after every server had failed. The agent uses it to start an anti-entropy sync at once.
  Call `refresh()` on every gossip member event.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from agent.errors import NoLeader
from agent.gossip.messages import Member, MemberState

log = logging.getLogger("waypost.remote")

BAD_SECONDS = 30.0  # how long a failed server is tried last (Consul rotates it to the back the same way)
SERVER_ROLE = "consul"
_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)

T = TypeVar("T")


class NoServers(NoLeader):
    """No server is known, or none could be reached (Consul: 500 "No known Consul servers")."""

    def __init__(self, message: str = "No known Consul servers"):
        super().__init__(message)


class Unreachable(Exception):
    """Raised by a `ServerPool.run` attempt: the request never reached the server (refused,
    connect timeout, DNS failure); the pool marks it bad and tries the next one."""


@dataclass(frozen=True, slots=True)
class Server:
    name: str
    address: str  # host (IPv4 or IPv6 text)
    port: int  # the server port (HTTP API)
    datacenter: str

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}"


def server_of(member: Member, datacenter: str) -> Server | None:
    """The server behind a gossip member, or None when it is not a live server of `datacenter`."""
    tags = member.tags
    if member.state not in _LIVE or tags.get("role") != SERVER_ROLE or tags.get("dc") != datacenter:
        return None
    port = tags.get("port", "")
    if not port.isdigit() or not 0 < int(port) < 65536:
        return None
    return Server(member.name, member.address, int(port), datacenter)


class ServerPool:
    def __init__(self, members: Callable[[], list[Member]], datacenter: str, *,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 bad_for: float = BAD_SECONDS) -> None:
        self._members = members
        self.datacenter = datacenter
        self._clock = clock
        self._bad_for = bad_for
        self._offset = (rng or random.Random()).randrange(1 << 16)
        self._preferred: str | None = None
        self._bad: dict[str, float] = {}  # server name → when it last failed
        self._callbacks: list[Callable[[], None]] = []
        self._had_servers = False
        self._all_failed = False

    # --- membership ---
    def servers(self) -> list[Server]:
        found = [s for s in (server_of(m, self.datacenter) for m in self._members()) if s is not None]
        found.sort(key=lambda s: s.name)
        self._note_known(bool(found))
        return found

    def refresh(self) -> None:
        """Re-read the members (call on gossip member events): fires `on_available` when the first
        server appears."""
        self.servers()

    def on_available(self, callback: Callable[[], None]) -> Callable[[], None]:
        self._callbacks.append(callback)
        return lambda: self._callbacks.remove(callback) if callback in self._callbacks else None

    def _note_known(self, known: bool) -> None:
        if known and not self._had_servers:
            self._had_servers = True
            self._fire()
        elif not known:
            self._had_servers = False

    def _fire(self) -> None:
        for callback in list(self._callbacks):
            try:
                callback()
            except Exception:  # a hook must never break a request
                log.exception("server-available hook failed")

    # --- choosing ---
    def candidates(self) -> list[Server]:
        servers = self.servers()
        if not servers:
            return []
        start = self._offset % len(servers)
        rotated = servers[start:] + servers[:start]
        now = self._clock()
        for name, since in list(self._bad.items()):
            if now - since >= self._bad_for:
                del self._bad[name]
        good = [s for s in rotated if s.name not in self._bad]
        bad = sorted((s for s in rotated if s.name in self._bad), key=lambda s: self._bad[s.name])
        preferred = [s for s in good if s.name == self._preferred]
        return preferred + [s for s in good if s.name != self._preferred] + bad

    def mark_good(self, server: Server) -> None:
        self._bad.pop(server.name, None)
        self._preferred = server.name
        if self._all_failed:
            self._all_failed = False
            self._fire()

    def mark_bad(self, server: Server) -> None:
        self._bad[server.name] = self._clock()
        if self._preferred == server.name:
            self._preferred = None
        self._offset += 1  # rotate: the next request starts at another server

    def preferred(self) -> Server | None:
        """The server requests go to first right now (None when none is known)."""
        candidates = self.candidates()
        return candidates[0] if candidates else None

    async def run(self, attempt: Callable[[Server], Awaitable[T]]) -> T:
        candidates = self.candidates()
        if not candidates:
            raise NoServers()
        reasons: list[str] = []
        for server in candidates:
            try:
                result = await attempt(server)
            except Unreachable as exc:
                self.mark_bad(server)
                reasons.append(f"{server.name} ({server.url}): {exc}")
                continue
            except Exception:  # it answered (with an error): it is reachable
                self.mark_good(server)
                raise
            self.mark_good(server)
            return result
        self._all_failed = True
        log.warning("no server reachable: %s", "; ".join(reasons))
        raise NoServers()
