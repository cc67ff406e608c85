"""SWIM gossip wire messages and the member record (pure, layer 1).

Contract:
- `Member` is the frozen view of one cluster member that the core hands out (`Swim.members()`);
  `address` is the host text, `port` the gossip port, `state_changed` the core clock time of its
  last state change. `serf_status()` maps to Consul's /v1/agent/members `Status` numbers.
- Messages are frozen dataclasses. `encode(msg)` packs one as a msgpack array `[tag, fields...]`;
  `decode(data)` is its exact inverse and raises `MalformedMessage` (never anything else) for any
  bytes that are not a valid message: undecodable, wrong tag, arity or field type.
- `Compound(parts)` carries several already-encoded messages in one packet (parts are bytes, so a
  broadcast is encoded once and re-sent many times); compounds never nest.
- `PushPull` carries the full member table (`NodeState` rows) for anti-entropy over a stream.
- `Dead(left=True)` announces a graceful leave (or a force-leave) and moves the member to LEFT.
- Addresses on the wire are "host:port" (`join_hostport` / `split_hostport`; IPv6 hosts in brackets).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgpack


class MemberState(enum.IntEnum):
    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class MalformedMessage(ValueError):
    """Bytes that are not a valid gossip message."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    address: str
    port: int
    tags: Mapping[str, str]
    state: MemberState
    incarnation: int
    state_changed: float

    def serf_status(self) -> int:
        """Consul's /v1/agent/members Status: alive/suspect → 1, left → 3, failed → 4 (2 "leaving" unused)."""
        if self.state in (MemberState.ALIVE, MemberState.SUSPECT):
            return 1
        return 3 if self.state == MemberState.LEFT else 4

    @property
    def addr(self) -> str:
        return join_hostport(self.address, self.port)


def join_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_hostport(addr: str, default_port: int | None = None) -> tuple[str, int]:
    """"host:port", "[v6]:port", or a bare host (needs `default_port`) → (host, port); ValueError if bad."""
    if addr.startswith("["):
        host, sep, rest = addr[1:].partition("]")
        if not sep:
            raise ValueError(f"bad address {addr!r}")
        if not rest:
            if default_port is None:
                raise ValueError(f"missing port in {addr!r}")
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"bad address {addr!r}")
        return host, _port(rest[1:], addr)
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        return host, _port(port, addr)
    if default_port is None:
        raise ValueError(f"missing port in {addr!r}")
    return addr, default_port


