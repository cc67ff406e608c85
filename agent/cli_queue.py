"""`waypost queue push PREFIX VALUE` and `waypost queue pop PREFIX`: a distributed FIFO on KV (layer 5).

Key layout under PREFIX (a trailing "/" is ignored):
- `PREFIX/.counter`: the last sequence number handed out, as decimal text.
- `PREFIX/items/<seq>`: one queued item, `<seq>` zero-padded to 20 digits so key order is FIFO
  order; the value is the item's payload (bytes, as given).

Contract:
- push reads the counter (N, ModifyIndex M; missing = 0) and commits, in one `/v1/txn`, a `cas`
  of the counter to N+1 at index M together with a `set` of `items/<N+1>`; when another pusher
  won the race (409) it re-reads and retries. An item therefore never exists without its
  sequence number, and no two pushes share one. Prints the item's key.
- pop lists `items/` (recurse), takes the oldest item and claims it with one `/v1/txn` of
  `check-index` (its ModifyIndex) + `delete`: only one consumer's claim can succeed, and a
  claim of an item that is already gone fails (a bare `DELETE ?cas=` would succeed on a missing
  key, as in Consul, so two consumers could both "win"). The loser tries the next item. With
  nothing queued it waits with a blocking query on the `items/` prefix. Prints the payload.
  `-timeout` (a duration, default 0 = wait forever) bounds the wait: exit 2 when it passes.
- Errors (agent unreachable, unexpected status, a corrupt counter) exit 1 with a message.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys

from agent.cli_common import CommandExit, CommandFailed, Ctx, add_http_flags, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_http import AgentError, resolve_http_addr, resolve_token
from agent.cli_lock import Api
from checks.definition import parse_duration

SEQ_WIDTH = 20
BLOCK_WAIT = 15.0  # seconds per blocking query while the queue is empty
MAX_PUSH_ATTEMPTS = 1000
EXIT_TIMEOUT = 2


class QueueApi(Api):
    """`Api` that hands 404 and 409 back to the caller instead of failing."""

    PASSED_BACK = frozenset({404, 409})


def _queue_api(values: dict[str, object], ctx: Ctx) -> QueueApi:
    try:
        base = resolve_http_addr(str(values.get("http-addr", "")), ctx.environ)
    except AgentError as err:
        raise CommandFailed(f"Error connecting to agent: {err}") from None
    return QueueApi(base, resolve_token(str(values.get("token", "")), ctx.environ))


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


def item_key(prefix: str, seq: int) -> str:
    return f"{prefix}/items/{seq:0{SEQ_WIDTH}d}"


def _prefix(raw: str) -> str:
    prefix = raw.strip("/")
    if not prefix:
        raise CommandFailed("A non-empty queue prefix must be specified")
    return prefix


async def push(api: Api, prefix: str, value: bytes) -> str:
    counter = f"{prefix}/.counter"
    for _ in range(MAX_PUSH_ATTEMPTS):
        status, _, entries = await api.call("GET", f"/v1/kv/{counter}")
        last, index = 0, 0
        if status == 200:
            entry = entries[0]  # type: ignore[index]
            text = base64.b64decode(entry.get("Value") or "").decode(errors="replace").strip()
            if not text.isdigit():
                raise CommandFailed(f"Queue counter {counter} holds {text!r}, not a number")
            last, index = int(text), int(entry["ModifyIndex"])
        key = item_key(prefix, last + 1)
        ops = [{"KV": {"Verb": "cas", "Key": counter, "Value": _b64(str(last + 1).encode()), "Index": index}},
               {"KV": {"Verb": "set", "Key": key, "Value": _b64(value)}}]
        status, _, _ = await api.call("PUT", "/v1/txn", body=json.dumps(ops).encode())
        if status == 200:
            return key
    raise CommandFailed(f"Could not push to {prefix}: the counter kept changing")


async def pop(api: Api, prefix: str, timeout: float) -> tuple[str, bytes] | None:
    """Claim the oldest item: (key, payload), or None when `timeout` (> 0) passed first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout if timeout > 0 else None
    path = f"/v1/kv/{prefix}/items/"
    params = {"recurse": ""}
    while True:
        status, headers, entries = await api.call("GET", path, params)
        for entry in sorted(entries or [] if status == 200 else [], key=lambda e: e["Key"]):  # type: ignore[union-attr]
            ops = [{"KV": {"Verb": "check-index", "Key": entry["Key"], "Index": entry["ModifyIndex"]}},
                   {"KV": {"Verb": "delete", "Key": entry["Key"]}}]
            claimed, _, _ = await api.call("PUT", "/v1/txn", body=json.dumps(ops).encode())
            if claimed == 200:
                return entry["Key"], base64.b64decode(entry.get("Value") or "")
        if status == 200:
            continue  # every item we saw was taken by someone else: re-read at once
        wait = BLOCK_WAIT
        if deadline is not None:
            wait = min(wait, deadline - loop.time())
            if wait <= 0:
                return None
        index = headers.get("X-Consul-Index", "0")
        await api.call("GET", path, {**params, "index": index, "wait": f"{max(wait, 0.001):.3f}s"})


def _flags(name: str, usage: str) -> FlagSet:
    fs = FlagSet(f"queue {name}", usage)
    add_http_flags(fs)
    return fs


def cmd_queue_push(argv: list[str], ctx: Ctx) -> int:
    fs = _flags("push", "Usage: waypost queue push [options] PREFIX VALUE\n\n"
                        "  Appends VALUE (\"-\": read standard input) to the queue under PREFIX.")
    values, args = parse_flags(fs, argv)
    if len(args) != 2:
        raise CommandFailed("Exactly a queue prefix and a value must be specified")
    value = sys.stdin.buffer.read() if args[1] == "-" else args[1].encode()

    async def run() -> str:
        async with _queue_api(values, ctx) as api:
            return await push(api, _prefix(args[0]), value)

    ctx.out(asyncio.run(run()))
    return 0


def cmd_queue_pop(argv: list[str], ctx: Ctx) -> int:
    fs = _flags("pop", "Usage: waypost queue pop [options] PREFIX\n\n"
                       "  Removes the oldest item of the queue under PREFIX and prints it, waiting for\n"
                       "  one when the queue is empty. Exit 2 when -timeout passes first.")
    fs.string("timeout", "How long to wait for an item (e.g. 30s; 0 = forever).", placeholder="duration")
    values, args = parse_flags(fs, argv)
    if len(args) != 1:
        raise CommandFailed("Exactly one queue prefix must be specified")
    try:
        timeout = parse_duration(str(values.get("timeout") or "0"))
    except ValueError as err:
        raise CommandFailed(f"Invalid -timeout: {err}") from None
    prefix = _prefix(args[0])

    async def run() -> tuple[str, bytes] | None:
        async with _queue_api(values, ctx) as api:
            return await pop(api, prefix, timeout)

    got = asyncio.run(run())
    if got is None:
        raise CommandExit(EXIT_TIMEOUT, stderr=f"No item in queue {prefix} within {values.get('timeout')}")
    ctx.out(got[1].decode(errors="replace"))
    return 0


QUEUE = {
    "push": ("Append an item to a KV queue", cmd_queue_push),
    "pop": ("Take the oldest item from a KV queue, waiting for one", cmd_queue_pop),
}
