"""Errors the Raft core raises to its driver (layer 0). Callers match on the class.

Contract: `NotLeader` carries the leader hint ("" when none is known) so a driver can forward;
`ProposalDropped` means the leader cannot take proposals right now (a leadership transfer is
running or the leader is being removed); `ConfigChangeRejected` refuses a membership change
(another is pending, the leader has not committed in its term yet, or the change is invalid).
"""

from __future__ import annotations

from agent.errors import WaypostError


class RaftError(WaypostError):
    """Base class of the Raft core's refusals."""


class NotLeader(RaftError):
    def __init__(self, leader: str = "") -> None:
        self.leader = leader
        super().__init__(f"not the leader (leader: {leader or 'unknown'})")


class ProposalDropped(RaftError):
    """The leader is transferring leadership (or leaving) and takes no proposals."""


class ConfigChangeRejected(RaftError):
    """A membership change that cannot be made now or at all."""


class TransferRejected(RaftError):
    """Leadership cannot move to that server (not a voter, or unknown)."""
