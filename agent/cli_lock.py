"""`waypost lock PREFIX CMD` and `waypost elect PREFIX` (reference §5.5, §5.6) (layer 5).

Contract:
- `lock` creates a session (TTL `SESSION_TTL`, renewed every TTL/2), acquires `PREFIX/.lock` with
  Consul's lock flag (`-n 1`), or a slot of Consul's semaphore layout (`-n N`: contender key
  `PREFIX/<session>` plus the CAS-updated `PREFIX/.lock` holding `{"Limit", "Holders"}`), then runs
  CMD (through `$SHELL -c` unless `-shell=false`) with `CONSUL_LOCK_HELD=true` and, for `-n 1`,
  `WAYPOST_LOCK_FENCE=<fencing token>`. When the child exits the lock is released and the session
  destroyed. If the lock is lost, or on SIGINT/SIGTERM, the child gets SIGTERM (SIGKILL after
  `KILL_GRACE` s). Exit: 0, or 2 with `-child-exit-code` when the child failed, 1 on errors/loss.
- Consul's `lock` flags: `-timeout D` gives up acquiring after D (exit 1, "Shutdown triggered or
  timeout during lock acquisition"; 0 = wait forever); `-monitor-retry N` (default 3): while the
  lock is held, up to N consecutive 500s / connection errors from the agent are retried
  `MONITOR_RETRY_WAIT` s apart before the lock counts as lost (a successful read resets the count);
  `-pass-stdin` gives the child our stdin (otherwise it reads /dev/null, as Consul).
- The session keep-alive retries a failed renew (500 / connection error) every `RENEW_RETRY` s until
  `SESSION_TTL` has passed since the last good renew (Consul's RenewPeriodic).
- `lock` and `elect` keep waiting for the lock through 500s and connection errors (a Raft election
  on the servers); the session keep-alive gives up once `SESSION_TTL` has passed without a renew.
- `elect` acquires `PREFIX/leader` (value `-name`, default the host name), prints
  `Elected leader: NAME (fence token T)` once it leads, keeps its session alive, and exits 1
  printing `Lost leadership` when it loses the key; on SIGINT/SIGTERM it releases and exits 0.
- Everything runs on one asyncio loop with an aiohttp client; waits are blocking queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket

import aiohttp

from agent.cli_common import CommandFailed, Ctx, add_http_flags, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError, resolve_http_addr, resolve_token
from checks.definition import DurationError, parse_duration

LOCK_FLAG = 0x2DDCCBC058A50C18
SEMAPHORE_FLAG = 0xE0F69A2BAA414DE0
SESSION_TTL = 15.0
BLOCK_WAIT = "15s"
RETRY_AFTER = 1.0  # acquire retry while a lock-delay holds a free key (Consul: 5 s)
KILL_GRACE = 5.0
MONITOR_RETRIES = 3        # Consul's -monitor-retry default (defaultMonitorRetry)
MONITOR_RETRY_WAIT = 2.0   # Consul's DefaultMonitorRetryTime
RENEW_RETRY = 1.0          # Consul's RenewPeriodic retry interval after an error
TIMEOUT_MESSAGE = "Shutdown triggered or timeout during lock acquisition"
TIMED_OUT = object()       # what the -timeout sleep returns when it wins the race with acquiring


class LockLost(Exception):
    """The lock (or the session) went away while we held it."""


class AgentUnavailable(CommandFailed):
    """The agent answered 500 or could not be reached: Consul's IsRetryableError."""


