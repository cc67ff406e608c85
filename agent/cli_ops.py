"""`waypost monitor`: stream an agent's log lines (layer 5, stdlib only).

Contract:
- `cmd_monitor(argv, ctx)` takes Consul's flags (`-log-level`, default info; `-log-json`; the HTTP
  client flags) and prints every line of `GET /v1/agent/monitor` as it arrives, flushing each.
- A bad level or an unreachable agent is one line on stderr, exit 1. When the agent ends the
  stream (it stopped), it prints Consul's "Remote side ended the monitor!" notice and exits 1;
  Ctrl-C ends it (the CLI's main maps that to 130).
"""

from __future__ import annotations

import http.client
import ssl
import urllib.parse

from agent.cli_common import CommandFailed, Ctx, add_http_flags, no_positional, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError, resolve_http_addr, resolve_token, truthy

CONNECT_TIMEOUT = 10.0  # seconds to connect and get the response head; the stream itself has no timeout
ENDED = ("Remote side ended the monitor! This usually means that the\n"
         "remote side has exited or crashed.")


def _connection(base: str, ctx: Ctx) -> http.client.HTTPConnection:
    parts = urllib.parse.urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    if parts.scheme == "https":
        context = ssl.create_default_context()
        raw_verify = ctx.environ.get("CONSUL_HTTP_SSL_VERIFY", "")
        if raw_verify.strip() and not truthy(raw_verify):
            context = ssl._create_unverified_context()
        return http.client.HTTPSConnection(host, parts.port or 443, timeout=CONNECT_TIMEOUT, context=context)
    return http.client.HTTPConnection(host, parts.port or 80, timeout=CONNECT_TIMEOUT)


def cmd_monitor(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("monitor", "Usage: waypost monitor [options]\n\n"
                 "  Shows recent log messages of a waypost agent, and attaches to the agent,\n"
                 "  outputting log messages as they occur in real time. The monitor lets you\n"
                 "  listen for log levels that may be filtered out of the agent's own log.")  # fmt: skip
    add_http_flags(fs)
    fs.string("log-level", "Log level of the agent: trace, debug, info, warn or error.", default="info",
              placeholder="level")
    fs.bool("log-json", "Output logs in JSON format.")
    values, args = parse_flags(fs, argv)
    no_positional(args)
    try:
        base = resolve_http_addr(str(values.get("http-addr", "")), ctx.environ)
    except AgentError as err:
        raise CommandFailed(f"Error connecting to agent: {err}") from None
    params = [("loglevel", str(values["log-level"]))]
    if values["log-json"]:
        params.append(("logjson", "true"))
    headers = {"Accept": "text/plain"}
    token = resolve_token(str(values.get("token", "")), ctx.environ)
    if token:
        headers["X-Consul-Token"] = token
    conn = _connection(base, ctx)
    try:
        conn.request("GET", "/v1/agent/monitor?" + urllib.parse.urlencode(params), headers=headers)
        response = conn.getresponse()
    except (OSError, http.client.HTTPException) as err:
        conn.close()
        raise CommandFailed(f"Error starting monitor: {err or type(err).__name__} ({base})") from None
    try:
        if response.status != 200:
            body = response.read().decode("utf-8", errors="replace").strip()
            raise CommandFailed(f"Error starting monitor: Unexpected response code: {response.status} ({body})")
        if conn.sock is not None:
            conn.sock.settimeout(None)  # a quiet agent logs nothing for a long time
        while True:
            try:
                line = response.readline()
            except (OSError, http.client.HTTPException):
                break
            if not line:
                break
            ctx.out(line.decode("utf-8", errors="replace").rstrip("\n"))
            ctx.stdout.flush()
    finally:
        conn.close()
    ctx.err(ENDED)
    return 1
