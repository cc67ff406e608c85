"""The composition root: builds an agent from its configuration and runs it (layer 5).

Contract: `Agent(config)`; `await agent.start()` recovers the catalog, registers this node,
loads the configured service definitions and starts the HTTP and DNS listeners (ready when it
returns); `await agent.reload()` re-reads config files and applies added, changed and removed
definitions (all-or-nothing; returns the problems found); `await agent.stop()` stops listeners,
check runners and background tasks. `run_agent(argv)` is `waypost agent`: config, logging
(agent.logs), banner, signals and systemd notifications (agent.lifecycle), pid file, exit code.
The agent owns one `Metrics` registry (agent.metrics) and, under systemd, a `Notifier`.

Internal settings for tests (environment, not Consul keys, Go durations):
`WAYPOST_TEST_CHECK_REAP_INTERVAL` (how often critical services are reaped, default 30 s) and
`WAYPOST_TEST_CHECK_DEREGISTER_MIN` (the floor of `deregister_critical_service_after`, default
1 min); a bad value stops the agent at start-up with a message naming the variable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import random
import socket
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from agent.config import AgentConfig, ConfigError, load_config
from agent.discovery import Discovery
from agent.dns_adapter import start_dns
from agent.errors import BadRequest, DefinitionError, Problem
from agent.http.app import HttpContext, build_app
from agent.http.fastpath import FastReadServer
from agent.http.ops import install as install_ops
from agent.lifecycle import instrument, instrument_dns, serve
from agent.local.antientropy import AntiEntropy
from agent.local.manager import LocalAgent
from agent.local.state import LocalState
from agent.logs import LogOptions, LogSetup, setup_logging
from agent.metrics import Metrics, sample_loop_lag
from agent.raft.cluster import ClusterSettings
from agent.raft.storage import PeersFileError, StorageCorrupt
from agent.sdnotify import Notifier, clean_environ
from agent.server import CatalogServer
from agent.sessions_driver import SessionDriver
from agent.types import Node
from agent.version import VERSION
from checks.checkset import CheckSet
from checks.definition import DurationError, parse_duration
from checks.result import CheckResult

log = logging.getLogger("waypost.agent")
HTTP_DRAIN_SECONDS = 2.0  # on stop, in-flight requests (e.g. blocking queries) get this long, then are cancelled
MAX_HEADER_LINE = 16 * 1024  # request line and each header; longer ones are refused with 400
# gen-0 threshold 50,000 (CPython: 700): thousands of in-flight check probes otherwise promote
# short-lived I/O objects to the old generation and trigger ~1 full collection a second, each a
# 100+ ms stall of the loop (tests/bench/bench_checks.py: lag p99 123 ms → 3 ms with this)
GC_THRESHOLDS = (50_000, 20, 10)


class ClientModeUnavailable(Exception):
    """Client agents need gossip and a server to talk to (a later issue)."""


def advertise_address(config: AgentConfig) -> str:
    if config.advertise_addr:
        return config.advertise_addr
    if config.bind_addr not in ("0.0.0.0", "::", ""):
        return config.bind_addr
    if config.dev:
        return "127.0.0.1"
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        return probe.getsockname()[0]
    return "127.0.0.1"


def node_id(config: AgentConfig) -> str:
    if not config.data_dir or config.dev:
        return str(uuid.uuid4())
    path = Path(config.data_dir) / "node-id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = str(uuid.uuid4())
    path.write_text(value)
    return value


INTERNAL_CHECK_TIMING = {"WAYPOST_TEST_CHECK_REAP_INTERVAL": "reap_interval",
                         "WAYPOST_TEST_CHECK_DEREGISTER_MIN": "min_deregister_after"}


def internal_check_timing(environ: Mapping[str, str]) -> dict[str, float]:
    """CheckSet keyword overrides from the internal test settings (see the module docstring)."""
    out: dict[str, float] = {}
    for variable, keyword in INTERNAL_CHECK_TIMING.items():
        raw = environ.get(variable, "").strip()
        if not raw:
            continue
        try:
            seconds = parse_duration(raw)
        except DurationError:
            seconds = -1.0
        if seconds <= 0:
            raise ConfigError([Problem(variable, 0, f"must be a positive duration such as 1s, got {raw!r}")])
        out[keyword] = seconds
    return out


class Agent:
    def __init__(self, config: AgentConfig, argv: list[str] | None = None) -> None:
        if not config.server:
            raise ClientModeUnavailable(
                "client agents (no -server) need cluster membership, which is not built yet: "
                "run with -dev, or -server -bootstrap")
        if config.ui_config.enabled and not config.dev:  # -dev turns the UI on by default, as Consul
            log.warning("-ui / ui_config.enabled ignored: waypost has no web UI yet (GET / answers a plain text page)")
        self.config = config
        self.argv = list(argv or [])
        self.address = advertise_address(config)
        data_dir = Path(config.data_dir) if config.data_dir and not config.dev else None
        self.server = CatalogServer(f"{self.address}:{config.ports.server}", data_dir,
                                    cluster_settings(config, self.address, data_dir))
        self.node = Node(
            node=config.node_name, address=self.address, id=node_id(config), datacenter=config.datacenter,
            tagged_addresses={"lan": self.address, "lan_ipv4": self.address,
                              "wan": self.address, "wan_ipv4": self.address},
            meta={"consul-network-segment": "", "consul-version": VERSION, **config.node_meta},
        )
        self.state = LocalState(self.node)
        self.sync = AntiEntropy(self.state, self.server, rng=random.Random())
        self.discovery = Discovery(self.server)
        self.sessions = SessionDriver(self.server)  # session TTLs, lock-delay, tombstone reaping
        state_dir = Path(config.data_dir) / "checks" if config.data_dir and not config.dev else None
        self.runners = CheckSet(self._notify, state_dir=state_dir, node_name=config.node_name,
                                on_critical_too_long=self._critical_too_long,
                                alias_source=self.discovery.alias_statuses,
                                output_max_size=config.check_output_max_size,
                                **internal_check_timing(os.environ))
        self.local = LocalAgent(self.state, self.sync, self.runners,
                                enable_script_checks=config.enable_script_checks,
                                enable_local_script_checks=config.enable_local_script_checks)
        self._tasks: list[asyncio.Task] = []
        self._stack = contextlib.AsyncExitStack()
        self.http_port = 0
        self.dns_port = 0
        self.stopped = asyncio.Event()
        self.metrics = Metrics()
        self.notifier = Notifier(None)  # run_agent sets the real one from the environment
        self.logs: LogSetup | None = None  # set by run_agent; None when embedded (tests)

    def _notify(self, check_id: str, result: CheckResult) -> None:
        self.local.notify(check_id, result.status, result.output)

    async def _critical_too_long(self, service_id: str) -> None:
        await self.local.deregister_critical_service(service_id)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        if self.server.single:
            self.server.register_self(self.node, self.config.ports.server, VERSION)
        group = self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._stack.callback(self._cancel_background)  # runs after listeners and runners stop
        self._tasks = [group.create_task(self.server.run(), name="raft-apply"),
                       group.create_task(self.sync.run(), name="anti-entropy"),
                       group.create_task(self.sessions.run(), name="session-timers")]
        self._tasks += [group.create_task(sample_loop_lag(self.metrics), name="loop-lag"),
                        group.create_task(self.notifier.run_watchdog(self.healthy), name="watchdog")]
        if not self.server.single:
            self._tasks.append(group.create_task(
                self.server.register_self_async(self.node, self.config.ports.server, VERSION), name="raft-register"))
        instrument(self)
        await self._stack.enter_async_context(self.runners)
        await self.local.replace_file_definitions(self.config.services, self.config.checks)
        if self.server.single:
            await self.local.sync(full=True)  # full: also removes what a previous run left behind
        else:  # a cluster member serves before a leader exists: anti-entropy syncs in the background
            self.sync.trigger()
        if self.config.ports.http >= 0:
            self.http_port = await self._start_http()
        if self.config.ports.dns >= 0:
            self.dns_port = await start_dns(self._stack, self.config, self.discovery, self.server,
                                            on_created=lambda dns: instrument_dns(self.metrics, dns))

    def healthy(self) -> bool:
        """The core loops are alive (the systemd watchdog pings only then)."""
        return all(not t.done() for t in self._tasks if t.get_name() in ("raft-apply", "anti-entropy"))

    async def _start_http(self) -> int:
        ctx = HttpContext(config=self.config, server=self.server, discovery=self.discovery,
                          local=self.local, reload=self.reload, leave=self.leave,
                          self_info=self.self_info, members=self.members, sessions=self.sessions)
        app = build_app(ctx, max_body_bytes=self.config.http_config.max_request_body_bytes)
        install_ops(app, self.metrics, self.logs.hub if self.logs else None)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_DRAIN_SECONDS,
                               max_line_size=MAX_HEADER_LINE, max_field_size=MAX_HEADER_LINE)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        # the fast path owns each connection first and hands it to aiohttp's protocol when needed
        fast = FastReadServer(ctx.responses, self.server, runner.server)  # type: ignore[arg-type]
        listener = await asyncio.get_running_loop().create_server(
            fast, self.config.addresses.http or self.config.client_addr, self.config.ports.http,
            reuse_address=True)
        self._stack.callback(fast.close_all)
        self._stack.callback(listener.close)
        self._tasks.append(self._group.create_task(fast.sweep_idle(), name="http-idle-sweeper"))
        self.metrics.add_source(lambda: [("api.http.fast_path", {}, fast.served)], counter=True)
        if self.logs is not None:
            self._stack.callback(self.logs.hub.close)  # ends monitor streams before HTTP drains
        return listener.sockets[0].getsockname()[1]

    async def reload(self) -> list[str]:
        self.notifier.reloading()
        problems: list[str] = ["reload interrupted"]
        try:
            problems = await self._reload()
        finally:
            self.notifier.ready("serving" if not problems else f"serving; reload failed: {problems[0]}")
        return problems

    async def _reload(self) -> list[str]:
        try:
            loaded = load_config(self.argv)
        except (ConfigError, DefinitionError) as exc:
            return [str(p) for p in exc.problems]
        try:
            await self.local.replace_file_definitions(loaded.config.services, loaded.config.checks)
        except BadRequest as exc:
            return [str(exc)]
        self.config.services = loaded.config.services
        self.config.checks = loaded.config.checks
        if self.logs is not None and loaded.config.log_level != self.config.log_level:
            self.logs.set_level(loaded.config.log_level)
            self.config.log_level = loaded.config.log_level
        await self.local.sync()
        log.info("reload complete: %d services from files", len(loaded.config.services))
        return []

    async def graceful_leave(self) -> None:
        """Leave before stopping: keep serving for `performance.leave_drain_time` so in-flight
        requests finish (Consul's server leave; the gossip leave joins here once gossip exists)."""
        drain = self.config.performance.leave_drain_time
        log.info("leaving: draining requests for %.1fs", drain)
        await asyncio.sleep(drain)

    async def leave(self) -> None:
        log.info("graceful leave requested")
        asyncio.get_running_loop().call_soon(self.stopped.set)

    async def stop(self) -> None:
        # LIFO: DNS and HTTP listeners close, check runners stop, background loops are cancelled,
        # then their task group drains
        await self._stack.aclose()

    def _cancel_background(self) -> None:
        for task in self._tasks:
            task.cancel()

    def member(self) -> dict:
        tags = {"role": "consul", "dc": self.config.datacenter, "id": self.node.id, "port":
                str(self.config.ports.server), "build": f"{VERSION}:waypost", "vsn": "2", "vsn_min": "2",
                "vsn_max": "3", "raft_vsn": "3"}
        if self.config.bootstrap:
            tags["bootstrap"] = "1"
        return {"Name": self.node.node, "Addr": self.address, "Port": self.config.ports.serf_lan,
                "Tags": tags, "Status": 1, "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}

    def members(self) -> list[dict]:
        return [self.member()]

    def self_info(self) -> dict:
        return {
            "Config": {"Datacenter": self.config.datacenter, "PrimaryDatacenter": self.config.datacenter,
                       "NodeName": self.node.node, "NodeID": self.node.id, "Server": self.config.server,
                       "Revision": "waypost", "Version": VERSION, "BuildDate": ""},
            "DebugConfig": debug_config(self.config),
            "Coord": {"Adjustment": 0, "Error": 1.5, "Height": 1e-05, "Vec": [0.0] * 8},
            "Member": self.member(),
            "Meta": dict(self.config.node_meta),
            "Stats": {
                "agent": {"check_monitors": str(len(self.runners.ids())), "services": str(len(self.state.services)),
                          "checks": str(len(self.state.checks))},
                "build": {"version": VERSION, "revision": "waypost", "prerelease": ""},
                "consul": {"server": str(self.config.server).lower(),
                           "leader": str(self.server.raft.is_leader()).lower(), "bootstrap":
                           str(self.config.bootstrap or self.config.dev).lower(), "known_datacenters": "1",
                           "leader_addr": self.server.leader_address()},
                "raft": {"applied_index": str(self.server.raft.applied_index()),
                         "state": self.server.raft.role().capitalize(), "term": str(self.server.raft.term()),
                         "commit_index": str(self.server.raft.commit_index()),
                         "num_peers": str(max(len(self.server.peers()) - 1, 0)), "protocol_version": "3"},
                "runtime": {"os": sys.platform, "arch": os.uname().machine, "version": sys.version.split()[0]},
            },
        }


def cluster_settings(config: AgentConfig, address: str, data_dir: Path | None) -> ClusterSettings:
    """How this server joins Raft: alone (-dev, -bootstrap, no joins) or with the join addresses
    (other servers' server ports; the server port is assumed when an address has none)."""
    joins = [a if a.rpartition(":")[2].isdigit() else f"{a}:{config.ports.server}"
             for a in config.start_join + config.retry_join]
    single = config.dev or config.bootstrap or (config.bootstrap_expect <= 1 and not joins)
    return ClusterSettings(
        server_id=config.node_name, address=f"{address}:{config.ports.server}",
        bind_host=config.bind_addr or "0.0.0.0", port=config.ports.server, data_dir=data_dir,
        expect=config.bootstrap_expect, join=joins, single=single,
        raft_multiplier=config.performance.raft_multiplier, hold_timeout=config.performance.rpc_hold_timeout)


def debug_config(config: AgentConfig) -> dict:
    """The runtime configuration as `/v1/agent/self` shows it (unstable format, like Consul's)."""
    out = {}
    for f in dataclasses.fields(config):
        if f.name in ("services", "checks", "encrypt"):
            continue
        value = getattr(config, f.name)
        out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    out["services"] = len(config.services)
    return out


def banner(agent: Agent) -> str:
    c = agent.config
    return "\n".join([
        "==> Waypost agent running!",
        f"           Version: '{VERSION}'",
        f"           Node ID: '{agent.node.id}'",
        f"         Node name: '{agent.node.node}'",
        f"        Datacenter: '{c.datacenter}'",
        f"            Server: {str(c.server).lower()} (Bootstrap: {str(c.bootstrap or c.dev).lower()})",
        f"       Client Addr: [{c.client_addr}] (HTTP: {agent.http_port or -1}, DNS: {agent.dns_port or -1})",
        f"      Cluster Addr: {agent.address} (LAN: {c.ports.serf_lan}, WAN: {c.ports.serf_wan})",
        f" Gossip Encryption: {str(bool(c.encrypt)).lower()}",
        f"          Data Dir: {c.data_dir if c.data_dir and not c.dev else '(in memory)'}",
        "",
        "==> Log data will now stream in as it occurs:",
    ])


def run_agent(argv: list[str]) -> int:
    try:
        loaded = load_config(argv)
    except (ConfigError, DefinitionError) as exc:
        for problem in exc.problems:
            print(f"==> {problem}", file=sys.stderr)
        return 1
    config = loaded.config
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        logs = setup_logging(LogOptions.from_config(config), sys.stdout)
    except OSError as exc:
        print(f"==> Error opening log file: {exc}", file=sys.stderr)
        return 1
    notifier = Notifier.from_environ(os.environ)
    clean_environ(os.environ)  # script checks must not inherit NOTIFY_SOCKET
    for warning in loaded.warnings:
        log.warning("%s", warning)
    try:
        agent = Agent(config, argv)
    except (ClientModeUnavailable, ConfigError, PeersFileError, StorageCorrupt) as exc:
        print(f"==> {exc}", file=sys.stderr)
        return 1
    agent.logs, agent.notifier = logs, notifier
    if config.pid_file:
        Path(config.pid_file).write_text(f"{os.getpid()}\n")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(serve(agent, banner))
    except OSError as exc:
        notifier.status(f"failed: {exc}")
        print(f"==> Error starting agent: {exc}", file=sys.stderr)
        return 1
    finally:
        notifier.close()
        logs.close()
        if config.pid_file:
            with contextlib.suppress(OSError):
                Path(config.pid_file).unlink()