class Api:
    PASSED_BACK = frozenset({404})  # statuses returned to the caller; other 4xx/5xx fail the command

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.headers = {"X-Consul-Token": token} if token else {}
        self.http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Api:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.http is not None
        await self.http.close()

    async def call(self, method: str, path: str, params: dict[str, str] | None = None,
                   body: bytes | None = None) -> tuple[int, dict[str, str], object]:
        assert self.http is not None
        try:
            async with self.http.request(method, self.base + path, params=params or {}, data=body,
                                         headers=self.headers) as resp:
                data = await resp.read()
                if resp.status >= 400 and resp.status not in self.PASSED_BACK:
                    error = AgentUnavailable if resp.status == 500 else CommandFailed
                    raise error(f"Unexpected response code: {resp.status} ({data.decode(errors='replace')})")
                if resp.status in self.PASSED_BACK and data.strip() and "json" not in resp.content_type:
                    return resp.status, dict(resp.headers), data.decode(errors="replace")  # e.g. a 404's text
                return resp.status, dict(resp.headers), json.loads(data) if data.strip() else None
        except aiohttp.ClientError as err:
            raise AgentUnavailable(f"Error talking to agent at {self.base}: {err}") from None

    async def session(self, name: str) -> str:
        body = json.dumps({"Name": name, "TTL": f"{SESSION_TTL:g}s", "Behavior": "release"}).encode()
        _, _, out = await self.call("PUT", "/v1/session/create", body=body)
        return out["ID"]  # type: ignore[index]

    async def keep_alive(self, sid: str) -> None:
        loop = asyncio.get_running_loop()
        last_renew, wait = loop.time(), SESSION_TTL / 2
        while True:
            await asyncio.sleep(wait)
            try:
                status, _, _ = await self.call("PUT", f"/v1/session/renew/{sid}")
            except AgentUnavailable:
                if loop.time() - last_renew > SESSION_TTL:
                    raise
                wait = RENEW_RETRY
                continue
            if status == 404:
                raise LockLost("session expired")
            last_renew, wait = loop.time(), SESSION_TTL / 2

    async def acquire(self, key: str, sid: str, value: bytes, flags: int) -> str:
        """Acquire `key`, blocking until it is free; returns the fencing token. A 500 or an
        unreachable agent (e.g. a Raft election) is retried `RETRY_AFTER` s later: the session's
        keep-alive, raced against this, bounds how long that can go on."""
        while True:
            try:
                _, headers, ok = await self.call("PUT", f"/v1/kv/{key}", {"acquire": sid, "flags": str(flags)},
                                                 value)
                if ok is True:
                    return headers.get("X-Waypost-Fence-Token", "")
                status, headers, entries = await self.call("GET", f"/v1/kv/{key}")
                if status == 200 and entries[0].get("Session"):  # type: ignore[index]
                    await self.call("GET", f"/v1/kv/{key}", {"index": headers["X-Consul-Index"],
                                                             "wait": BLOCK_WAIT})
                    continue
            except AgentUnavailable:
                pass
            await asyncio.sleep(RETRY_AFTER)  # free but under lock-delay, or the agent is unavailable

    async def watch_until(self, path: str, params: dict[str, str], lost,  # type: ignore[no-untyped-def]
                          retries: int = 0) -> None:
        """Block on `path` until `lost(status, body)` is true; up to `retries` consecutive
        `AgentUnavailable` errors are retried `MONITOR_RETRY_WAIT` s apart (then it raises)."""
        index, left = "0", retries
        while True:
            try:
                status, headers, body = await self.call("GET", path, {**params, "index": index, "wait": BLOCK_WAIT})
            except AgentUnavailable:
                if left <= 0:
                    raise
                left -= 1
                index = "0"
                await asyncio.sleep(MONITOR_RETRY_WAIT)
                continue
            if lost(status, body):
                return
            index, left = headers.get("X-Consul-Index", index), retries


def _api(values: dict[str, object], ctx: Ctx) -> Api:
    try:
        base = resolve_http_addr(str(values.get("http-addr", "")), ctx.environ)
    except AgentError as err:
        raise CommandFailed(f"Error connecting to agent: {err}") from None
    return Api(base, resolve_token(str(values.get("token", "")), ctx.environ))


def _holder_lost(sid: str):  # type: ignore[no-untyped-def]
    return lambda status, body: status == 404 or body[0].get("Session") != sid


async def _semaphore_acquire(api: Api, prefix: str, sid: str, limit: int) -> None:
    ok = (await api.call("PUT", f"/v1/kv/{prefix}/{sid}", {"acquire": sid, "flags": str(SEMAPHORE_FLAG)}, b""))[2]
    if ok is not True:
        raise CommandFailed("Failed to create the semaphore contender key")
    index = "0"
    while True:
        status, headers, entries = await api.call("GET", f"/v1/kv/{prefix}/", {"recurse": "", "index": index,
                                                                               "wait": BLOCK_WAIT})
        index = headers.get("X-Consul-Index", "0")
        rows = entries if status == 200 else []
        lock = next((e for e in rows if e["Key"] == f"{prefix}/.lock"), None)  # type: ignore[union-attr]
        state = json.loads(_value(lock)) if lock else {"Limit": limit, "Holders": {}}
        if state["Limit"] != limit:
            raise CommandFailed(f"Semaphore limit conflict (lock: {state['Limit']}, local: {limit})")
        live = {e["Key"][len(prefix) + 1:] for e in rows if e.get("Session")}  # type: ignore[union-attr]
        holders = {h: True for h in state["Holders"] if h in live}
        if sid in holders:
            return
        if len(holders) < limit:
            holders[sid] = True
            body = json.dumps({"Limit": limit, "Holders": holders}).encode()
            cas = str(lock["ModifyIndex"]) if lock else "0"
            if (await api.call("PUT", f"/v1/kv/{prefix}/.lock", {"cas": cas, "flags": str(SEMAPHORE_FLAG)},
                               body))[2] is True:
                return
            index = "0"


