"""The composition root: builds an agent from its configuration and runs it (layer 5).

Contract: `Agent(config)`; `await agent.start()` recovers the catalog, registers this node,
loads the configured service definitions and starts the HTTP and DNS listeners (ready when it
returns); `await agent.reload()` re-reads config files and applies added, changed and removed
definitions (all-or-nothing; returns the problems found); `await agent.stop()` stops listeners,
check runners and background tasks. `run_agent(argv)` is `waypost agent`: config, logging
(agent.logs), banner, signals and systemd notifications (agent.lifecycle), pid file, exit code.
The agent owns one `Metrics` registry (agent.metrics) and, under systemd, a `Notifier`.

Internal settings for tests come from the environment (agent.config_env).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import random
import sys
from pathlib import Path

import aiohttp
from aiohttp import web

from agent.agent_info import advertise_address, banner, node_id, self_info
from agent.config import AgentConfig, ConfigError, load_config
from agent.config_env import internal_check_timing
from agent.discovery import Discovery
from agent.dns_adapter import start_dns
from agent.errors import BadRequest, DefinitionError
from agent.events import EventRing, local_view
from agent.gossip.config import MemberEvent
from agent.gossip.errors import GossipJoinError, KeyringError
from agent.gossip.joiner import RetryJoinFailed
from agent.gossip.userevents import UserEvents
from agent.http.app import HttpContext, build_app
from agent.http.fastpath import FastPathServer
from agent.http.ops import install as install_ops
from agent.lifecycle import instrument, instrument_dns, serve
from agent.local.antientropy import AntiEntropy, CatalogAccess
from agent.local.manager import LocalAgent
from agent.local.state import LocalState
from agent.logs import LogOptions, LogSetup, setup_logging
from agent.membership import Membership
from agent.metrics import Metrics, sample_loop_lag
from agent.raft.storage import PeersFileError, StorageCorrupt
from agent.reconcile_driver import MemberReconciler
from agent.remote.client import RemoteCatalog, make_session
from agent.remote.dns import RemoteDnsLookup
from agent.remote.servers import ServerPool
from agent.rpc import ServerPortListener
from agent.sdnotify import Notifier, clean_environ
from agent.server import CatalogServer, cluster_settings
from agent.sessions_driver import SessionDriver
from agent.types import Node
from agent.version import VERSION
from checks.checkset import CheckSet
from checks.result import CheckResult

log = logging.getLogger("waypost.agent")
LEAVE_PROPAGATE_SECONDS = 5.0  # how long a graceful leave waits for the gossip leave to go out
HTTP_DRAIN_SECONDS = 2.0  # on stop, in-flight requests (e.g. blocking queries) get this long, then are cancelled
MAX_HEADER_LINE = 16 * 1024  # request line and each header; longer ones are refused with 400
# gen-0 threshold 50,000 (CPython: 700): thousands of in-flight check probes otherwise promote
# short-lived I/O objects to the old generation and trigger ~1 full collection a second, each a
# 100+ ms stall of the loop (tests/bench/bench_checks.py: lag p99 123 ms → 3 ms with this)
GC_THRESHOLDS = (50_000, 20, 10)


class Agent:
    """One agent: a server (Raft, the catalog, the server port) or a client (everything through
    the servers); both gossip, run local checks, keep their node in sync and answer HTTP and DNS.
    Built inside the running event loop (it opens sockets and an HTTP client session)."""

    def __init__(self, config: AgentConfig, argv: list[str] | None = None) -> None:
        if config.ui_config.enabled and not config.dev:  # -dev turns the UI on by default, as Consul
            log.warning("-ui / ui_config.enabled ignored: waypost has no web UI yet (GET / answers a plain text page)")
        self.config = config
        self.argv = list(argv or [])
        self.address = advertise_address(config)
        self.node = Node(
            node=config.node_name, address=self.address, id=node_id(config), datacenter=config.datacenter,
            tagged_addresses={"lan": self.address, "lan_ipv4": self.address,
                              "wan": self.address, "wan_ipv4": self.address},
            meta={"consul-network-segment": "", "consul-version": VERSION, **config.node_meta},
        )
        self.membership = Membership(config, self.node.id, self.address)
        self.server: CatalogServer | None = None
        self.discovery: Discovery | None = None
        self.sessions: SessionDriver | None = None
        self.pool: ServerPool | None = None
        self.http_session: aiohttp.ClientSession | None = None
        catalog: CatalogAccess
        if config.server:
            data_dir = Path(config.data_dir) if config.data_dir and not config.dev else None
            self.server = CatalogServer(f"{self.address}:{config.ports.server}", data_dir,
                                        cluster_settings(config, self.address, data_dir))
            self.discovery = Discovery(self.server)
            self.sessions = SessionDriver(self.server)  # session TTLs, lock-delay, tombstone reaping
            catalog, alias_source = self.server, self.discovery.alias_statuses
        else:
            self.pool = ServerPool(self.membership.servers, config.datacenter)  # cached between member events
            self.http_session = make_session()
            catalog = self.remote = RemoteCatalog(self.pool, self.http_session)
            alias_source = self.remote.alias_statuses
        self.state = LocalState(self.node)
        self.events = EventRing()  # user events: fired here, or received by gossip from other agents
        self.user_events = UserEvents(self.events, self.membership, lambda: local_view(self.state))
        self.sync = AntiEntropy(self.state, catalog, rng=random.Random(), cluster_size=self.membership.alive_count)
        state_dir = Path(config.data_dir) / "checks" if config.data_dir and not config.dev else None
        self.runners = CheckSet(self._notify, state_dir=state_dir, node_name=config.node_name,
                                on_critical_too_long=self._critical_too_long,
                                alias_source=alias_source,
                                output_max_size=config.check_output_max_size,
                                **internal_check_timing(os.environ))
        self.local = LocalAgent(self.state, self.sync, self.runners,
                                enable_script_checks=config.enable_script_checks,
                                enable_local_script_checks=config.enable_local_script_checks)
        self._tasks: list[asyncio.Task] = []
        self._stack = contextlib.AsyncExitStack()
        self.http_port = 0
        self.dns_port = 0
        self.server_port = 0
        self.stopped = asyncio.Event()
        self.exit_code = 0  # set when the agent stops itself on an error (retry_max exhausted)
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
        server = self.server
        group = self._group = await self._stack.enter_async_context(asyncio.TaskGroup())
        self._stack.callback(self._cancel_background)  # runs after listeners and runners stop
        if self.http_session is not None:
            self._stack.push_async_callback(self.http_session.close)
        self._stack.push_async_callback(self.membership.close)
        self._stack.push_async_callback(self.user_events.close)
        ctx = self._http_context()
        if server is not None:  # bound first: Raft advertises the real (maybe ephemeral) port
            await self._start_server_port(server, ctx)
            if server.single:
                server.register_self(self.node, self.server_port, VERSION)
        self._tasks = [group.create_task(self.sync.run(), name="anti-entropy")]
        self._tasks += [group.create_task(sample_loop_lag(self.metrics), name="loop-lag"),
                        group.create_task(self.notifier.run_watchdog(self.healthy), name="watchdog")]
        if server is not None:
            self._tasks += [group.create_task(server.run(), name="raft-apply")]
            if self.sessions is not None:
                self._tasks.append(group.create_task(self.sessions.run(), name="session-timers"))
            reconciler = MemberReconciler(server, self.membership.members, self.membership.on_event,
                                          datacenter=self.config.datacenter, node_name=self.node.node)
            self._tasks.append(group.create_task(reconciler.run(), name="member-reconcile"))
            if not server.single:
                self._tasks.append(group.create_task(
                    server.register_self_async(self.node, self.server_port, VERSION), name="raft-register"))
        instrument(self)
        await self._stack.enter_async_context(self.runners)
        await self.local.replace_file_definitions(self.config.services, self.config.checks)
        if server is not None and server.single:
            await self.local.sync(full=True)  # full: also removes what a previous run left behind
        else:  # without a leader yet (or servers, for a client) anti-entropy syncs in the background
            self.sync.trigger()
        self.membership.on_event(self._member_event)
        await self.membership.start(self.server_port)  # -join: a failure stops the agent here
        self._tasks.append(group.create_task(self._retry_join(), name="retry-join"))
        if self.config.ports.http >= 0:
            await self._start_http(ctx)
        if self.config.ports.dns >= 0:
            lookup = self.remote_dns() if server is None else None
            self.dns_port = await start_dns(self._stack, self.config, self.discovery, server, lookup=lookup,
                                            on_created=lambda dns: instrument_dns(self.metrics, dns))

    async def _retry_join(self) -> None:
        try:
            await self.membership.run()
        except RetryJoinFailed as exc:  # Consul: retry_max exhausted ends the agent
            log.error("%s", exc)
            self.exit_code = 1
            self.stopped.set()

    def _member_event(self, event: MemberEvent) -> None:
        member = event.member
        if event.kind not in ("join", "update") or member.tags.get("role") != "consul":
            return
        if member.tags.get("dc") != self.config.datacenter:
            return
        if self.server is not None and member.name != self.node.node and member.tags.get("port", "").isdigit():
            if event.kind == "join":
                self.server.cluster.readmit(member.name)  # back after a leave: it may rejoin Raft
            self.server.cluster.add_server(f"{member.address}:{member.tags['port']}")  # Raft formation
        if self.server is None and event.kind == "join":
            self.sync.resync()  # a (new) server to talk to: make sure the catalog holds all of us

    def remote_dns(self) -> RemoteDnsLookup:
        assert self.pool is not None and self.http_session is not None
        return RemoteDnsLookup(self.pool, self.http_session, self.config.datacenter)

    def healthy(self) -> bool:
        """The core loops are alive (the systemd watchdog pings only then)."""
        core = ("raft-apply",) if self.sync.paused else ("raft-apply", "anti-entropy")  # paused: leaving
        return all(not t.done() for t in self._tasks if t.get_name() in core)

    def ready_status(self) -> str:
        c = self.config
        serving = f"serving: HTTP on {c.client_addr}:{self.http_port}, DNS on {c.client_addr}:{self.dns_port}"
        if self.server is None:
            known = len(self.membership.servers())
            return f"{serving}; client, {known} known server{'s' if known != 1 else ''}"
        role = "dev server" if c.dev else "bootstrap server" if c.bootstrap or c.bootstrap_expect == 1 else "server"
        return f"{serving}; {role}, {'leader' if self.server.known_leader() else 'no leader'}"

    def _http_context(self) -> HttpContext:
        return HttpContext(config=self.config, server=self.server, discovery=self.discovery,  # type: ignore[arg-type]
                           local=self.local, reload=self.reload, leave=self.leave,
                           self_info=lambda: self_info(self), members=self.membership.members,
                           sessions=self.sessions, gossip=self.membership, pool=self.pool,
                           http_session=self.http_session, events=self.events)

    async def _start_server_port(self, server: CatalogServer, ctx: HttpContext) -> None:
        """Raft peers and the API client agents call, on one listener (agent.rpc)."""
        app = build_app(ctx, max_body_bytes=self.config.http_config.max_request_body_bytes, scope="cluster")
        transport = server.cluster.transport
        listener = ServerPortListener(transport.inbound_protocol if transport is not None else None,
                                      await self._http_protocol_factory(app))
        self.server_port = await listener.start(self.config.bind_addr, self.config.ports.server)
        self._stack.callback(listener.close)
        server.cluster.bound(self.server_port)

    async def _start_http(self, ctx: HttpContext) -> None:
        app = build_app(ctx, max_body_bytes=self.config.http_config.max_request_body_bytes,
                        scope="full" if self.server is not None else "client")
        install_ops(app, self.metrics, self.logs.hub if self.logs else None)
        factory = await self._http_protocol_factory(app)
        if self.server is not None:  # the fast path owns each connection first, hands it to aiohttp when needed
            fast = FastPathServer(ctx.responses, self.server, factory,
                                  self.config.http_config.max_request_body_bytes)
            self._stack.callback(fast.close_all)
            self._tasks.append(self._group.create_task(fast.sweep_idle(), name="http-idle-sweeper"))
            self.metrics.add_source(lambda: [("api.http.fast_path", {}, fast.served)], counter=True)
            factory = fast
        listener = await asyncio.get_running_loop().create_server(
            factory, self.config.addresses.http or self.config.client_addr, self.config.ports.http,
            reuse_address=True)
        self._stack.callback(listener.close)
        if self.logs is not None:
            self._stack.callback(self.logs.hub.close)  # ends monitor streams before HTTP drains
        self.http_port = listener.sockets[0].getsockname()[1]

    async def _http_protocol_factory(self, app: web.Application):  # type: ignore[no-untyped-def]
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=HTTP_DRAIN_SECONDS,
                               max_line_size=MAX_HEADER_LINE, max_field_size=MAX_HEADER_LINE)
        await runner.setup()
        self._stack.push_async_callback(runner.cleanup)
        return runner.server

    async def reload(self) -> list[str]:
        self.notifier.reloading()
        problems: list[str] = ["reload interrupted"]
        try:
            problems = await self._reload()
        finally:
            text = "serving" if not problems else f"serving; reload failed: {problems[0]}"
            if self.notifier.ready_sent:
                self.notifier.ready(text)
            else:  # reloaded while still waiting for a leader: READY comes from lifecycle.announce_ready
                self.notifier.status(f"reloaded; {text}")
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
        """Leave before stopping: tell the cluster (a gossip leave, so the leader deregisters this
        node at once instead of marking it failed), then keep serving for
        `performance.leave_drain_time` so in-flight requests finish."""
        await self.sync.pause()  # the leader deregisters us now: anti-entropy must not put us back
        await self.membership.leave(LEAVE_PROPAGATE_SECONDS)
        drain = self.config.performance.leave_drain_time
        log.info("left the cluster: draining requests for %.1fs", drain)
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

async def _build_and_serve(config: AgentConfig, argv: list[str], logs: LogSetup, notifier: Notifier) -> int:
    try:
        agent = Agent(config, argv)
    except (ConfigError, KeyringError, PeersFileError, StorageCorrupt) as exc:
        print(f"==> {exc}", file=sys.stderr)
        return 1
    agent.logs, agent.notifier = logs, notifier
    try:
        return await serve(agent, banner)
    except GossipJoinError as exc:
        notifier.status(f"failed: {exc}")
        print(f"==> Failed to join the cluster: {exc}", file=sys.stderr)
        return 1


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
    if config.pid_file:
        Path(config.pid_file).write_text(f"{os.getpid()}\n")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    try:
        return runner(_build_and_serve(config, argv, logs, notifier))
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
