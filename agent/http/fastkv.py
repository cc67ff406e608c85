"""KV key rules, and the plain KV requests the fast path may answer itself (layer 4).

Contract:
- `key_problem(key, raw_path)` is the one rule for a KV key taken from a URL: why it is refused
  (unprintable characters; a `.` or `..` segment, which URL normalisation would silently rewrite),
  or "" when it is acceptable. `agent.http.kv` applies it to every KV request.
- `plain_kv_put(head, max_body)` reads a request head (request line and headers, without the
  blank line). It returns `PlainPut(key, length)` only for the commonest write, whose answer
  needs nothing aiohttp adds: `PUT /v1/kv/<key> HTTP/1.1` with no query string, a non-empty key
  made only of characters that URL decoding leaves alone and that passes `key_problem`, at most
  one `Content-Length` of at most `min(KV_MAX_VALUE_SIZE, max_body)` bytes, and no
  Transfer-Encoding, Expect, Upgrade or `Connection: close`. Anything else → None (aiohttp's
  handler answers it, errors and options included).
- `plain_kv_get(head)` returns `PlainGet(key, consistency, index, wait)` for `GET /v1/kv/<key>
  HTTP/1.1` with the same key rule, a query string made only of a bare `consistent` or `stale`
  (consistency "consistent", "stale"; "leader" without either), `index=N` and `wait=DURATION`
  (`blocking.blocking_params`; each at most once), and no body, Expect, Upgrade or
  `Connection: close`; else None (aiohttp answers it, a 400 for a bad index or wait included).
- `http_reply(status, body, content_type, extra)` is the whole HTTP/1.1 response the fast path
  writes; `read_reply(...)` adds the headers every read answers with (as `read_headers`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus

from agent.errors import BadRequest
from agent.http.blocking import blocking_params

KV_MAX_VALUE_SIZE = 512 * 1024  # Consul's limits.kv_max_value_size
PUT_PREFIX = b"PUT /v1/kv/"
GET_PREFIX = b"GET /v1/kv/"
HTTP11 = b" HTTP/1.1"
GET_PARAMS = (b"index", b"wait", b"consistent", b"stale")
# pchar of RFC 3986 without '%' (so decoding is the identity), plus '/': aiohttp's key is the raw path
KEY_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/")
REFUSED_HEADERS = (b"\r\ntransfer-encoding:", b"\r\nexpect:", b"\r\nupgrade:", b"\r\nconnection: close")
CONTENT_LENGTH = b"\r\ncontent-length:"


@dataclass(frozen=True, slots=True)
class PlainPut:
    key: str
    length: int   # body bytes that follow the head


@dataclass(frozen=True, slots=True)
class PlainGet:
    key: str
    consistency: str   # "leader" (default), "consistent" or "stale"
    index: int = 0     # a blocking query waits until the key's index passes this
    wait: float = 0.0  # for at most this long (before jitter)


def key_problem(key: str, raw_path: str) -> str:
    if any(not ch.isprintable() for ch in key):
        return "Invalid key: contains unprintable characters"
    if any(part in (".", "..") for part in raw_path.split("/")):
        return "Invalid key: contains a '.' or '..' path segment"
    return ""


def _plain_key(raw_key: bytes) -> str:
    """The key of a raw path that needs no decoding and passes `key_problem`, else ""."""
    if not raw_key or not KEY_BYTES.issuperset(raw_key):
        return ""   # also refuses a query string ('?') and percent-escapes
    key = raw_key.decode("ascii")
    return "" if key_problem(key, key) else key


def _split(head: bytes, prefix: bytes) -> tuple[bytes, bytes] | None:
    """(target after `prefix`, lower-cased headers) of an HTTP/1.1 request head starting with
    `prefix` and free of the headers the fast path leaves to aiohttp; else None."""
    line_end = head.find(b"\r\n")
    line = head if line_end < 0 else head[:line_end]
    if not line.startswith(prefix) or not line.endswith(HTTP11):
        return None
    headers = head[line_end:].lower() if line_end >= 0 else b""
    if any(h in headers for h in REFUSED_HEADERS):
        return None
    return line[len(prefix):-len(HTTP11)], headers


def plain_kv_get(head: bytes) -> PlainGet | None:
    split = _split(head, GET_PREFIX)
    if split is None or CONTENT_LENGTH in split[1]:   # a body (chunked ones are refused already)
        return None
    raw_key, _, query = split[0].partition(b"?")
    key = _plain_key(raw_key)
    params: dict[bytes, str] = {}
    for part in query.split(b"&") if query else ():
        name, eq, value = part.partition(b"=")
        if name not in GET_PARAMS or name in params or (eq and name in (b"consistent", b"stale")):
            return None
        params[name] = value.decode("latin-1")
    if not key or (b"consistent" in params and b"stale" in params):
        return None
    try:
        index, wait = blocking_params(params.get(b"index"), params.get(b"wait"))
    except BadRequest:
        return None
    consistency = "consistent" if b"consistent" in params else "stale" if b"stale" in params else "leader"
    return PlainGet(key, consistency, index, wait)


def plain_kv_put(head: bytes, max_body: int) -> PlainPut | None:
    split = _split(head, PUT_PREFIX)
    if split is None:
        return None
    key = _plain_key(split[0])
    if not key:
        return None
    headers = split[1]
    at = headers.find(CONTENT_LENGTH)
    if at < 0:
        return PlainPut(key, 0)
    if headers.find(CONTENT_LENGTH, at + 1) >= 0:
        return None   # repeated: aiohttp refuses it
    value_end = headers.find(b"\r\n", at + 2)
    raw_length = headers[at + len(CONTENT_LENGTH):value_end if value_end >= 0 else None].strip()
    if not raw_length.isdigit() or int(raw_length) > min(KV_MAX_VALUE_SIZE, max_body):
        return None
    return PlainPut(key, int(raw_length))


class HttpDate:
    """The HTTP Date header value, formatted once per second."""

    second = -1
    text = b""

    @classmethod
    def now(cls) -> tuple[int, bytes]:
        second = int(time.time())
        if second != cls.second:
            cls.second, cls.text = second, formatdate(second, usegmt=True).encode()
        return cls.second, cls.text


def http_reply(status: int, body: bytes, content_type: bytes, extra: bytes = b"") -> bytes:
    """`content_type` b"": no such header; `extra`: more header lines, each ending in CRLF."""
    typed = b"Content-Type: %s\r\n" % content_type if content_type else b""
    return (b"HTTP/1.1 %d %s\r\n%s%sDate: %s\r\nServer: waypost\r\nContent-Length: %d\r\n\r\n"
            % (status, HTTPStatus(status).phrase.encode(), typed, extra, HttpDate.now()[1], len(body))) + body


def read_reply(body: bytes, index: int, known_leader: bool, last_contact_ms: int, consistency: str,
               extra: bytes = b"", status: int = 200) -> bytes:
    """A JSON read (or a 404 with neither body nor Content-Type, as aiohttp and Consul send it) with
    X-Consul-Index (at least 1), -KnownLeader, -LastContact and -Effective-Consistency, as
    `agent.http.common.read_headers` sends them."""
    return http_reply(status, body, b"application/json" if status == 200 else b"", (
        b"X-Consul-Index: %d\r\nX-Consul-KnownLeader: %s\r\nX-Consul-LastContact: %d\r\n"
        b"X-Consul-Effective-Consistency: %s\r\n%s"
    ) % (max(1, index), b"true" if known_leader else b"false", last_contact_ms, consistency.encode(), extra))
