"""Gossip errors (layer 0). Callers match on the class, never on message text.

Contract: `KeyringError` is a `BadRequest` (HTTP 400 with its message: a bad key, an unknown key,
removing the primary); `Unauthenticated` is a packet no installed key opens (dropped and counted,
never surfaced to users); `GossipJoinError` carries one reason per address tried.
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.errors import BadRequest, WaypostError


class GossipError(WaypostError):
    """Base class of gossip errors."""


class KeyringError(BadRequest):
    """A keyring operation was refused (bad base64 or length, unknown key, removing the primary)."""


class Unauthenticated(GossipError):
    """A packet that no installed key authenticates (or plaintext where encryption is required)."""


class GossipJoinError(GossipError):
    """No address of a join answered; `reasons` maps each address to why."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        self.reasons = dict(reasons)
        detail = "; ".join(f"{addr}: {why}" for addr, why in self.reasons.items()) or "no addresses given"
        super().__init__(f"{len(self.reasons)} error(s) occurred: {detail}")
