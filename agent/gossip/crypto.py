"""Gossip encryption in Consul's (memberlist's) format (layer 2: reads os.urandom for nonces).

Contract:
- `encrypt(key, plaintext)` → `0x01 | 12-byte random nonce | AES-GCM(plaintext) + 16-byte tag`
  (memberlist encryption version 1: no padding, no associated data). The key is 16, 24 or 32 bytes
  (AES-128/192/256-GCM).
- `decrypt(keys, packet)` tries every key in order (primary first) and returns the plaintext;
  it raises `Unauthenticated` when the packet is too short, has another version byte, or no key
  opens it. It never raises anything else for any input bytes.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from agent.gossip.errors import Unauthenticated

VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = 1 + NONCE_SIZE + TAG_SIZE  # bytes an encrypted packet adds to its plaintext
KEY_SIZES = (16, 24, 32)


def encrypt(key: bytes, plaintext: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return bytes((VERSION,)) + nonce + AESGCM(key).encrypt(nonce, plaintext, None)


def decrypt(keys: Iterable[bytes], packet: bytes) -> bytes:
    if len(packet) < OVERHEAD or packet[0] != VERSION:
        raise Unauthenticated("not an encrypted packet")
    nonce, sealed = packet[1:1 + NONCE_SIZE], packet[1 + NONCE_SIZE:]
    for key in keys:
        try:
            return AESGCM(key).decrypt(nonce, sealed, None)
        except (InvalidTag, ValueError):
            continue
    raise Unauthenticated("no installed key authenticates the packet")
