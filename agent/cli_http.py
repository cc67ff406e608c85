"""The CLI's small blocking HTTP client for an agent's API (layer 5 helper, stdlib only).

Contract:
- `resolve_http_addr(flag, environ)` picks the agent address: the `-http-addr` flag, else
  `WAYPOST_HTTP_ADDR`, else `CONSUL_HTTP_ADDR`, else `DEFAULT_HTTP_ADDR`. `host:port` without a
  scheme gets `http://` (`https://` when `CONSUL_HTTP_SSL` is true). Raises `BadAddress`.
- `AgentClient(base_url, token=...)` does one blocking request per call (the CLI runs one command
  and exits; no event loop). `get`/`put` return the decoded JSON body (None for an empty body).
- Failures are exceptions whose `str()` is one readable line: `AgentUnreachable`
  ("connection refused (http://127.0.0.1:8500)"), `AgentHTTPError` ("Unexpected response code:
  400 (body)", like Consul's Go client), `AgentResponseError` (a body that is not JSON).
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence

DEFAULT_HTTP_ADDR = "http://127.0.0.1:8500"
REQUEST_TIMEOUT_S = 30.0
ADDR_ENV_VARS = ("WAYPOST_HTTP_ADDR", "CONSUL_HTTP_ADDR")
TOKEN_ENV_VARS = ("WAYPOST_HTTP_TOKEN", "CONSUL_HTTP_TOKEN")

Params = Sequence[tuple[str, str]]


class AgentError(Exception):
    """Talking to the agent failed; `str()` is one line for the user."""


class BadAddress(AgentError):
    """The -http-addr value (or env) cannot be used."""


class AgentUnreachable(AgentError):
    def __init__(self, reason: str, base_url: str):
        self.reason = reason
        self.base_url = base_url
        super().__init__(f"{reason} ({base_url})")


class AgentHTTPError(AgentError):
    def __init__(self, status: int, body: str):
        self.status = status
        self.body = body
        super().__init__(f"Unexpected response code: {status} ({body})")


class AgentResponseError(AgentError):
    """The agent answered with something that is not the JSON we asked for."""


def truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "t", "true", "yes", "on")


def resolve_http_addr(flag_value: str, environ: Mapping[str, str]) -> str:
    """The base URL (scheme://host:port, no trailing slash) of the agent to talk to."""
    addr = flag_value.strip()
    if not addr:
        addr = next((environ[v].strip() for v in ADDR_ENV_VARS if environ.get(v, "").strip()), "")
    if not addr:
        addr = DEFAULT_HTTP_ADDR
    if addr.startswith("unix://"):
        raise BadAddress(f"unix socket addresses are not supported: {addr}")
    if "://" not in addr:
        scheme = "https" if truthy(environ.get("CONSUL_HTTP_SSL", "")) else "http"
        addr = f"{scheme}://{addr}"
    parsed = urllib.parse.urlsplit(addr)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise BadAddress(f"invalid HTTP address: {addr}")
    try:
        parsed.port  # noqa: B018 - validates the port
    except ValueError:
        raise BadAddress(f"invalid HTTP address: {addr}") from None
    return f"{parsed.scheme}://{parsed.netloc}"


def resolve_token(flag_value: str, environ: Mapping[str, str]) -> str:
    if flag_value:
        return flag_value
    return next((environ[v] for v in TOKEN_ENV_VARS if environ.get(v)), "")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AgentClient:
    """One agent's HTTP API, called synchronously."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str = "",
        timeout: float = REQUEST_TIMEOUT_S,
        verify_tls: bool = True,
    ):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        handlers: list[urllib.request.BaseHandler] = []
        host = urllib.parse.urlsplit(self.base_url).hostname or ""
        if _is_loopback(host):
            handlers.append(urllib.request.ProxyHandler({}))  # like Go: never proxy loopback
        if not verify_tls:
            handlers.append(urllib.request.HTTPSHandler(context=ssl._create_unverified_context()))
        self._opener = urllib.request.build_opener(*handlers)

    def get(self, path: str, params: Params = ()) -> object:
        return self.request("GET", path, params=params)

    def put(self, path: str, body: object = None, params: Params = ()) -> object:
        return self.request("PUT", path, body=body, params=params)

    def request(self, method: str, path: str, *, body: object = None, params: Params = ()) -> object:
        url = self.base_url + urllib.parse.quote(path, safe="/:")
        if params:
            url += "?" + urllib.parse.urlencode(list(params))
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("X-Consul-Token", self.token)
        raw = self._send(req)
        text = raw.decode("utf-8", errors="replace").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except ValueError:
            raise AgentResponseError(f"invalid JSON from agent at {url}") from None

    def _send(self, req: urllib.request.Request) -> bytes:
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return resp.read()
        except urllib.error.HTTPError as err:
            body = err.read().decode("utf-8", errors="replace").strip()
            raise AgentHTTPError(err.code, body) from None
        except urllib.error.URLError as err:
            raise AgentUnreachable(_reason(err.reason), self.base_url) from None
        except TimeoutError:
            raise AgentUnreachable("timed out", self.base_url) from None
        except (http.client.HTTPException, ConnectionError) as err:
            raise AgentUnreachable(_reason(err), self.base_url) from None


def _reason(reason: object) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, ConnectionResetError):
        return "connection reset by agent"
    if isinstance(reason, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return "no such host"
    if isinstance(reason, http.client.RemoteDisconnected):
        return "connection closed by agent"
    if isinstance(reason, ssl.SSLError):
        return f"TLS error: {reason.reason or reason}"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror[0].lower() + reason.strerror[1:]
    return str(reason) or type(reason).__name__
