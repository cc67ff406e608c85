"""`waypost checks ...`: the local agent's health checks from the command line (layer 5).

Contract:
- `cmd_checks_history(argv, ctx)`: `waypost checks history [-full] [-http-addr ...] CHECK_ID` reads
  `GET /v1/agent/check/history/:id` and prints one row per status transition, oldest first:
  `TIME` (UTC, millisecond ISO 8601), `FROM` (`-` for the first status), `TO`, `REASON` (the
  rule that fired) and `OUTPUT` (the recorded excerpt on one line, cut to `OUTPUT_WIDTH`
  characters unless `-full`). An unknown check is `Error reading check history: ...` (exit 1);
  a check with no recorded transitions prints a note on stderr and exits 0.
- `format_history(rows, full=False) -> str` is the pure table formatter (tests call it directly).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from agent.cli_common import CommandExit, CommandFailed, Ctx, add_http_flags, make_client, parse_flags
from agent.cli_flags import FlagSet
from agent.cli_format import columnize
from agent.cli_http import AgentError

OUTPUT_WIDTH = 60  # characters of output shown per row without -full
HEADER = ("TIME", "FROM", "TO", "REASON", "OUTPUT")


def _time(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    moment = datetime.fromtimestamp(float(value), tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _one_line(text: str, full: bool) -> str:
    flat = " ".join(text.split())
    if full or len(flat) <= OUTPUT_WIDTH:
        return flat
    return flat[: OUTPUT_WIDTH - 3] + "..."


def format_history(rows: Sequence[Mapping[str, object]], full: bool = False) -> str:
    table = [HEADER]
    for row in rows:
        table.append((
            _time(row.get("Time")),
            str(row.get("Old") or "-"),
            str(row.get("New") or ""),
            str(row.get("Reason") or ""),
            _one_line(str(row.get("Output") or ""), full),
        ))
    return columnize(table)


USAGE = """Usage: waypost checks history [options] CHECK_ID

  Shows the recorded status transitions of one of this agent's health checks,
  oldest first: when it changed, from which status to which, the rule that fired
  (initial, probe, failures_before_critical, ttl_expired, ...) and the output.

  Maintenance and catalog-only checks have no runner, so no transitions."""


def cmd_checks_history(argv: list[str], ctx: Ctx) -> int:
    fs = FlagSet("checks history", USAGE)
    fs.bool("full", f"Show the whole recorded output instead of the first {OUTPUT_WIDTH} characters.")
    add_http_flags(fs)
    values, args = parse_flags(fs, argv)
    if len(args) != 1:
        raise CommandExit(1, stderr=f"Expected exactly one check ID (got {len(args)})\n{fs.usage()}")
    check_id = args[0]
    client = make_client(values, ctx)
    try:
        raw = client.get(f"/v1/agent/check/history/{check_id}")
    except AgentError as err:
        raise CommandFailed(f"Error reading check history: {err}") from None
    rows = [r for r in raw if isinstance(r, Mapping)] if isinstance(raw, list) else []
    if not rows:
        ctx.err(f'No status transitions recorded for check "{check_id}".')
        return 0
    ctx.out(format_history(rows, bool(values["full"])))
    return 0
