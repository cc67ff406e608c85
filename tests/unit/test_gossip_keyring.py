"""The gossip keyring (agent/gossip/keyring.py): keys, persistence, operations, reports."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import pytest

from agent.errors import BadRequest
from agent.gossip.errors import KeyringError
from agent.gossip.keyring import Keyring, KeyringReport, apply_operation, generate_key, parse_key

K1 = base64.b64encode(bytes(range(32))).decode()
K2 = base64.b64encode(bytes(range(1, 33))).decode()
K3 = base64.b64encode(bytes(range(16))).decode()


def test_generate_key_is_32_bytes_and_parses() -> None:
    key = generate_key()
    assert len(parse_key(key)) == 32
    assert generate_key() != key


@pytest.mark.parametrize("size", [16, 24, 32])
def test_parse_key_sizes(size: int) -> None:
    assert parse_key(base64.b64encode(bytes(size)).decode()) == bytes(size)


def test_parse_key_messages() -> None:
    with pytest.raises(KeyringError, match="base64"):
        parse_key("not base64!!")
    with pytest.raises(KeyringError, match="must be 16, 24 or 32 bytes"):
        parse_key(base64.b64encode(bytes(20)).decode())
    with pytest.raises(KeyringError, match="0 bytes"):
        parse_key("")


def test_keyring_error_is_a_bad_request() -> None:
    assert issubclass(KeyringError, BadRequest)


def test_install_use_remove() -> None:
    ring = Keyring([parse_key(K1)])
    assert ring.keys() == [K1]
    ring.install(K2)
    ring.install(K2)  # idempotent
    assert ring.keys() == [K1, K2]
    assert ring.primary == parse_key(K1)
    ring.use(K2)
    assert ring.keys() == [K2, K1]
    assert ring.raw_keys()[0] == parse_key(K2)
    ring.remove(K1)
    assert ring.keys() == [K2]


def test_remove_primary_refused() -> None:
    ring = Keyring([parse_key(K1)])
    ring.install(K2)
    with pytest.raises(KeyringError, match="primary"):
        ring.remove(K1)
    assert ring.keys() == [K1, K2]


def test_use_or_remove_unknown_refused() -> None:
    ring = Keyring([parse_key(K1)])
    with pytest.raises(KeyringError, match="not in the keyring"):
        ring.use(K2)
    with pytest.raises(KeyringError, match="not in the keyring"):
        ring.remove(K2)


def test_bad_keys_refused() -> None:
    ring = Keyring([parse_key(K1)])
    with pytest.raises(KeyringError):
        ring.install("###")
    with pytest.raises(KeyringError):
        ring.install(b"short")
    with pytest.raises(KeyringError):
        Keyring([])


def test_explicit_primary_goes_first() -> None:
    ring = Keyring([parse_key(K1), parse_key(K2)], primary=parse_key(K2))
    assert ring.keys() == [K2, K1]


def test_persist_and_load(tmp_path: Path) -> None:
    path = tmp_path / "serf" / "local.keyring"
    ring = Keyring.load(path, K1)
    assert ring is not None and ring.keys() == [K1]
    assert json.loads(path.read_text()) == [K1]
    assert path.stat().st_mode & 0o777 == 0o600
    ring.install(K2)
    ring.use(K2)
    assert json.loads(path.read_text()) == [K2, K1]
    again = Keyring.load(path, "")
    assert again is not None and again.keys() == [K2, K1]


def test_file_wins_over_encrypt_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "local.keyring"
    path.write_text(json.dumps([K2, K1]))
    with caplog.at_level(logging.WARNING, logger="waypost.gossip.keyring"):
        ring = Keyring.load(path, K1)
    assert ring is not None and ring.keys() == [K2, K1]
    assert "overrides" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="waypost.gossip.keyring"):
        Keyring.load(path, K2)
    assert "overrides" not in caplog.text


def test_no_file_no_encrypt_is_none(tmp_path: Path) -> None:
    assert Keyring.load(tmp_path / "local.keyring", "") is None
    assert not (tmp_path / "local.keyring").exists()


def test_in_memory_keyring(tmp_path: Path) -> None:
    ring = Keyring.load(None, K1)
    assert ring is not None and ring.path is None
    ring.install(K2)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("content", ["not json", "[]", "{}", '["###"]', "[1]"])
def test_corrupt_file_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "local.keyring"
    path.write_text(content)
    with pytest.raises(KeyringError, match=str(path)):
        Keyring.load(path, K1)


def test_bad_encrypt_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="must be 16, 24 or 32"):
        Keyring.load(tmp_path / "local.keyring", base64.b64encode(b"12345").decode())


def test_apply_operation() -> None:
    ring = Keyring([parse_key(K1)])
    assert apply_operation(ring, "list", "") == ""
    assert apply_operation(ring, "use", K2) == "Requested key is not in the keyring"
    assert apply_operation(ring, "install", K2) == ""
    assert apply_operation(ring, "use", K2) == ""
    assert "primary" in apply_operation(ring, "remove", K2)
    assert apply_operation(ring, "remove", K1) == ""
    assert "Unknown" in apply_operation(ring, "rotate", K1)
    assert "not enabled" in apply_operation(None, "list", "")


def test_report_counts() -> None:
    report = KeyringReport(num_nodes=3)
    report.add("a", "", [K1, K2], K1)
    report.add("b", "", [K1], K1)
    report.add("c", "Requested key is not in the keyring", [K2], K2)
    report.add("a", "", [K3], K3)  # a second answer from a node is ignored
    assert report.keys == {K1: 2, K2: 2}
    assert report.primary_keys == {K1: 2, K2: 1}
    assert report.errors == {"c": "Requested key is not in the keyring"}
    body = report.to_json("dc1")
    assert body["NumNodes"] == 3 and body["WAN"] is False and body["Keys"] == {K1: 2, K2: 2}
