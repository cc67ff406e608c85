"""`waypost watch -type TYPE [...] [HANDLER...]` like `consul watch` (reference §7.2) (layer 5).

Contract:
- Types and their blocking query: `key` (`-key`; `/v1/kv/KEY`, the entry object or null),
  `keyprefix` (`-prefix`; `/v1/kv/PREFIX?recurse`, a list), `services` (`/v1/catalog/services`),
  `nodes` (`/v1/catalog/nodes`), `service` (`-service`, `-tag`, `-passingonly`;
  `/v1/health/service/NAME`), `checks` (`-service` or `-state`; `/v1/health/checks|state`), `event`
  (`-name`; `/v1/event/list`, only the events not yet delivered).
- With a HANDLER (the remaining arguments, run through `sh -c`), the handler runs once per change
  of the watched answer with the JSON on stdin and `CONSUL_INDEX` set; its exit status is reported
  on stderr and the watch goes on (an empty first event list does not run it). Without one, the
  current answer is printed (indented JSON) and the command exits, like Consul; `-follow` prints
  one compact JSON line per change instead.
- `WatchPlan` decides, without I/O: the handler fires only when the answer's content differs from
  the last delivered one (an index bump alone never fires); an index that goes backwards resets
  to 0 (one non-blocking re-read); after the first answer an index of 0 is sent as 1. Event list
  indexes are not ordered (reference §6.1), so for `event` only "equal = nothing new" applies and
  the events up to the last delivered ID are dropped.
- The loop is rate-limited by a token bucket (`RATE_BURST`, `RATE_PER_S`): blocking answers never
  notice it, a misbehaving agent answering at once cannot spin it. Errors after the first answer
  retry with backoff (`RETRY_MIN` doubling to `RETRY_MAX`); the first request failing exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from dataclasses import dataclass, field

from agent.cli_common import CommandFailed, Ctx, add_http_flags, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError, resolve_http_addr, resolve_token
from agent.cli_lock import Api
from checks.definition import DurationError, parse_duration

TYPES = ("key", "keyprefix", "services", "nodes", "service", "checks", "event")
BLOCK_WAIT = "45s"  # + ≤1/16 jitter stays under the client's 60 s request timeout
MAX_WAIT_S = 50.0
RATE_BURST = 10
RATE_PER_S = 20.0
RETRY_MIN = 0.5
RETRY_MAX = 30.0

USAGE = """Usage: waypost watch [options] [child...]

  Watches for changes in a given data view from the agent. If a child process is specified, it
  is invoked (through sh -c) with the latest results on stdin each time they change. Otherwise
  the current value is printed as JSON and the watch terminates (-follow keeps printing).
"""


@dataclass
class WatchPlan:
    """The pure part of a watch: which index to ask next and whether an answer is news."""

    kind: str
    index: int = 0
    answered: bool = False
    last: object = None
    delivered: bool = False
    last_event_id: str = ""

    def query_index(self) -> int:
        if self.answered and self.index <= 0:
            return 1  # never loop with index=0 after the first answer (§7.2 rule 2)
        return self.index

    def observe(self, index: int, result: object) -> tuple[bool, object]:
        """Record one answer; returns (changed, what to deliver)."""
        previous, self.answered = self.index, True
        if self.kind == "event":
            self.index = index
            if not isinstance(result, list):
                return False, None
            ids = [e.get("ID") for e in result if isinstance(e, dict)]
            fresh = result[ids.index(self.last_event_id) + 1:] if self.last_event_id in ids else result
            first, self.delivered = not self.delivered, True
            if fresh:
                self.last_event_id = str(fresh[-1].get("ID", ""))
            if not first and (index == previous or not fresh):
                return False, None
            return True, fresh
        self.index = 0 if index < previous else index  # §7.2 rule 1: reset when it goes backwards
        if result == self.last and (self.delivered or result is None):
            return False, None  # unchanged (a key that does not exist yet is not news either, like Consul)
        self.last, self.delivered = result, True
        return True, result


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = field(init=False)
    stamp: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def delay(self, now: float) -> float:
        """Take a token; returns how long to wait first (0 when one was available)."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= 1
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def request_for(kind: str, values: dict[str, object]) -> tuple[str, list[tuple[str, str]]]:
    """The blocking query for a watch type (path, params without index/wait)."""
    params: list[tuple[str, str]] = []
    if values.get("datacenter"):
        params.append(("dc", str(values["datacenter"])))
    if values.get("stale"):
        params.append(("stale", ""))
    if kind == "key":
        key = _need(values, "key", kind)
        return f"/v1/kv/{key.lstrip('/')}", params
    if kind == "keyprefix":
        return f"/v1/kv/{_need(values, 'prefix', kind).lstrip('/')}", [*params, ("recurse", "")]
    if kind == "services":
        return "/v1/catalog/services", params
    if kind == "nodes":
        return "/v1/catalog/nodes", params
    if kind == "service":
        params += [("tag", str(t)) for t in values.get("tag") or []]  # type: ignore[union-attr]
        if values.get("passingonly"):
            params.append(("passing", ""))
        return f"/v1/health/service/{_need(values, 'service', kind)}", params
    if kind == "checks":
        if values.get("service") and values.get("state"):
            raise CommandFailed("Cannot specify both -service and -state for a checks watch")
        if values.get("service"):
            return f"/v1/health/checks/{values['service']}", params
        return f"/v1/health/state/{values.get('state') or 'any'}", params
    if kind == "event":
        return "/v1/event/list", [*params, *([("name", str(values["name"]))] if values.get("name") else [])]
    raise CommandFailed(f"Unsupported watch type: {kind!r} (one of {', '.join(TYPES)})")


