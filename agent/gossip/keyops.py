"""Keyring operations across the gossip pool (layer 3; the GossipNode's half of `consul keyring`).

Contract:
- `run_operation(node, op, key)` validates the op and key (`KeyringError`, before anything is
  sent), sends a family-1 request msgpack `{op, key, id}` over TCP, sealed with the current
  primary key (even with verify_outgoing off), to every ALIVE member but us, collects family-2
  answers `{id, node, error, keys, primary}` for at most `KEYRING_TIMEOUT` seconds, and only
  then runs the op on this node (so a `remove` cannot strand answers sealed with the removed key).
  A member that did not answer is reported with an error. Raises `KeyringError` when this node
  has no keyring (encryption off).
- `answer(node, opened)` runs a received request on this node and returns the sealed family-2
  answer. With a keyring, a request that did not authenticate (plaintext accepted because
  `verify_incoming` is off) is refused: keys only change through the encrypted channel.
- Consul's semantics per node: `install` is idempotent, `use` fails on a node that does not have
  the key, `remove` fails for the primary key.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, Any

import msgpack

from agent.gossip.envelope import KEYRING_REQUEST, KEYRING_RESPONSE, MalformedEnvelope, Opened, frame, read_frame
from agent.gossip.errors import KeyringError, Unauthenticated
from agent.gossip.keyring import OPERATIONS, KeyringReport, apply_operation, node_answer, parse_key
from agent.gossip.messages import Member, MemberState, join_hostport

if TYPE_CHECKING:
    from agent.gossip.node import GossipNode

KEYRING_TIMEOUT = 2.0  # the whole pool answers a keyring query within this, or is reported missing
MAX_ANSWER = 64 * 1024  # a keyring answer is a few keys: anything larger is refused


async def run_operation(node: GossipNode, op: str, key: str = "") -> KeyringReport:
    if op not in OPERATIONS:
        raise KeyringError(f"Unknown keyring operation {op!r} (list, install, use or remove)")
    if op != "list":
        if not key:
            raise KeyringError(f"A key is required to {op}")
        parse_key(key)
    if node.keyring is None:
        raise KeyringError("Gossip encryption is not enabled on this agent (no keyring)")
    peers = [m for m in node.members() if m.state == MemberState.ALIVE and m.name != node.name]
    request_id = secrets.randbits(32)
    body = msgpack.packb({"op": op, "key": key, "id": request_id})
    packet = node.sealer.seal(KEYRING_REQUEST, body, always_encrypt=True)
    answers = await asyncio.gather(*(_ask(node, m, packet, request_id) for m in peers))
    report = KeyringReport(num_nodes=len(peers) + 1)
    for member, answer in zip(peers, answers, strict=True):
        if isinstance(answer, str):
            report.add(member.name, answer, [], "")
        else:
            report.add(member.name, answer["error"], answer["keys"], answer["primary"])
    local = node_answer(node.name, node.keyring, apply_operation(node.keyring, op, key))
    report.add(node.name, local["error"], local["keys"], local["primary"])
    return report


async def _ask(node: GossipNode, member: Member, packet: bytes, request_id: int) -> dict[str, Any] | str:
    try:
        async with asyncio.timeout(KEYRING_TIMEOUT):
            return await _exchange(node, member, packet, request_id)
    except TimeoutError:
        return "timed out waiting for the node's answer"
    except Unauthenticated:
        return "the node's answer did not authenticate"
    except asyncio.IncompleteReadError:
        return "the node closed the connection (does it share a key with us?)"
    except (OSError, MalformedEnvelope, ValueError) as exc:
        return f"no answer: {exc}"


async def _exchange(node: GossipNode, member: Member, packet: bytes, request_id: int) -> dict[str, Any]:
    reader, writer = await asyncio.open_connection(member.address, member.port)
    try:
        writer.write(frame(packet))
        await writer.drain()
        opened = node.sealer.open(await read_frame(reader, MAX_ANSWER))
        if opened.family != KEYRING_RESPONSE:
            raise MalformedEnvelope(f"expected a keyring answer from {join_hostport(member.address, member.port)}")
        return _parse_answer(opened.body, request_id)
    finally:
        writer.close()


def _parse_answer(body: bytes, request_id: int) -> dict[str, Any]:
    try:
        data = msgpack.unpackb(body, raw=False)
    except Exception as exc:  # untrusted bytes
        raise MalformedEnvelope(f"undecodable keyring answer: {exc}") from None
    ok = (isinstance(data, dict) and data.get("id") == request_id and isinstance(data.get("error"), str)
          and isinstance(data.get("keys"), list) and all(isinstance(k, str) for k in data["keys"])
          and isinstance(data.get("primary"), str))
    if not ok:
        raise MalformedEnvelope("malformed keyring answer")
    return data


def answer(node: GossipNode, opened: Opened) -> bytes:
    """The sealed family-2 answer to a family-1 request received by `node`."""
    try:
        request = msgpack.unpackb(opened.body, raw=False)
    except Exception:  # untrusted bytes
        raise MalformedEnvelope("undecodable keyring request") from None
    if not isinstance(request, dict) or not isinstance(request.get("op"), str) \
            or not isinstance(request.get("key", ""), str):
        raise MalformedEnvelope("malformed keyring request")
    if node.keyring is not None and not opened.authenticated:
        error = "Keyring requests must be encrypted with an installed key"
    else:
        error = apply_operation(node.keyring, request["op"], request.get("key", ""))
    body = node_answer(node.name, node.keyring, error)
    body["id"] = request.get("id")
    return node.sealer.seal(KEYRING_RESPONSE, msgpack.packb(body), always_encrypt=True)
