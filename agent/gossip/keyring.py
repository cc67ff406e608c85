"""The gossip keyring: installed AES keys, one primary, persisted as JSON (layer 2).

Contract:
- A key is the base64 (standard, padded) text of 16, 24 or 32 random bytes; `parse_key` turns
  text into bytes or raises `KeyringError` saying what is wrong; `generate_key` makes a
  32-byte key (`waypost keygen`).
- `Keyring(keys, primary, path)`: the primary key encrypts, every installed key decrypts.
  `install` adds a key (idempotent), `use` makes an installed key primary, `remove` drops a key
  that is not the primary. Methods accept bytes or base64 text. Every change is written to
  `path` (when set) before the method returns: a JSON list of base64 keys, primary first
  (Consul's `serf/local.keyring`), written to a temporary file, fsynced and renamed, mode 0600.
- `Keyring.load(path, encrypt_b64)`: an existing file wins over `encrypt` (a warning is logged when
  `encrypt` is set and is not the file's primary, as Consul does); otherwise the keyring is
  seeded from `encrypt` and written. Neither → None (no encryption). A corrupt file is a
  `KeyringError`, never a silent switch to plaintext.
- `apply_operation(keyring, op, key)` runs one keyring query on this node and returns "" or the
  error text a remote node reports; `KeyringReport` aggregates the answers of every node
  (Consul's NumNodes / Keys / PrimaryKeys, plus each node's error).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agent.gossip.crypto import KEY_SIZES
from agent.gossip.errors import KeyringError

log = logging.getLogger("waypost.gossip.keyring")

KeyringOp = Literal["list", "install", "use", "remove"]
OPERATIONS: tuple[str, ...] = ("list", "install", "use", "remove")
FILE_MODE = 0o600


def parse_key(b64: str) -> bytes:
    text = b64.strip()
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyringError(f"Failed to decode key: not valid base64 ({exc})") from None
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"Invalid key size: {len(key)} bytes (must be 16, 24 or 32 bytes)")
    return key


def generate_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def _as_key(key: bytes | str) -> bytes:
    if isinstance(key, str):
        return parse_key(key)
    if len(key) not in KEY_SIZES:
        raise KeyringError(f"Invalid key size: {len(key)} bytes (must be 16, 24 or 32 bytes)")
    return bytes(key)


class Keyring:
    def __init__(self, keys: list[bytes], primary: bytes | None = None, path: Path | None = None) -> None:
        ordered: list[bytes] = []
        for key in keys:
            key = _as_key(key)
            if key not in ordered:
                ordered.append(key)
        if primary is not None:
            primary = _as_key(primary)
            if primary in ordered:
                ordered.remove(primary)
            ordered.insert(0, primary)
        if not ordered:
            raise KeyringError("Keyring has no keys")
        self._keys = ordered
        self.path = path

    @classmethod
    def load(cls, path: Path | str | None, fallback_encrypt_b64: str = "") -> Keyring | None:
        path = Path(path) if path is not None else None
        if path is not None and path.exists():
            keyring = cls(_read_file(path), path=path)
            if fallback_encrypt_b64 and parse_key(fallback_encrypt_b64) != keyring.primary:
                log.warning("loaded keyring file %s overrides the configured encrypt key", path)
            return keyring
        if not fallback_encrypt_b64:
            return None
        keyring = cls([parse_key(fallback_encrypt_b64)], path=path)
        keyring.save()
        return keyring

    # --- reading ---
    @property
    def primary(self) -> bytes:
        return self._keys[0]

    def raw_keys(self) -> list[bytes]:
        """Every installed key, primary first (the order `decrypt` tries them)."""
        return list(self._keys)

    def keys(self) -> list[str]:
        return [encode_key(k) for k in self._keys]

    # --- changing ---
    def install(self, key: bytes | str) -> None:
        key = _as_key(key)
        if key not in self._keys:
            self._keys.append(key)
            self.save()

    def use(self, key: bytes | str) -> None:
        key = _as_key(key)
        if key not in self._keys:
            raise KeyringError("Requested key is not in the keyring")
        if key != self._keys[0]:
            self._keys.remove(key)
            self._keys.insert(0, key)
            self.save()

    def remove(self, key: bytes | str) -> None:
        key = _as_key(key)
        if key == self._keys[0]:
            raise KeyringError("Removing the primary key is not allowed")
        if key not in self._keys:
            raise KeyringError("Requested key is not in the keyring")
        self._keys.remove(key)
        self.save()

    def save(self) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        with os.fdopen(fd, "w") as f:
            json.dump(self.keys(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _read_file(path: Path) -> list[bytes]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeyringError(f"Failed to read keyring file {path}: {exc}") from None
    if not isinstance(data, list) or not data or not all(isinstance(k, str) for k in data):
        raise KeyringError(f"Keyring file {path} must be a non-empty JSON list of base64 keys")
    try:
        return [parse_key(k) for k in data]
    except KeyringError as exc:
        raise KeyringError(f"Keyring file {path}: {exc}") from None


def apply_operation(keyring: Keyring | None, op: str, key: str) -> str:
    """Run one keyring query on this node; "" on success, else the error text."""
    if op not in OPERATIONS:
        return f"Unknown keyring operation {op!r}"
    if keyring is None:
        return "Gossip encryption is not enabled on this node"
    try:
        if op == "install":
            keyring.install(key)
        elif op == "use":
            keyring.use(key)
        elif op == "remove":
            keyring.remove(key)
    except KeyringError as exc:
        return str(exc)
    except OSError as exc:
        return f"Failed to write the keyring file: {exc}"
    return ""


@dataclass(slots=True)
class KeyringReport:
    """One keyring operation across the pool (Consul's KeyringResponse for the LAN pool)."""

    num_nodes: int
    responses: dict[str, str] = field(default_factory=dict)     # node → error text, "" = ok
    keys: dict[str, int] = field(default_factory=dict)          # base64 key → nodes that have it
    primary_keys: dict[str, int] = field(default_factory=dict)  # base64 key → nodes using it

    @property
    def errors(self) -> dict[str, str]:
        return {node: err for node, err in self.responses.items() if err}

    def add(self, node: str, error: str, keys: list[str], primary: str) -> None:
        if node in self.responses:
            return
        self.responses[node] = error
        for key in dict.fromkeys(keys):
            self.keys[key] = self.keys.get(key, 0) + 1
        if primary:
            self.primary_keys[primary] = self.primary_keys.get(primary, 0) + 1

    def to_json(self, datacenter: str) -> dict[str, object]:
        """Consul's `/v1/operator/keyring` entry for the LAN pool."""
        return {"WAN": False, "Datacenter": datacenter, "Segment": "", "Keys": dict(self.keys),
                "PrimaryKeys": dict(self.primary_keys), "NumNodes": self.num_nodes,
                "Messages": self.errors}


def node_answer(node: str, keyring: Keyring | None, error: str) -> dict[str, Any]:
    """The family-2 response body a node sends after running a keyring query."""
    keys = keyring.keys() if keyring is not None else []
    return {"node": node, "error": error, "keys": keys, "primary": keys[0] if keys else ""}
