"""HTTP probe with Consul's semantics (layer 2: aiohttp client).

Contract: `HTTPProbe(session_factory)`; `await probe(defn, timeout, output_limit)`:
- request `defn.method` (GET) to `defn.http` with `defn.header` (multi-valued; a `Host` entry sets
  the Host header), `defn.body`; `User-Agent: Consul Health Check` and
  `Accept: text/plain, text/*, */*` unless the definition sets them; a new connection per probe.
- TLS: `tls_skip_verify` disables verification, `tls_server_name` sets SNI/hostname checked.
- redirects (up to 10) are followed only while they stay on the same scheme, host and port;
  a redirect elsewhere is not followed and the check is critical. `disable_redirects` follows none
  (the 3xx itself is the answer: critical).
- 2xx → passing, 429 → warning, else critical; output
  `HTTP <METHOD> <url>: <code> <reason> Output: <first output_limit bytes of the body>`.
  Transport errors and timeouts → critical `<Method> "<url>": <error>` (Go's url.Error shape).
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from urllib.parse import urljoin, urlsplit

import aiohttp
from multidict import CIMultiDict

from checks.definition import CheckDefinition, Status, format_duration
from checks.probes.common import client_tls
from checks.result import CheckResult

USER_AGENT = "Consul Health Check"
ACCEPT = "text/plain, text/*, */*"
MAX_REDIRECTS = 10
REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


def _status_of(code: int) -> Status:
    if 200 <= code < 300:
        return Status.PASSING
    if code == 429:
        return Status.WARNING
    return Status.CRITICAL


class HTTPProbe:
    """Runs HTTP checks through one shared client session (connections are not reused)."""

    def __init__(self, session_factory: Callable[[], aiohttp.ClientSession] | None = None):
        self._factory = session_factory or self._default_session
        self._session: aiohttp.ClientSession | None = None

    @staticmethod
    def _default_session() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(force_close=True, limit=0, ttl_dns_cache=10)
        return aiohttp.ClientSession(connector=connector, auto_decompress=True, trust_env=False)

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = self._factory()
        return self._session

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    def _headers(self, defn: CheckDefinition) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        for name, values in defn.header.items():
            for value in values:
                headers.add(name, value)
        headers.setdefault("User-Agent", USER_AGENT)
        headers.setdefault("Accept", ACCEPT)
        return headers

    def _tls(self, defn: CheckDefinition, url: str) -> ssl.SSLContext | bool:
        if urlsplit(url).scheme != "https":
            return True
        return client_tls(defn.tls_skip_verify)

    async def __call__(self, defn: CheckDefinition, timeout: float, output_limit: int) -> CheckResult:
        method = (defn.method or "GET").upper()
        url = defn.http
        op = method[:1] + method[1:].lower()
        headers = self._headers(defn)
        body: bytes | None = defn.body.encode() if defn.body else None
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        origin = _origin(url)
        current = url
        try:
            for _ in range(MAX_REDIRECTS + 1):
                async with self.session().request(
                    method,
                    current,
                    headers=headers,
                    data=body,
                    allow_redirects=False,
                    timeout=client_timeout,
                    ssl=self._tls(defn, current),
                    server_hostname=(defn.tls_server_name or None) if current.startswith("https:") else None,
                ) as resp:
                    location = resp.headers.get("Location")
                    if resp.status in REDIRECT_CODES and location and not defn.disable_redirects:
                        target = urljoin(current, location)
                        if _origin(target) != origin:
                            return CheckResult.critical(
                                f"HTTP {method} {url}: {resp.status} {resp.reason} Output: "
                                f"redirect to {target} refused (other host or port)"
                            )
                        if resp.status == 303 or (
                            resp.status in (301, 302) and method not in ("GET", "HEAD")
                        ):
                            method, body = "GET", None
                        current = target
                        continue
                    content = await _read_prefix(resp, output_limit)
                    output = content.decode("utf-8", errors="replace")
                    text = f"HTTP {method} {url}: {resp.status} {resp.reason} Output: {output}"
                    return CheckResult(_status_of(resp.status), text)
            return CheckResult.critical(f'{op} "{url}": stopped after {MAX_REDIRECTS} redirects')
        except TimeoutError:
            return CheckResult.critical(
                f'{op} "{url}": context deadline exceeded (timeout {format_duration(timeout)})'
            )
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            return CheckResult.critical(f'{op} "{url}": {_error_text(exc)}')


async def _read_prefix(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < limit:
        chunk = await resp.content.read(limit - len(chunks))
        if not chunk:
            break
        chunks += chunk
    return bytes(chunks)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError) and not isinstance(exc, aiohttp.ClientSSLError):
        reason = exc.os_error.strerror or str(exc.os_error)
        return f"dial tcp {exc.host}:{exc.port}: {reason.lower()}"
    return str(exc) or type(exc).__name__
