"""`PUT /v1/txn` (reference §4.6) (layer 4).

Contract: the body is a JSON array of at most `MAX_TXN_OPS` objects, each `{"KV": {...}}` with
`Verb`, `Key`, `Value` (base64), `Flags`, `Index`, `Session` (and waypost's `Fence`). A body that
is not such an array, a field of the wrong type or invalid base64 is a 400; too many operations
is a 413. All ops apply atomically: 200 `{"Results": [...], "Errors": null}` on commit, 409
`{"Results": null, "Errors": [{"OpIndex": i, "What": ...}]}` when any op fails (unknown verbs
and missing keys are op errors, as in Consul), and then nothing is applied. A transaction of
read verbs only is answered from the local store with the read headers. `Node`, `Service` and
`Check` operations are reported as op errors (not supported yet).
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from agent.catalog.commands import KVOp, TxnCommand
from agent.catalog.kvops import READ_VERBS, TxnResult, read_txn
from agent.errors import BadRequest, PayloadTooLarge
from agent.http.app import CONTEXT
from agent.http.common import json_response, parse_consistency, read_headers, read_json
from agent.http.kv import KV_MAX_VALUE_SIZE

MAX_TXN_OPS = 64
UNSUPPORTED = ("Node", "Service", "Check")


def _field(raw: dict, name: str, kind: type, default: object, position: int) -> object:
    value = raw.get(name, default)
    if value is None:
        return default
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise BadRequest(f"Failed to parse body: operation {position}: {name} must be an unsigned integer")
    if kind is str and not isinstance(value, str):
        raise BadRequest(f"Failed to parse body: operation {position}: {name} must be a string")
    return value


def decode_ops(body: object) -> tuple[list[KVOp | None], list[tuple[int, str]]]:
    """KV ops (None for an unsupported op) and the op errors already known."""
    if not isinstance(body, list):
        raise BadRequest("Failed to parse body: expected a JSON array of operations")
    if len(body) > MAX_TXN_OPS:
        raise PayloadTooLarge(f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    ops: list[KVOp | None] = []
    errors: list[tuple[int, str]] = []
    for position, item in enumerate(body):
        if not isinstance(item, dict) or len(item) != 1:
            raise BadRequest(f"Failed to parse body: operation {position} must be an object with one "
                             "of KV, Node, Service or Check")
        kind, raw = next(iter(item.items()))
        if kind in UNSUPPORTED:
            ops.append(None)
            errors.append((position, f"{kind} operations are not supported by waypost yet"))
            continue
        if kind != "KV" or not isinstance(raw, dict):
            raise BadRequest(f"Failed to parse body: operation {position}: unknown operation {kind!r}")
        value_text = _field(raw, "Value", str, "", position)
        try:
            value = base64.b64decode(str(value_text), validate=True)
        except (binascii.Error, ValueError):
            raise BadRequest(f"Failed to parse body: operation {position}: Value is not valid base64") from None
        if len(value) > KV_MAX_VALUE_SIZE:
            raise PayloadTooLarge(f"Value for key in operation {position} is too large "
                                  f"({len(value)} > {KV_MAX_VALUE_SIZE} bytes)")
        ops.append(KVOp(
            verb=str(_field(raw, "Verb", str, "", position)), key=str(_field(raw, "Key", str, "", position)),
            value=value, flags=int(_field(raw, "Flags", int, 0, position)),  # type: ignore[call-overload]
            index=int(_field(raw, "Index", int, 0, position)),  # type: ignore[call-overload]
            session=str(_field(raw, "Session", str, "", position)),
            fence=str(_field(raw, "Fence", str, "", position))))
    return ops, errors


async def txn(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ops, errors = decode_ops(await read_json(request))
    if errors:
        return json_response(request, TxnResult(errors=errors).to_api(), status=409)
    kv_ops = [op for op in ops if op is not None]
    headers: dict[str, str] = {}
    if all(op.verb in READ_VERBS for op in kv_ops):
        consistency = parse_consistency(request)
        await ctx.server.read_barrier(consistency)
        result = read_txn(ctx.server.fsm.kv, ctx.server.fsm.sessions, kv_ops)
        headers = read_headers(request, ctx.server.fsm.kv.table_index, consistency)
    else:
        result = await ctx.server.apply(TxnCommand(kv_ops))
    assert isinstance(result, TxnResult)
    return json_response(request, result.to_api(), status=409 if result.errors else 200, headers=headers)


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_put("/v1/txn", txn)
