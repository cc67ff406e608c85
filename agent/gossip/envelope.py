"""Gossip packet envelope and TCP framing (layer 2).

Contract:
- Plaintext = one family byte + body: `SWIM` (0, the core's payload), `KEYRING_REQUEST` (1),
  `KEYRING_RESPONSE` (2), `USER_EVENT` (3, reserved).
- `Sealer.seal(family, body)` encrypts the plaintext with the keyring's primary key (crypto.py)
  unless there is no keyring or `verify_outgoing` is False (then it is sent as plaintext);
  `always_encrypt=True` (keyring queries) encrypts whenever there is a keyring.
- `Sealer.open(packet)` → `Opened(family, body, authenticated)`. With a keyring it first tries
  every installed key; a packet none opens raises `Unauthenticated` when `verify_incoming`,
  else it is read as plaintext. Without a keyring packets are plaintext. An empty packet or an
  unknown family raises `MalformedEnvelope`.
- TCP frames are `>I` body length + body, at most `MAX_FRAME` (16 MiB); `read_frame` raises
  `MalformedEnvelope` for a larger length and `asyncio.IncompleteReadError` at EOF.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from agent.gossip import crypto
from agent.gossip.errors import GossipError, Unauthenticated
from agent.gossip.keyring import Keyring

SWIM, KEYRING_REQUEST, KEYRING_RESPONSE, USER_EVENT = 0, 1, 2, 3
FAMILIES = (SWIM, KEYRING_REQUEST, KEYRING_RESPONSE, USER_EVENT)
FRAME = struct.Struct(">I")
MAX_FRAME = 16 * 1024 * 1024


class MalformedEnvelope(GossipError):
    """An empty packet, an unknown family byte or an oversized frame."""


@dataclass(frozen=True, slots=True)
class Opened:
    family: int
    body: bytes
    authenticated: bool  # True when a key opened it (False: plaintext)


class Sealer:
    def __init__(self, keyring: Keyring | None, verify_incoming: bool = True, verify_outgoing: bool = True) -> None:
        self.keyring = keyring
        self.verify_incoming = verify_incoming
        self.verify_outgoing = verify_outgoing

    @property
    def encrypting(self) -> bool:
        return self.keyring is not None and self.verify_outgoing

    def seal(self, family: int, body: bytes, *, always_encrypt: bool = False) -> bytes:
        plain = bytes((family,)) + body
        if self.keyring is None or not (self.verify_outgoing or always_encrypt):
            return plain
        return crypto.encrypt(self.keyring.primary, plain)

    def open(self, packet: bytes) -> Opened:
        authenticated = False
        if self.keyring is not None:
            try:
                packet = crypto.decrypt(self.keyring.raw_keys(), packet)
                authenticated = True
            except Unauthenticated:
                if self.verify_incoming:
                    raise
        if not packet or packet[0] not in FAMILIES:
            raise MalformedEnvelope("empty packet or unknown family byte")
        return Opened(packet[0], packet[1:], authenticated)


def frame(data: bytes) -> bytes:
    return FRAME.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader, max_size: int = MAX_FRAME) -> bytes:
    (length,) = FRAME.unpack(await reader.readexactly(FRAME.size))
    if length > max_size:
        raise MalformedEnvelope(f"frame of {length} bytes is over the {max_size}-byte limit")
    return await reader.readexactly(length)