def _need(values: dict[str, object], flag: str, kind: str) -> str:
    value = str(values.get(flag) or "")
    if not value:
        raise CommandFailed(f"Must specify a single -{flag} for watch type {kind}")
    return value


def _flags() -> FlagSet:
    fs = FlagSet("watch", USAGE)
    add_http_flags(fs, server=True)
    fs.string("type", f"Watch type: one of {', '.join(TYPES)}.")
    fs.string("key", "Key to watch (type key).")
    fs.string("prefix", "Key prefix to watch (type keyprefix).")
    fs.string("service", "Service to watch (type service, or checks of a service).")
    fs.multi("tag", "Service tag to filter on (type service); repeatable.")
    fs.bool("passingonly", "Only return instances passing all health checks (type service).")
    fs.string("state", "Check state to filter on (type checks).")
    fs.string("name", "Event name to watch (type event).")
    fs.string("wait", f"Blocking-query wait per request (default {BLOCK_WAIT}, at most 50s).", placeholder="duration")
    fs.bool("follow", "Without a handler: print every change as a JSON line instead of exiting.")
    return fs


def cmd_watch(argv: list[str], ctx: Ctx) -> int:
    values, child = parse_flags(_flags(), argv)
    kind = str(values.get("type") or "")
    if not kind:
        raise CommandFailed("Must specify watch type")
    path, params = request_for(kind, values)
    try:
        base = resolve_http_addr(str(values.get("http-addr", "")), ctx.environ)
    except AgentError as err:
        raise CommandFailed(f"Error connecting to agent: {err}") from None
    token = resolve_token(str(values.get("token", "")), ctx.environ)
    handler = " ".join(child)
    wait = _wait_flag(str(values.get("wait") or BLOCK_WAIT))
    plan = WatchPlan(kind)
    return asyncio.run(_run(ctx, base, token, plan, path, params, handler, bool(values["follow"]), wait))


def _wait_flag(raw: str) -> str:
    try:
        seconds = parse_duration(raw)
    except DurationError:
        raise CommandFailed(f"Invalid -wait {raw!r}: expected a duration such as 30s") from None
    if not 0 < seconds <= MAX_WAIT_S:
        raise CommandFailed(f"Invalid -wait {raw!r}: must be above 0 and at most {MAX_WAIT_S:g}s")
    return raw


async def _run(ctx: Ctx, base: str, token: str, plan: WatchPlan, path: str, params: list[tuple[str, str]],
               handler: str, follow: bool, wait: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        async with Api(base, token) as api:
            runner = asyncio.ensure_future(_loop(ctx, api, plan, path, params, handler, follow, wait))
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (runner, stopper):
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            return runner.result() if runner.done() and not runner.cancelled() else 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


async def _loop(ctx: Ctx, api: Api, plan: WatchPlan, path: str, params: list[tuple[str, str]],
                handler: str, follow: bool, wait: str) -> int:
    bucket = TokenBucket(RATE_PER_S, RATE_BURST)
    retry = RETRY_MIN
    while True:
        await asyncio.sleep(bucket.delay(time.monotonic()))
        query = list(params)
        index = plan.query_index()
        if index > 0:
            query += [("index", str(index)), ("wait", wait)]
        try:
            status, headers, body = await api.call("GET", path, params=query)  # type: ignore[arg-type]
        except CommandFailed as err:
            if not plan.answered:
                raise
            ctx.err(f"watch: {err}; retrying in {retry:g}s")
            await asyncio.sleep(retry)
            retry = min(RETRY_MAX, retry * 2)
            continue
        retry = RETRY_MIN
        answer_index = _index_of(headers)
        result = _shape(plan.kind, status, body)
        changed, news = plan.observe(answer_index, result)
        if not changed or (news == [] and plan.kind == "event" and (handler or follow)):
            continue
        if not handler:
            if follow:
                ctx.out(json.dumps(news, separators=(",", ":")))
                ctx.stdout.flush()
                continue
            ctx.out(json.dumps(news, indent=4))
            return 0
        await _invoke(ctx, handler, news, answer_index)


def _index_of(headers: dict[str, str]) -> int:
    raw = headers.get("X-Consul-Index", "")
    return int(raw) if raw.isdigit() else 0


def _shape(kind: str, status: int, body: object) -> object:
    if kind == "key":
        return body[0] if status != 404 and isinstance(body, list) and body else None
    if status == 404:
        return [] if kind in ("keyprefix", "event") else None
    return body


async def _invoke(ctx: Ctx, handler: str, data: object, index: int) -> None:
    env = dict(ctx.environ, CONSUL_INDEX=str(index))
    proc = await asyncio.create_subprocess_shell(handler, stdin=asyncio.subprocess.PIPE, env=env)
    try:
        await proc.communicate((json.dumps(data) + "\n").encode())
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    if proc.returncode:
        ctx.err(f"watch: handler {handler!r} exited with {proc.returncode}")
