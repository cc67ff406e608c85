"""The `waypost` command line: entry point and command dispatch (layer 5 root).

Contract:
- `main(argv=None, *, stdout=None, stderr=None, environ=None) -> int` runs one command and returns
  its exit code (the console script `waypost = agent.cli:main` passes it to `sys.exit`). It never
  lets a traceback out: agent/HTTP problems, bad flags and unexpected errors are one line on
  stderr with exit 1 (`members` may exit 2 when nothing matches, like Consul).
- `waypost agent ...` hands its arguments to `agent.agent.run_agent(argv) -> int` (imported lazily).
- Client commands talk to the agent's HTTP API (agent/cli_http.py); Consul's flag shapes
  (`-flag value`, `-flag=value`); `-h`/`--help` on any command prints its help (exit 0); an unknown
  command prints the usage on stderr (exit 1).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import TextIO

from agent.cli_checks import cmd_checks_history
from agent.cli_common import CommandExit, CommandFailed, Ctx
from agent.cli_event import cmd_event
from agent.cli_kv import KV
from agent.cli_lock import LockLost, cmd_elect, cmd_lock
from agent.cli_members import cmd_force_leave, cmd_join, cmd_keygen, cmd_keyring, cmd_members
from agent.cli_operator import RAFT
from agent.cli_ops import cmd_monitor
from agent.cli_query import (
    cmd_catalog_datacenters,
    cmd_catalog_nodes,
    cmd_catalog_services,
    cmd_info,
    cmd_leave,
    cmd_reload,
)
from agent.cli_queue import QUEUE
from agent.cli_services import cmd_services_deregister, cmd_services_register, cmd_validate
from agent.cli_snapshot import SNAPSHOT
from agent.cli_watch import cmd_watch
from agent.version import VERSION

Command = Callable[[list[str], Ctx], int]

PROTOCOL_LINE = (
    "Protocol 2 spoken by default, understands 2 to 3 "
    "(agent will automatically use protocol >2 when speaking to compatible agents)"
)
HELP_FLAGS = ("-h", "-help", "--help")
VERSION_FLAGS = ("-v", "-version", "--version")


def cmd_version(argv: list[str], ctx: Ctx) -> int:
    if any(a in HELP_FLAGS for a in argv):
        ctx.out("Usage: waypost version\n\n  Prints the version of waypost.")
        return 0
    ctx.out(f"Waypost v{VERSION}")
    ctx.out(PROTOCOL_LINE)
    return 0


def cmd_agent(argv: list[str], ctx: Ctx) -> int:
    try:
        from agent.agent import run_agent
    except ImportError as err:
        if err.name not in ("agent.agent", "agent"):
            raise
        raise CommandFailed("Error: the agent is not available in this build (agent.agent missing)") from None
    return run_agent(argv)


def _group(name: str, synopsis: str, subcommands: Mapping[str, tuple[str, Command]]) -> Command:
    """A command such as `catalog` whose first argument picks a subcommand."""

    def usage() -> str:
        lines = [f"Usage: waypost {name} <subcommand> [options] [args]", "", f"  {synopsis}", "",
                 "Subcommands:"]  # fmt: skip
        width = max(len(s) for s in subcommands)
        lines += [f"    {sub.ljust(width)}    {text}" for sub, (text, _) in subcommands.items()]
        return "\n".join(lines)

    def run(argv: list[str], ctx: Ctx) -> int:
        if not argv:
            raise CommandExit(1, stderr=usage())
        if argv[0] in HELP_FLAGS:
            raise CommandExit(0, stdout=usage())
        entry = subcommands.get(argv[0])
        if entry is None:
            raise CommandExit(1, stderr=f'Unknown subcommand: "{name} {argv[0]}"\n{usage()}')
        return entry[1](argv[1:], ctx)

    return run


CATALOG = {
    "datacenters": ("Lists all known datacenters", cmd_catalog_datacenters),
    "nodes": ("Lists all nodes in the given datacenter", cmd_catalog_nodes),
    "services": ("Lists all registered services in a datacenter", cmd_catalog_services),
}
CHECKS = {
    "history": ("Shows the status transitions of a local check", cmd_checks_history),
}
SERVICES = {
    "register": ("Register services with the local agent", cmd_services_register),
    "deregister": ("Deregister services with the local agent", cmd_services_deregister),
}
COMMANDS: dict[str, tuple[str, Command]] = {
    "agent": ("Runs a waypost agent", cmd_agent),
    "catalog": ("Interact with the catalog", _group("catalog", "Interact with the catalog.", CATALOG)),
    "checks": ("Interact with health checks", _group("checks", "Interact with health checks.", CHECKS)),
    "elect": ("Campaign for leadership on a key prefix", cmd_elect),
    "event": ("Fire a new event", cmd_event),
    "force-leave": ("Forces a member of the cluster to enter the \"left\" state", cmd_force_leave),
    "info": ("Provides debugging information for operators", cmd_info),
    "join": ("Tell the agent to join a cluster", cmd_join),
    "keygen": ("Generates a new encryption key", cmd_keygen),
    "keyring": ("Manages gossip layer encryption keys", cmd_keyring),
    "kv": ("Interact with the key-value store", _group("kv", "Interact with the key-value store.", KV)),
    "leave": ("Gracefully leaves the cluster and shuts down", cmd_leave),
    "lock": ("Execute a command holding a lock", cmd_lock),
    "members": ("Lists the members of a cluster", cmd_members),
    "monitor": ("Stream logs from a waypost agent", cmd_monitor),
    "operator": ("Provides cluster-level tools for operators", _group("operator", "Provides cluster-level tools.", {
        "raft": ("Provides cluster-level tools for Raft", _group("operator raft", "Raft peer tools.", RAFT))})),
    "queue": ("Push to and pop from a distributed queue on KV", _group("queue", "A FIFO queue on KV.", QUEUE)),
    "reload": ("Triggers the agent to reload configuration files", cmd_reload),
    "services": ("Interact with services", _group("services", "Interact with services.", SERVICES)),
    "snapshot": ("Saves, restores and inspects snapshots of the servers' state",
                 _group("snapshot", "Saves, restores and inspects snapshots.", SNAPSHOT)),
    "validate": ("Validate config and service definition files", cmd_validate),
    "version": ("Prints the waypost version", cmd_version),
    "watch": ("Watch for changes", cmd_watch),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["Usage: waypost [--version] [--help] <command> [<args>]", "", "Available commands are:"]
    lines += [f"    {name.ljust(width)}    {text}" for name, (text, _) in COMMANDS.items()]
    return "\n".join(lines)


def run(argv: list[str], ctx: Ctx) -> int:
    if not argv:
        raise CommandExit(1, stderr=usage())
    name, rest = argv[0], argv[1:]
    if name in HELP_FLAGS:
        raise CommandExit(0, stdout=usage())
    if name in VERSION_FLAGS:
        return cmd_version([], ctx)
    entry = COMMANDS.get(name)
    if entry is None:
        raise CommandExit(1, stderr=f'Unknown command: "{name}"\n\n{usage()}')
    return entry[1](rest, ctx)


def main(
    argv: list[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    ctx = Ctx()
    if stdout is not None:
        ctx.stdout = stdout
    if stderr is not None:
        ctx.stderr = stderr
    if environ is not None:
        ctx.environ = environ
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        return run(args, ctx)
    except CommandExit as done:
        if done.stdout:
            ctx.out(done.stdout.rstrip("\n"))
        if done.stderr:
            ctx.err(done.stderr.rstrip("\n"))
        return done.code
    except (CommandFailed, LockLost) as err:
        ctx.err(str(err))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as err:  # the one place that turns a bug into a readable line
        ctx.err(f"Error: unexpected {type(err).__name__}: {err}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
