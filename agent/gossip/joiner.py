"""Joining the LAN gossip pool: Consul's `-join` (once) and `-retry-join` loop (layer 3).

Contract:
- `normalize_address(address, default_port)` → `"host:port"` (IPv6 as `"[v6]:port"`) for `host`,
  `host:port`, `[v6]`, `[v6]:port` and a bare IPv6 literal. A port-less address gets
  `default_port` — memberlist's rule: the joining agent's own gossip port (8301 unless changed).
  Consul's go-discover cloud strings (`provider=aws ...`) and malformed addresses raise
  `JoinAddressError` (a `BadRequest`) whose message says what is wrong.
- `start_join(node, addresses)` joins once (Consul's old `-join`): the number of members that
  answered, or `GossipJoinError` (the agent exits with that reason; an unusable address is one
  of its reasons, nothing is sent then).
- `retry_join(node, addresses, interval, max_attempts, on_joined)`: Consul's `-retry-join`. Every
  address is validated before the first attempt; then one join per attempt with all addresses,
  a warning logged for each failed attempt, `sleep(interval)` between attempts (injectable for
  tests); an unusable address raises `RetryJoinFailed` (saying which) before any attempt.
  It returns after the first success (calling `on_joined(count)`, awaited if it returns an
  awaitable). With `max_attempts > 0` it raises `RetryJoinFailed` after that many failed attempts
  (the documented meaning of `retry_max`); `0` retries forever. Cancellation propagates.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from agent.errors import BadRequest
from agent.gossip.errors import GossipError, GossipJoinError

if TYPE_CHECKING:
    from agent.gossip.messages import Member

log = logging.getLogger("waypost.join")

DEFAULT_SERF_LAN_PORT = 8301  # Consul's ports.serf_lan; used when our own port is not known yet


class JoinAddressError(BadRequest):
    """A join address waypost cannot use (cloud auto-join string, bad port, empty)."""


class RetryJoinFailed(GossipError):
    """`-retry-join` gave up after `retry_max` failed attempts; the agent exits."""


class Joinable(Protocol):
    """What joining needs of a GossipNode."""

    async def join(self, addresses: Sequence[str]) -> int: ...

    def local_member(self) -> Member: ...


Sleep = Callable[[float], Awaitable[object]]
OnJoined = Callable[[int], object]


def normalize_address(address: str, default_port: int = DEFAULT_SERF_LAN_PORT) -> str:
    text = address.strip()
    if not text:
        raise JoinAddressError("empty join address")
    if "provider=" in text:
        raise JoinAddressError(
            f"cloud auto-join is not supported by waypost: {text!r} "
            "(give host, host:port or [ipv6]:port addresses)")
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise JoinAddressError(f"malformed join address {text!r}")
        return f"[{_ipv6(host, text)}]:{_port(rest[1:], text) if rest else default_port}"
    if text.count(":") > 1:  # a bare IPv6 literal: no port can be given without brackets
        return f"[{_ipv6(text, text)}]:{default_port}"
    host, sep, port = text.partition(":")
    if not host or any(c.isspace() for c in host):
        raise JoinAddressError(f"malformed join address {text!r}")
    return f"{host}:{_port(port, text) if sep else default_port}"


def _ipv6(host: str, original: str) -> str:
    try:
        return str(ipaddress.IPv6Address(host))
    except ValueError:
        raise JoinAddressError(f"malformed IPv6 address in join address {original!r}") from None


def _port(text: str, original: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise JoinAddressError(f"bad port in join address {original!r}")
    return int(text)


def default_port_of(node: Joinable) -> int:
    """memberlist joins a port-less address on the joining agent's own bind port."""
    try:
        port = node.local_member().port
    except Exception:  # a node that is not started has no member yet
        return DEFAULT_SERF_LAN_PORT
    return port if port > 0 else DEFAULT_SERF_LAN_PORT


def normalize_all(node: Joinable, addresses: Sequence[str]) -> list[str]:
    port = default_port_of(node)
    return [normalize_address(a, port) for a in addresses]


async def start_join(node: Joinable, addresses: Sequence[str]) -> int:
    """Consul's one-shot `-join`: join every address once; raise if none answered."""
    if not addresses:
        return 0
    try:
        targets = normalize_all(node, addresses)
    except JoinAddressError as err:
        raise GossipJoinError({"-join": str(err)}) from err
    log.info("Joining cluster... (%s)", ", ".join(targets))
    count = await node.join(targets)
    log.info("Join completed. Initial agents synced with: %d", count)
    return count


async def retry_join(node: Joinable, addresses: Sequence[str], interval: float, max_attempts: int,
                     on_joined: OnJoined | None = None, *, sleep: Sleep = asyncio.sleep) -> int:
    """Consul's `-retry-join` loop; the number of members that answered the successful attempt."""
    if not addresses:
        return 0
    try:
        targets = normalize_all(node, addresses)
    except JoinAddressError as err:
        raise RetryJoinFailed(f"agent: cannot retry-join: {err}") from err
    log.info("Joining cluster... (retry-join: %s)", ", ".join(targets))
    attempt = 0
    while True:
        attempt += 1
        try:
            count = await node.join(targets)
        except (GossipJoinError, OSError) as err:
            if max_attempts > 0 and attempt >= max_attempts:
                log.error("Join cluster failed, attempt %d of %d: %s", attempt, max_attempts, err)
                raise RetryJoinFailed(
                    f"agent: max join retry exhausted, exiting ({attempt} attempts; last error: {err})"
                ) from err
            log.warning("Join cluster failed, will retry in %gs (attempt %d%s): %s", interval, attempt,
                        f" of {max_attempts}" if max_attempts > 0 else "", err)
            await sleep(interval)
            continue
        log.info("Join cluster completed. Synced with %d initial agents", count)
        if on_joined is not None:
            result = on_joined(count)
            if inspect.isawaitable(result):
                await result
        return count