def _port(text: str, addr: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port in {addr!r}")
    return int(text)


# --- messages -------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str          # the name the sender believes lives at this address (misdirected pings are ignored)
    source: str          # sender's name
    source_addr: str     # "host:port" of the sender's gossip port: where the ack goes


@dataclass(frozen=True, slots=True)
class IndirectPing:
    seq: int
    target: str
    target_addr: str
    source: str
    source_addr: str
    nack: bool           # the requester wants a Nack if the target does not answer in time


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Alive:
    name: str
    address: str
    port: int
    incarnation: int
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Suspect:
    name: str
    incarnation: int
    source: str


@dataclass(frozen=True, slots=True)
class Dead:
    name: str
    incarnation: int
    source: str
    left: bool = False   # True: a graceful leave (or force-leave) → LEFT instead of DEAD


@dataclass(frozen=True, slots=True)
class NodeState:
    name: str
    address: str
    port: int
    incarnation: int
    state: MemberState
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class PushPull:
    join: bool
    reply: bool          # False: a request (answer with our state on the same stream); True: the answer
    states: tuple[NodeState, ...]


@dataclass(frozen=True, slots=True)
class Compound:
    parts: tuple[bytes, ...]


Message = Ping | IndirectPing | Ack | Nack | Alive | Suspect | Dead | PushPull | Compound

_TAGS: dict[type, int] = {Ping: 0, IndirectPing: 1, Ack: 2, Nack: 3, Alive: 4, Suspect: 5, Dead: 6,
                          PushPull: 7, Compound: 8}
COMPOUND_TAG = 8
ALIVE_TAG = 4


def _state_row(s: NodeState) -> list[Any]:
    return [s.name, s.address, s.port, s.incarnation, int(s.state), dict(s.tags)]


def to_record(msg: Message) -> list[Any]:
    if isinstance(msg, Ping):
        return [0, msg.seq, msg.target, msg.source, msg.source_addr]
    if isinstance(msg, IndirectPing):
        return [1, msg.seq, msg.target, msg.target_addr, msg.source, msg.source_addr, msg.nack]
    if isinstance(msg, Ack):
        return [2, msg.seq, msg.source]
    if isinstance(msg, Nack):
        return [3, msg.seq, msg.source]
    if isinstance(msg, Alive):
        return [4, msg.name, msg.address, msg.port, msg.incarnation, dict(msg.tags)]
    if isinstance(msg, Suspect):
        return [5, msg.name, msg.incarnation, msg.source]
    if isinstance(msg, Dead):
        return [6, msg.name, msg.incarnation, msg.source, msg.left]
    if isinstance(msg, PushPull):
        return [7, msg.join, msg.reply, [_state_row(s) for s in msg.states]]
    if isinstance(msg, Compound):
        return [8, list(msg.parts)]
    raise TypeError(f"not a gossip message: {type(msg).__name__}")


def encode(msg: Message) -> bytes:
    return msgpack.packb(to_record(msg), use_bin_type=True)


def encode_compound(parts: list[bytes]) -> bytes:
    """One packet carrying several encoded messages (a single part is sent as itself)."""
    if len(parts) == 1:
        return parts[0]
    return msgpack.packb([COMPOUND_TAG, parts], use_bin_type=True)


def compound_overhead(n_parts: int) -> int:
    """Upper bound of the bytes a compound adds around its parts (array headers + bin headers)."""
    return 6 + 3 * n_parts


def unpack_record(data: bytes) -> Any:
    """The raw msgpack value (not yet validated: pass it to `from_record`)."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as exc:  # untrusted bytes: any unpack failure is a malformed message
        raise MalformedMessage(f"undecodable message: {exc}") from exc


def decode(data: bytes) -> Message:
    return from_record(unpack_record(data))


def _s(v: Any) -> str:
    if type(v) is not str:
        raise MalformedMessage("expected a string")
    return v


def _i(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise MalformedMessage("expected a non-negative integer")
    return v


def _b(v: Any) -> bool:
    if type(v) is not bool:
        raise MalformedMessage("expected a boolean")
    return v


def _tags(v: Any) -> dict[str, str]:
    if type(v) is not dict:
        raise MalformedMessage("expected a map of strings")
    for k, x in v.items():
        if type(k) is not str or type(x) is not str:
            raise MalformedMessage("expected a map of strings")
    return v


def _port_field(v: Any) -> int:
    if type(v) is not int or not 0 <= v < 65536:
        raise MalformedMessage("bad port")
    return v


def _row(v: Any) -> NodeState:
    if type(v) is not list or len(v) != 6:
        raise MalformedMessage("bad push-pull row")
    state = _i(v[4])
    if state > MemberState.LEFT:
        raise MalformedMessage("bad member state")
    return NodeState(_s(v[0]), _s(v[1]), _port_field(v[2]), _i(v[3]), MemberState(state), _tags(v[5]))


_ARITY = {0: 5, 1: 7, 2: 3, 3: 3, 4: 6, 5: 4, 6: 5, 7: 4, 8: 2}


def from_record(rec: Any) -> Message:
    if type(rec) is not list or not rec or type(rec[0]) is not int or _ARITY.get(rec[0]) != len(rec):
        raise MalformedMessage("not a gossip record")
    tag = rec[0]
    if tag == 0:
        return Ping(_i(rec[1]), _s(rec[2]), _s(rec[3]), _s(rec[4]))
    if tag == 1:
        return IndirectPing(_i(rec[1]), _s(rec[2]), _s(rec[3]), _s(rec[4]), _s(rec[5]), _b(rec[6]))
    if tag == 2:
        return Ack(_i(rec[1]), _s(rec[2]))
    if tag == 3:
        return Nack(_i(rec[1]), _s(rec[2]))
    if tag == 4:
        return Alive(_s(rec[1]), _s(rec[2]), _port_field(rec[3]), _i(rec[4]), _tags(rec[5]))
    if tag == 5:
        return Suspect(_s(rec[1]), _i(rec[2]), _s(rec[3]))
    if tag == 6:
        return Dead(_s(rec[1]), _i(rec[2]), _s(rec[3]), _b(rec[4]))
    if tag == 7:
        if type(rec[3]) is not list:
            raise MalformedMessage("bad push-pull states")
        return PushPull(_b(rec[1]), _b(rec[2]), tuple(_row(r) for r in rec[3]))
    parts = rec[1]
    if type(parts) is not list or any(type(p) is not bytes for p in parts):
        raise MalformedMessage("bad compound parts")
    return Compound(tuple(parts))
