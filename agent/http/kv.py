"""`/v1/kv/:key` routes (reference §4.1–4.5) (layer 4).

Contract:
- GET: one key → `[entry]`; `recurse` → every entry under the prefix; `keys` (+ `separator`) →
  key names; `raw` → the value bytes (`text/plain`, nosniff, sandbox CSP). Missing → 404 with an
  empty body and `X-Consul-Index` (except `?keys` on the empty root: `200 []`). Blocking queries
  wait on the key, or on the prefix for recurse/keys: a watcher of `config/app/` wakes only for
  changes under it; deletes leave tombstones so a blocked reader of a deleted key returns.
- PUT: body = value (≤ `KV_MAX_VALUE_SIZE`, else 413); `flags`, `cas`, `acquire`, `release`
  (mutually exclusive: 400 `Conflicting flags`); answers `true`/`false`. `acquire` answers false
  during lock-delay, 500 for an unknown session, and on success sends the fencing token in
  `X-Waypost-Fence-Token` (`LockIndex:ModifyIndex:Key`). `?fence=<token>` on PUT or DELETE makes
  the write apply only while that lock is still held with that LockIndex (else `false`).
- DELETE: `recurse` (prefix), `cas`; `recurse`+`cas` → 400; empty key without recurse → 400.
- Keys with NUL or other unprintable characters, or `.`/`..` path segments (which URL normalisation
  would silently rewrite), are refused with 400 before anything is written (`fastkv.key_problem`).
- A plain PUT (no query string, a key that needs no decoding) is usually answered by the fast path
  (`agent.http.fastpath`) with the same command and the same answer; this handler takes the rest.
"""

from __future__ import annotations

from urllib.parse import unquote

from aiohttp import web

from agent.catalog.commands import KVCommand, KVOp
from agent.catalog.kvops import InvalidSession, fence_token, parse_fence
from agent.errors import BadRequest, PayloadTooLarge
from agent.http.app import CONTEXT
from agent.http.common import json_response, query_flag, text_response
from agent.http.fastkv import KV_MAX_VALUE_SIZE, key_problem
from agent.http.kvwait import table_read

FENCE_HEADER = "X-Waypost-Fence-Token"
UINT64_MAX = (1 << 64) - 1


def kv_key(request: web.Request) -> str:
    key = request.match_info.get("key", "")
    problem = key_problem(key, unquote(request.raw_path.partition("?")[0]))
    if problem:
        raise BadRequest(problem)
    return key


def uint_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not raw.isdigit() or int(raw) > UINT64_MAX:
        raise BadRequest(f"Invalid {name} value {raw!r}: want an unsigned integer")
    return int(raw)


def _not_found() -> web.Response:
    return web.Response(status=404)


async def get(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    key = kv_key(request)
    keys_only = "keys" in request.query
    recurse = query_flag(request, "recurse") or keys_only
    raw = query_flag(request, "raw")
    separator = request.query.get("separator", request.query.get("seperator", ""))
    if not key and not recurse:
        raise BadRequest("Missing key name")

    def kv():  # the FSM replaces its tables on a snapshot restore: always read the current one
        return ctx.server.fsm.kv

    if not recurse:
        def produce_one() -> tuple[int, object]:
            index, entry = kv().get(key)
            if entry is None:
                return index, _not_found()
            if raw:
                return index, web.Response(body=entry.value, content_type="text/plain", headers={
                    "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"})
            return index, [entry.to_api()]

        return await table_read(request, lambda: kv().get(key)[0],
                                lambda cb: kv().watch(cb, keys=[key]), produce_one)

    def produce_many() -> tuple[int, object]:
        if keys_only:
            index, names = kv().keys(key, separator)
            if not names and key:
                return index, _not_found()
            return index, names
        index, entries = kv().list(key)
        if not entries:
            return index, _not_found()
        return index, [e.to_api() for e in entries]

    return await table_read(request, lambda: kv().list(key)[0],
                            lambda cb: kv().watch(cb, prefixes=[key]), produce_many)


def _fence(request: web.Request) -> str:
    token = request.query.get("fence", "")
    if token:
        parse_fence(token)  # a malformed token is a 400 before anything is proposed
    return token


async def put(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    key = kv_key(request)
    if not key:
        raise BadRequest("Missing key name")
    flags = uint_param(request, "flags") or 0
    cas = uint_param(request, "cas")
    acquire = request.query.get("acquire")
    release = request.query.get("release")
    given = [name for name, v in (("cas", cas), ("acquire", acquire), ("release", release)) if v is not None]
    if len(given) > 1:
        raise BadRequest(f"Conflicting flags: {', '.join(f'{n}=' for n in given)}")
    fence = _fence(request)
    if request.content_length is not None and request.content_length > KV_MAX_VALUE_SIZE:
        raise PayloadTooLarge(f"Request body({request.content_length} bytes) too large, "
                              f"max size: {KV_MAX_VALUE_SIZE} bytes")
    value = await request.read()
    if len(value) > KV_MAX_VALUE_SIZE:
        raise PayloadTooLarge(f"Request body({len(value)} bytes) too large, max size: {KV_MAX_VALUE_SIZE} bytes")
    if acquire is not None:
        if not acquire:
            raise BadRequest("Missing session for acquire")
        op = KVOp("lock", key, value, flags, session=acquire, fence=fence)
        if ctx.sessions is not None and ctx.sessions.lock_delayed(key):
            return json_response(request, False)
    elif release is not None:
        if not release:
            raise BadRequest("Missing session for release")
        op = KVOp("unlock", key, value, flags, session=release, fence=fence)
    elif cas is not None:
        op = KVOp("cas", key, value, flags, index=cas, fence=fence)
    else:
        op = KVOp("set", key, value, flags, fence=fence)
    try:
        ok = await ctx.server.apply(KVCommand(op))
    except InvalidSession as exc:
        return text_response(str(exc), 500)
    headers = {}
    entry = ctx.server.fsm.kv.entry(key)
    if ok and acquire is not None and entry is not None and entry.session == acquire:
        headers[FENCE_HEADER] = fence_token(entry)
    return json_response(request, bool(ok), headers=headers)


async def delete(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    key = kv_key(request)
    recurse = query_flag(request, "recurse")
    cas = uint_param(request, "cas")
    if recurse and cas is not None:
        raise BadRequest("Conflicting flags: cas=, recurse=")
    if not key and not recurse:
        raise BadRequest("Missing key name")
    fence = _fence(request)
    if recurse:
        op = KVOp("delete-tree", key, fence=fence)
    elif cas is not None:
        op = KVOp("delete-cas", key, index=cas, fence=fence)
    else:
        op = KVOp("delete", key, fence=fence)
    ok = await ctx.server.apply(KVCommand(op))
    return json_response(request, bool(ok))


def register_routes(router: web.UrlDispatcher) -> None:
    router.add_get("/v1/kv/{key:.*}", get)
    router.add_put("/v1/kv/{key:.*}", put)
    router.add_delete("/v1/kv/{key:.*}", delete)