async def _semaphore_release(api: Api, prefix: str, sid: str) -> None:
    for _ in range(20):
        status, _, entries = await api.call("GET", f"/v1/kv/{prefix}/.lock")
        if status == 404:
            break
        lock = entries[0]  # type: ignore[index]
        state = json.loads(_value(lock))
        if sid not in state["Holders"]:
            break
        del state["Holders"][sid]
        params = {"cas": str(lock["ModifyIndex"]), "flags": str(SEMAPHORE_FLAG)}
        if (await api.call("PUT", f"/v1/kv/{prefix}/.lock", params, json.dumps(state).encode()))[2] is True:
            break
    await api.call("DELETE", f"/v1/kv/{prefix}/{sid}")


def _value(entry: dict) -> bytes:
    import base64

    return base64.b64decode(entry["Value"]) if entry.get("Value") else b"{}"


async def _first(*aws) -> asyncio.Task:  # type: ignore[no-untyped-def]
    tasks = [asyncio.ensure_future(a) for a in aws]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return next(t for t in tasks if t in done)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _run_lock(values: dict[str, object], ctx: Ctx, prefix: str, command: list[str]) -> int:
    limit = int(values["n"])  # type: ignore[call-overload]
    timeout = float(values.get("timeout-seconds", 0.0))  # type: ignore[arg-type]
    retries = int(values.get("monitor-retry", MONITOR_RETRIES))  # type: ignore[call-overload]
    prefix = prefix.strip("/")
    stop = _stop_event()
    async with _api(values, ctx) as api:
        sid = await api.session(str(values["name"]) or ("Consul API Lock" if limit == 1 else "Consul API Semaphore"))
        renew = asyncio.ensure_future(api.keep_alive(sid))
        try:
            env = dict(os.environ, CONSUL_LOCK_HELD="true")
            acquiring = (api.acquire(f"{prefix}/.lock", sid, b"", LOCK_FLAG) if limit == 1
                         else _semaphore_acquire(api, prefix, sid, limit))
            expired = asyncio.sleep(timeout, TIMED_OUT) if timeout > 0 else asyncio.Event().wait()
            got = await _first(acquiring, renew_guard(renew), stop.wait(), expired)
            if stop.is_set():
                return 0
            token = got.result()  # raises if acquiring failed or the session was lost
            if token is TIMED_OUT:
                ctx.err(TIMEOUT_MESSAGE)
                return 1
            if limit == 1:
                env["WAYPOST_LOCK_FENCE"] = str(token)
                monitor = api.watch_until(f"/v1/kv/{prefix}/.lock", {}, _holder_lost(sid), retries)
            else:
                monitor = api.watch_until(f"/v1/kv/{prefix}/.lock", {}, lambda s, b: s == 404 or sid not in
                                          json.loads(_value(b[0]))["Holders"], retries)
            if values["verbose"]:
                ctx.err(f"Lock acquired on {prefix} (session {sid})")
            stdin = None if values.get("pass-stdin") else asyncio.subprocess.DEVNULL
            if values["shell"]:
                child = await asyncio.create_subprocess_exec(os.environ.get("SHELL", "/bin/sh"), "-c",
                                                             " ".join(command), env=env, stdin=stdin)
            else:
                child = await asyncio.create_subprocess_exec(*command, env=env, stdin=stdin)
            ended = await _first(child.wait(), monitor, renew_guard(renew), stop.wait())
            if child.returncode is None:
                child.terminate()
                try:
                    await asyncio.wait_for(child.wait(), KILL_GRACE)
                except TimeoutError:
                    child.kill()
                    await child.wait()
                if not stop.is_set():
                    ctx.err(f"Lock lost on {prefix}: child terminated ({ended.exception() or 'lock released'})")
                    return 1
                return 0
            return 2 if values["child-exit-code"] and child.returncode else 0
        finally:
            renew.cancel()
            with contextlib.suppress(CommandFailed, asyncio.CancelledError):
                if limit == 1:
                    await api.call("PUT", f"/v1/kv/{prefix}/.lock", {"release": sid, "flags": str(LOCK_FLAG)})
                else:
                    await _semaphore_release(api, prefix, sid)
                await api.call("PUT", f"/v1/session/destroy/{sid}")


