"""Gossip encryption (agent/gossip/crypto.py) and the envelope (agent/gossip/envelope.py)."""

from __future__ import annotations

import asyncio
import random

import pytest

from agent.gossip import crypto
from agent.gossip.envelope import KEYRING_REQUEST, SWIM, MalformedEnvelope, Sealer, frame, read_frame
from agent.gossip.errors import Unauthenticated
from agent.gossip.keyring import Keyring

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


@pytest.mark.parametrize("size", [16, 24, 32])
def test_roundtrip_every_key_size(size: int) -> None:
    key = bytes(range(size))
    packet = crypto.encrypt(key, b"hello gossip")
    assert packet[0] == crypto.VERSION
    assert len(packet) == len(b"hello gossip") + crypto.OVERHEAD
    assert crypto.decrypt([key], packet) == b"hello gossip"


def test_nonces_differ() -> None:
    assert crypto.encrypt(KEY, b"x") != crypto.encrypt(KEY, b"x")


def test_empty_plaintext_roundtrips() -> None:
    assert crypto.decrypt([KEY], crypto.encrypt(KEY, b"")) == b""


def test_wrong_key_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        crypto.decrypt([OTHER], crypto.encrypt(KEY, b"secret"))


def test_any_installed_key_opens() -> None:
    packet = crypto.encrypt(KEY, b"secret")
    assert crypto.decrypt([OTHER, bytes(16), KEY], packet) == b"secret"


@pytest.mark.parametrize("position", [0, 1, 5, 13, -1])
def test_tampering_is_detected(position: int) -> None:
    packet = bytearray(crypto.encrypt(KEY, b"secret payload"))
    packet[position] ^= 0x01
    with pytest.raises(Unauthenticated):
        crypto.decrypt([KEY], bytes(packet))


def test_truncated_packet_is_unauthenticated() -> None:
    packet = crypto.encrypt(KEY, b"secret payload")
    for cut in range(len(packet)):
        with pytest.raises(Unauthenticated):
            crypto.decrypt([KEY], packet[:cut])


def test_garbage_never_raises_anything_else() -> None:
    rng = random.Random(1234)
    print("seed 1234")
    for _ in range(2000):
        data = rng.randbytes(rng.randrange(0, 80))
        if rng.random() < 0.5 and data:
            data = b"\x01" + data[1:]
        with pytest.raises(Unauthenticated):
            crypto.decrypt([KEY, OTHER], data)


# --- envelope ---

def test_sealer_plaintext_without_keyring() -> None:
    sealer = Sealer(None)
    packet = sealer.seal(SWIM, b"body")
    assert packet == b"\x00body"
    opened = sealer.open(packet)
    assert (opened.family, opened.body, opened.authenticated) == (SWIM, b"body", False)


def test_sealer_encrypts_and_authenticates() -> None:
    sealer = Sealer(Keyring([KEY]))
    packet = sealer.seal(KEYRING_REQUEST, b"body")
    assert b"body" not in packet
    opened = sealer.open(packet)
    assert (opened.family, opened.body, opened.authenticated) == (KEYRING_REQUEST, b"body", True)


def test_verify_incoming_refuses_plaintext_and_wrong_keys() -> None:
    sealer = Sealer(Keyring([KEY]))
    with pytest.raises(Unauthenticated):
        sealer.open(b"\x00plaintext")
    with pytest.raises(Unauthenticated):
        sealer.open(Sealer(Keyring([OTHER])).seal(SWIM, b"x"))


def test_verify_incoming_off_accepts_plaintext() -> None:
    sealer = Sealer(Keyring([KEY]), verify_incoming=False)
    opened = sealer.open(b"\x00plaintext")
    assert (opened.body, opened.authenticated) == (b"plaintext", False)
    assert sealer.open(sealer.seal(SWIM, b"x")).authenticated


def test_verify_outgoing_off_sends_plaintext_unless_forced() -> None:
    sealer = Sealer(Keyring([KEY]), verify_incoming=False, verify_outgoing=False)
    assert sealer.seal(SWIM, b"x") == b"\x00x"
    assert sealer.open(sealer.seal(SWIM, b"x", always_encrypt=True)).authenticated


def test_unknown_family_and_empty_packets_are_malformed() -> None:
    sealer = Sealer(None)
    for packet in (b"", b"\x09abc", b"\xffabc"):
        with pytest.raises(MalformedEnvelope):
            sealer.open(packet)


def test_frames_roundtrip_and_limit() -> None:
    async def go() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(frame(b"abc") + frame(b"") + b"\x00\x00\x10\x00")
        reader.feed_eof()
        assert await read_frame(reader) == b"abc"
        assert await read_frame(reader) == b""
        with pytest.raises(MalformedEnvelope):
            await read_frame(reader, max_size=100)
        empty = asyncio.StreamReader()
        empty.feed_eof()
        with pytest.raises(asyncio.IncompleteReadError):
            await read_frame(empty)
    asyncio.run(go())
