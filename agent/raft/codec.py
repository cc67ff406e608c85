"""The Raft wire codec: messages ↔ msgpack bytes (layer 2).

Contract: `encode(msg)` packs `messages.to_record(msg)` with msgpack (bin type for bytes, str
for ids); `decode(data)` is its exact inverse and raises `MalformedMessage` for any bytes that
are not a valid message (truncated, wrong types, unknown tag). Framing (length prefixes) belongs
to the transport, not here.
"""

from __future__ import annotations

import msgpack

from agent.raft.messages import MalformedMessage, Message, from_record, to_record


def encode(msg: Message) -> bytes:
    return msgpack.packb(to_record(msg), use_bin_type=True)


def decode(data: bytes) -> Message:
    try:
        rec = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise MalformedMessage(f"undecodable message: {exc}") from exc
    return from_record(rec)
