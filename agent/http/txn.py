"""`PUT /v1/txn` (reference §4.6) (layer 4).

Contract: the body is a JSON array of at most `MAX_TXN_OPS` objects, each `{"KV": {...}}` with
`Verb`, `Key`, `Value` (base64), `Flags`, `Index`, `Session` (and waypost's `Fence`). A body that
is not such an array, a field of the wrong type or invalid base64 is a 400; too many operations
is a 413. All ops apply atomically: 200 `{"Results": [...], "Errors": null}` on commit, 409
`{"Results": null, "Errors": [{"OpIndex": i, "What": ...}]}` when any op fails (unknown verbs
and missing keys are op errors, as in Consul), and then nothing is applied. A transaction of
read verbs only is answered from the local store with the read headers. `Node` (`{"Verb", "Node":
{...}}`), `Service` (`{"Verb", "Node": name, "Service": {...}}`) and `Check` (`{"Verb", "Check":
{...}}`) ops take set, cas, get, delete and delete-cas (`ModifyIndex` in the row is the cas index);
set/cas rows are decoded like `/v1/catalog/register` bodies (bad fields are a 400), unknown
verbs and failed conditions are op errors, and they commit atomically with the KV ops.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from agent.catalog.commands import CatalogOp, KVOp, TxnCommand
from agent.catalog.kvops import TxnResult
from agent.catalog.txnops import CATALOG_KINDS, is_read_only, read_txn
from agent.decode import decode_catalog_register
from agent.errors import BadRequest, PayloadTooLarge
from agent.http.app import CONTEXT
from agent.http.common import json_response, parse_consistency, read_headers, read_json
from agent.http.fastkv import KV_MAX_VALUE_SIZE
from agent.types import HealthCheck, Node, NodeService

MAX_TXN_OPS = 64


def _field(raw: dict, name: str, kind: type, default: object, position: int) -> object:
    value = raw.get(name, default)
    if value is None:
        return default
    if kind is int and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise BadRequest(f"Failed to parse body: operation {position}: {name} must be an unsigned integer")
    if kind is str and not isinstance(value, str):
        raise BadRequest(f"Failed to parse body: operation {position}: {name} must be a string")
    return value


def _obj(raw: dict, name: str, position: int) -> dict:
    value = raw.get(name)
    if not isinstance(value, dict):
        raise BadRequest(f"Failed to parse body: operation {position}: {name} must be an object")
    return value


def _catalog_op(kind: str, raw: dict, position: int, datacenter: str) -> CatalogOp:
    """A Node/Service/Check op; set and cas rows go through the catalog register decoder."""
    verb = str(_field(raw, "Verb", str, "", position))
    writes = verb in ("set", "cas")
    if kind == "Node":
        body = _obj(raw, "Node", position)
        name = str(_field(body, "Node", str, "", position))
        row: Node | NodeService | HealthCheck = Node(node=name, address="")
        if writes:
            fields = {"Node": name, "NodeMeta": body.get("Meta"),
                      **{k: body[k] for k in ("ID", "Address", "Datacenter", "TaggedAddresses") if k in body}}
            row = decode_catalog_register({k: v for k, v in fields.items() if v is not None}, datacenter).node
    elif kind == "Service":
        name = str(_field(raw, "Node", str, "", position))
        body = _obj(raw, "Service", position)
        service_id = str(_field(body, "ID", str, "", position)) or str(_field(body, "Service", str, "", position))
        row = NodeService(id=service_id, service=str(_field(body, "Service", str, "", position)))
        if writes:
            service = decode_catalog_register({"Node": name, "Address": "-", "Service": body}, datacenter).service
            assert service is not None
            row = service
    else:
        body = _obj(raw, "Check", position)
        name = str(_field(body, "Node", str, "", position))
        check_id = str(_field(body, "CheckID", str, "", position)) or str(_field(body, "Name", str, "", position))
        row = HealthCheck(node=name, check_id=check_id, name="")
        if writes:
            row = decode_catalog_register({"Node": name, "Address": "-", "Check": body}, datacenter).checks[0]
    if not name:
        raise BadRequest(f"Failed to parse body: operation {position}: missing node name")
    index = int(_field(body, "ModifyIndex", int, 0, position))  # type: ignore[call-overload]
    return CatalogOp(kind=kind, verb=verb, node=name, row=row, index=index)


def _kv_op(raw: dict, position: int) -> KVOp:
    value_text = _field(raw, "Value", str, "", position)
    try:
        value = base64.b64decode(str(value_text), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"Failed to parse body: operation {position}: Value is not valid base64") from None
    if len(value) > KV_MAX_VALUE_SIZE:
        raise PayloadTooLarge(f"Value for key in operation {position} is too large "
                              f"({len(value)} > {KV_MAX_VALUE_SIZE} bytes)")
    return KVOp(
        verb=str(_field(raw, "Verb", str, "", position)), key=str(_field(raw, "Key", str, "", position)),
        value=value, flags=int(_field(raw, "Flags", int, 0, position)),  # type: ignore[call-overload]
        index=int(_field(raw, "Index", int, 0, position)),  # type: ignore[call-overload]
        session=str(_field(raw, "Session", str, "", position)),
        fence=str(_field(raw, "Fence", str, "", position)))


def decode_ops(body: object, datacenter: str = "dc1") -> list[KVOp | CatalogOp]:
    """The transaction's ops; `BadRequest` (400) or `PayloadTooLarge` (413) for a bad body."""
    if not isinstance(body, list):
        raise BadRequest("Failed to parse body: expected a JSON array of operations")
    if len(body) > MAX_TXN_OPS:
        raise PayloadTooLarge(f"Transaction contains too many operations ({len(body)} > {MAX_TXN_OPS})")
    ops: list[KVOp | CatalogOp] = []
    for position, item in enumerate(body):
        if not isinstance(item, dict) or len(item) != 1:
            raise BadRequest(f"Failed to parse body: operation {position} must be an object with one "
                             "of KV, Node, Service or Check")
        kind, raw = next(iter(item.items()))
        if kind not in ("KV", *CATALOG_KINDS) or not isinstance(raw, dict):
            raise BadRequest(f"Failed to parse body: operation {position}: unknown operation {kind!r}")
        ops.append(_kv_op(raw, position) if kind == "KV" else _catalog_op(kind, raw, position, datacenter))
    return ops


async def txn(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    ops = decode_ops(await read_json(request), ctx.config.datacenter)
    headers: dict[str, str] = {}
    if is_read_only(ops):
        consistency = parse_consistency(request)
        await ctx.server.read_barrier(consistency)
        fsm = ctx.server.fsm
        result = read_txn(fsm.store, fsm.kv, fsm.sessions, ops)
        kv_only = all(isinstance(op, KVOp) for op in ops)
        index = fsm.kv.table_index if kv_only else max(fsm.kv.table_index, fsm.store.last_index)
        headers = read_headers(request, index, consistency)
    else:
        result = await ctx.server.apply(TxnCommand(ops))
    assert isinstance(result, TxnResult)
    return json_response(request, result.to_api(), status=409 if result.errors else 200, headers=headers)


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_put("/v1/txn", txn)