async def renew_guard(renew: asyncio.Future) -> None:
    """Completes (with the renew loop's error) only if the session keep-alive fails."""
    await asyncio.shield(renew)


def cmd_lock(argv: list[str], ctx: Ctx) -> int:
    values, args = parse_lock_flags(argv)
    return asyncio.run(_run_lock(values, ctx, args[0], args[1:]))


def parse_lock_flags(argv: list[str]) -> tuple[dict[str, object], list[str]]:
    """`lock`'s flags and positional arguments, validated (`timeout-seconds` holds -timeout parsed)."""
    fs = FlagSet("lock", "Usage: waypost lock [options] prefix child...\n\n"
                 "  Acquires a lock or semaphore at prefix and runs child while holding it.")
    add_http_flags(fs)
    fs.int("n", "Maximum number of lock holders (> 1 uses a semaphore).", default=1)
    fs.string("name", "Name of the session.")
    fs.bool("shell", "Run the child through $SHELL -c.", default=True)
    fs.bool("child-exit-code", "Exit 2 if the child exited with an error.")
    fs.bool("verbose", "Print lock progress on stderr.")
    fs.string("timeout", "Maximum time to wait to acquire the lock (e.g. 10s; 0 = forever).", placeholder="duration")
    fs.int("monitor-retry", "Retries when the agent answers 500 while monitoring the lock.", default=MONITOR_RETRIES)
    fs.bool("pass-stdin", "Pass stdin to the child process.")
    values, args = parse_flags(fs, argv)
    if len(args) < 2:
        raise CommandFailed("Key prefix and child command must be specified")
    if int(values["n"]) < 1:  # type: ignore[call-overload]
        raise CommandFailed("Lock holder limit must be positive")
    if int(values["monitor-retry"]) < 0:  # type: ignore[call-overload]
        raise CommandFailed("Monitor retry count must be zero or positive")
    raw = str(values.get("timeout") or "0")
    try:
        values["timeout-seconds"] = parse_duration(raw)
    except DurationError:
        raise CommandFailed(f"Invalid -timeout {raw!r}: expected a duration such as 30s") from None
    return values, args


async def _run_elect(values: dict[str, object], ctx: Ctx, prefix: str) -> int:
    key = f"{prefix.strip('/')}/leader"
    name = str(values["name"]) or socket.gethostname()
    stop = _stop_event()
    async with _api(values, ctx) as api:
        sid = await api.session(f"waypost elect {name}")
        renew = asyncio.ensure_future(api.keep_alive(sid))
        try:
            got = await _first(api.acquire(key, sid, name.encode(), 0), renew_guard(renew), stop.wait())
            if stop.is_set():
                return 0
            token = got.result()  # raises if acquiring failed or the session was lost
            ctx.out(f"Elected leader: {name} (fence token {token})")
            ctx.stdout.flush()
            await _first(api.watch_until(f"/v1/kv/{key}", {}, _holder_lost(sid), MONITOR_RETRIES),
                         renew_guard(renew), stop.wait())
            if stop.is_set():
                ctx.out("Resigned leadership")
                return 0
            ctx.out("Lost leadership")
            return 1
        finally:
            renew.cancel()
            with contextlib.suppress(CommandFailed, asyncio.CancelledError):
                await api.call("PUT", f"/v1/kv/{key}", {"release": sid})
                await api.call("PUT", f"/v1/session/destroy/{sid}")


def cmd_elect(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("elect", "Usage: waypost elect [options] prefix\n\n"
                 "  Campaigns for leadership on prefix/leader; prints when elected, exits when it loses.")
    add_http_flags(fs)
    fs.string("name", "The value written to the leader key (default: the host name).")
    values, args = parse_flags(fs, argv)
    if len(args) != 1:
        raise CommandFailed("Exactly one key prefix must be specified")
    return asyncio.run(_run_elect(values, ctx, args[0]))
