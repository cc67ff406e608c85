"""SWIM timing presets and the core's output records (pure, layer 1).

Contract: `SwimConfig` holds every tunable of the membership core with memberlist's
DefaultLANConfig values (plus Serf's reconnect/tombstone timers and Consul's 72 h reconnect
timeout); `lan()` and `local()` are memberlist's DefaultLANConfig / DefaultLocalConfig, and
`from_gossip_config(section, reconnect_timeout)` builds one from the agent's `gossip_lan` config
section (duck-typed). `Outgoing` is one packet or frame the driver must send; `MemberEvent` one
membership change for subscribers. Defaults live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from agent.gossip.messages import Member

ENVELOPE_RESERVE = 32   # bytes of each UDP packet left to the driver: family byte + AES-GCM (1+12+16)


@dataclass(frozen=True, slots=True)
class SwimConfig:
    probe_interval: float = 1.0            # one failure-detection round per second (memberlist LAN)
    probe_timeout: float = 0.5             # an ack slower than this on a LAN is a lost ack
    indirect_checks: int = 3               # three relays: one bad path must not convict a member
    tcp_pings: bool = True                 # memberlist's TCP fallback ping: lossy UDP alone convicts no one
    retransmit_mult: int = 4               # each broadcast sent 4 × max(2, ceil(log10(n+1))) times
    suspicion_mult: int = 4                # suspect for ≥ 4 probe rounds (× log10 n) before DEAD
    suspicion_max_timeout_mult: int = 6    # Lifeguard: start at 6 × the minimum, shrink with confirmations
    awareness_max_multiplier: int = 8      # Lifeguard: an unhealthy prober slows down at most 8×
    gossip_interval: float = 0.2           # gossip often: dissemination latency, not bandwidth, matters
    gossip_nodes: int = 3                  # fan-out per gossip round
    gossip_to_the_dead: float = 30.0       # keep telling a dead member it is dead (same as push-pull)
    push_pull_interval: float = 30.0       # full-state anti-entropy, rarely (it is O(n) bytes)
    reconnect_interval: float = 30.0       # Serf: try one failed member every 30 s (partition healing)
    reconnect_timeout: float = 72 * 3600.0  # Consul: forget a failed member after 72 h
    tombstone_timeout: float = 24 * 3600.0  # Serf: remember a left member for 24 h
    udp_payload_max: int = 1400            # stays under a 1500-byte Ethernet MTU with headers
    dead_node_reclaim: float = 0.0         # 0: a dead member's name is never reclaimed by a new address

    @classmethod
    def lan(cls) -> SwimConfig:
        return cls()

    @classmethod
    def local(cls) -> SwimConfig:
        """memberlist DefaultLocalConfig: loopback networks answer fast and rarely lose packets."""
        return cls(indirect_checks=1, retransmit_mult=2, suspicion_mult=3, push_pull_interval=15.0,
                   probe_timeout=0.2, probe_interval=1.0, gossip_interval=0.1, gossip_to_the_dead=15.0)

    @classmethod
    def from_gossip_config(cls, gossip_lan: Any, reconnect_timeout: float | None = None) -> SwimConfig:
        base = cls.lan()
        changes: dict[str, Any] = {}
        for name in ("gossip_nodes", "gossip_interval", "probe_interval", "probe_timeout",
                     "retransmit_mult", "suspicion_mult"):
            value = getattr(gossip_lan, name, None)
            if value is not None:
                changes[name] = value
        if reconnect_timeout is not None:
            changes["reconnect_timeout"] = reconnect_timeout
        return dataclasses.replace(base, **changes)


@dataclass(frozen=True, slots=True)
class Outgoing:
    address: str                # "host:port" of the destination gossip port ("" when reply=True)
    payload: bytes              # encoded message (plaintext; the driver encrypts)
    stream: bool = False        # True: send over TCP (push-pull, or larger than udp_payload_max)
    reply: bool = False         # True: answer on the same TCP connection the input came on
    expect_reply: bool = False  # True: read one reply frame on that connection → receive(stream=True)


@dataclass(frozen=True, slots=True)
class MemberEvent:
    kind: Literal["join", "update", "failed", "leave", "reap"]
    member: Member
