"""Shared HTTP helpers: query parsing, JSON bodies and responses, blocking reads (layer 4).

Contract:
- Query parsing raises `BadRequest` with Consul's messages (`Invalid index`, `Invalid wait time`,
  `Cannot specify ?stale with ?consistent, conflicting semantics.`), so bad input is a 400.
- `read_json(request)` returns the decoded body or raises `BadRequest` naming the problem.
- `blocking_read(...)` serves every catalog/health read: waits (index/wait, default 5 min, max
  10 min, + ≤1/16 jitter) on the store's watch keys, then answers with X-Consul-Index and the
  leader headers. Serialised answers live in the `ReadCache` per (path, query): an unchanged
  answer is encoded once per index, not once per request, and the fast path can serve it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable

from aiohttp import web

from agent.errors import BadRequest, PayloadTooLarge
from agent.filter import apply_filter as filter_items
from agent.filter import compile_filter
from agent.http.blocking import blocking_params, jittered
from agent.http.fastpath import CachedRead, read_key

BLOCKING_PARAMS = frozenset({"index", "wait"})
JSON_TYPE = "application/json"


def query_flag(request: web.Request, name: str) -> bool:
    """A bare `?name`, `?name=true|1` is on; `false|0` off; anything else is a 400."""
    if name not in request.query:
        return False
    value = request.query[name].lower()
    if value in ("", "true", "1", "t", "yes"):
        return True
    if value in ("false", "0", "f", "no"):
        return False
    raise BadRequest(f"Invalid value for ?{name}")


def parse_blocking(request: web.Request) -> tuple[int, float]:
    return blocking_params(request.query.get("index"), request.query.get("wait"))


def parse_consistency(request: web.Request) -> str:
    stale = query_flag(request, "stale")
    consistent = query_flag(request, "consistent")
    if stale and consistent:
        raise BadRequest("Cannot specify ?stale with ?consistent, conflicting semantics.")
    if consistent and query_flag(request, "cached"):
        raise BadRequest("Cannot specify ?cached with ?consistent, conflicting semantics.")
    return "stale" if stale else "consistent" if consistent else "leader"


def tags_param(request: web.Request) -> tuple[str, ...]:
    return tuple(request.query.getall("tag", []))


def node_meta_param(request: web.Request) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in request.query.getall("node-meta", []):
        key, sep, value = pair.partition(":")
        if not sep or not key:
            raise BadRequest(f"Invalid node-meta {pair!r}: expected key:value")
        meta[key] = value
    return meta


def apply_filter(request: web.Request, items: list[dict]) -> list[dict]:
    """Apply `?filter=`: a syntax or type error is a 400 (FilterError is a BadRequest)."""
    return filter_items(request.query.get("filter") or None, items)


def dumps(data: object, pretty: bool) -> bytes:
    if pretty:
        return (json.dumps(data, indent=4) + "\n").encode()
    return json.dumps(data, separators=(",", ":")).encode()


def is_pretty(request: web.Request) -> bool:
    return "pretty" in request.query


def json_response(request: web.Request, data: object, *, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(data, is_pretty(request)), status=status, headers=headers,
                        content_type=JSON_TYPE)


def text_response(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/plain")


async def read_json(request: web.Request, *, required: bool = True) -> object:
    raw = await request.read()
    if not raw.strip():
        if required:
            raise BadRequest("Request decode failed: empty request body")
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"Request decode failed: {exc}") from exc


async def read_json_object(request: web.Request) -> dict:
    body = await read_json(request)
    if not isinstance(body, dict):
        raise BadRequest(f"Request decode failed: expected a JSON object, got {type(body).__name__}")
    return body


async def blocking_read(request: web.Request, keys: Iterable[str],
                        produce: Callable[[], tuple[int, object]]) -> web.Response:
    """Answer a blocking catalog/health read; `produce()` returns (index, JSON-able data)."""
    from agent.http.app import CONTEXT  # the app key lives with the app factory

    ctx = request.app[CONTEXT]
    keys = tuple(keys)
    index, wait = parse_blocking(request)
    consistency = parse_consistency(request)
    await request.app[CONTEXT].server.read_barrier(consistency)
    if request.query.get("filter"):
        compile_filter(request.query["filter"])  # a syntax error is a 400 now, not after the wait
    server = ctx.server
    if index > 0:
        await server.wait_for_change(keys, index, jittered(wait))
    key, _ = read_key(request.rel_url.raw_path, request.rel_url.raw_query_string)
    current = server.store.index_of(*keys)
    entry = ctx.responses.get(key)
    if entry is None or entry.index != current:
        pretty = is_pretty(request)

        def produce_bytes() -> tuple[int, bytes]:
            answer_index, data = produce()
            return answer_index, dumps(data, pretty)

        answer_index, body = produce_bytes()
        entry = CachedRead(keys, answer_index, body, consistency, produce_bytes)
        ctx.responses.put(key, entry)
    headers = read_headers(request, entry.index, consistency)
    headers["X-Consul-Query-Backend"] = "blocking-query"
    return web.Response(body=entry.body, headers=headers, content_type=JSON_TYPE)


def read_headers(request: web.Request, index: int, consistency: str) -> dict[str, str]:
    """The headers every read answers with (reference §7.4)."""
    from agent.http.app import CONTEXT  # the app key lives with the app factory

    server = request.app[CONTEXT].server
    return {
        "X-Consul-Index": str(max(1, index)),
        "X-Consul-KnownLeader": "true" if server.known_leader() else "false",
        "X-Consul-LastContact": str(server.last_contact_ms()),
        "X-Consul-Effective-Consistency": consistency,
    }


READ_CHUNK = 1 << 16


async def read_body_limited(request: web.Request, limit: int, too_large: str) -> bytes:
    """The whole request body, or `PayloadTooLarge("<too_large>: the limit is N bytes")` as soon as
    it is known to exceed `limit` (from Content-Length, or while reading a chunked body)."""
    message = f"{too_large}: the limit is {limit} bytes"
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(message)
    parts: list[bytes] = []
    total = 0
    while chunk := await request.content.read(READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge(message)
        parts.append(chunk)
    return b"".join(parts)
