"""What every CLI command shares (layer 5 helper): output context, exits, HTTP flags.

Contract:
- A command is `fn(argv: list[str], ctx: Ctx) -> int`. It writes through `ctx.out`/`ctx.err`
  (so tests capture output without touching sys.stdout) and reads `ctx.environ`.
- A command ends early by raising `CommandFailed(message)` (message on stderr, exit 1, never a
  traceback) or `CommandExit(code, stdout=..., stderr=...)` (help text, usage errors).
- `parse_flags(fs, argv)` turns `-h` into help on stdout (exit 0) and a bad flag into the error and
  the usage on stderr (exit 1). `add_http_flags(fs)` declares Consul's client flags
  (`-http-addr`, `-token`, and with `server=True` `-datacenter`, `-stale`); `make_client(values,
  ctx)` builds the `AgentClient` they describe; `query_params(values)` gives `dc`/`stale`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

from agent.cli_flags import FlagSet, HelpRequested, UsageError
from agent.cli_http import AgentClient, AgentError, resolve_http_addr, resolve_token, truthy


class CommandFailed(Exception):
    """A command failed; `str()` is what the user sees on stderr. Exit code 1."""


class CommandExit(Exception):
    """Leave the command with this code after printing the given texts."""

    def __init__(self, code: int, *, stdout: str = "", stderr: str = ""):
        super().__init__(code)
        self.code = code
        self.stdout = stdout
        self.stderr = stderr


@dataclass(slots=True)
class Ctx:
    stdout: TextIO = field(default_factory=lambda: sys.stdout)
    stderr: TextIO = field(default_factory=lambda: sys.stderr)
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    def out(self, text: str) -> None:
        print(text, file=self.stdout)

    def err(self, text: str) -> None:
        print(text, file=self.stderr)


def parse_flags(fs: FlagSet, argv: list[str]) -> tuple[dict[str, object], list[str]]:
    try:
        return fs.parse(argv)
    except HelpRequested:
        raise CommandExit(0, stdout=fs.usage()) from None
    except UsageError as err:
        raise CommandExit(1, stderr=f"{err}\n{fs.usage()}") from None


def no_positional(args: list[str]) -> None:
    if args:
        raise CommandFailed(f"Too many arguments (expected 0, got {len(args)})")


def add_http_flags(fs: FlagSet, *, server: bool = False) -> None:
    fs.string(
        "http-addr",
        "The address and port of the agent HTTP server. Can also be given with the "
        "WAYPOST_HTTP_ADDR or CONSUL_HTTP_ADDR environment variable (default http://127.0.0.1:8500).",
        placeholder="address",
    )
    fs.string(
        "token",
        "ACL token to use in the request (X-Consul-Token). Also CONSUL_HTTP_TOKEN.",
        placeholder="value",
    )
    if server:
        fs.string("datacenter", "Name of the datacenter to query (default: the agent's).")
        fs.bool("stale", "Permit any server to answer the request, not just the leader.")


def make_client(values: Mapping[str, object], ctx: Ctx) -> AgentClient:
    try:
        base = resolve_http_addr(str(values.get("http-addr", "")), ctx.environ)
    except AgentError as err:
        raise CommandFailed(f"Error connecting to agent: {err}") from None
    token = resolve_token(str(values.get("token", "")), ctx.environ)
    raw_verify = ctx.environ.get("CONSUL_HTTP_SSL_VERIFY", "")
    verify = not raw_verify.strip() or truthy(raw_verify)
    return AgentClient(base, token=token, verify_tls=verify)


def query_params(values: Mapping[str, object]) -> list[tuple[str, str]]:
    params: list[tuple[str, str]] = []
    if values.get("datacenter"):
        params.append(("dc", str(values["datacenter"])))
    if values.get("stale"):
        params.append(("stale", ""))
    return params


def node_meta_params(meta: object) -> list[tuple[str, str]]:
    """`-node-meta k=v` flags → Consul's repeated `node-meta=k:v` query parameters."""
    if not isinstance(meta, Mapping):
        return []
    return [("node-meta", f"{k}:{v}") for k, v in meta.items()]
