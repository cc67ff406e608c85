"""Running an agent as a service: signals, systemd notifications, graceful and forced stop, metrics wiring (layer 5).

Contract:
- `serve(agent) -> exit code` starts the agent and runs it until a signal or `leave`:
  * sd_notify (agent.notifier): `STATUS=starting`; once HTTP and DNS accept connections,
    `announce_ready` (a task of `serve`, cancelled when the agent stops, so stop and leave work
    while it waits) sends `READY=1` + `STATUS=<agent.ready_status()>` as soon as the agent is
    ready (`Readiness`): a client at once (Consul: after -join), a server once it knows a leader
    (a one-voter server is its own leader at once) and has applied what was committed. Until
    then it sends `STATUS=` lines as the wait changes, at most one a second ("waiting for 2 more
    servers", "electing a leader among 3 servers", "waiting for a leader", "catching up A/C").
    A client that knows no server after READY says "waiting for servers" until it does.
    `RELOADING=1`/`READY=1` around every reload (Agent.reload); `STOPPING=1` as soon as
    shutdown begins; `WATCHDOG=1` from the agent's watchdog task.
  * SIGHUP reloads (errors are logged, the old config stays). SIGTERM and SIGINT stop: gracefully
    (`Agent.graceful_leave`, at most `GRACEFUL_TIMEOUT`) when `leave_on_terminate` (SIGTERM) or
    not `skip_leave_on_interrupt` (SIGINT) — Consul's rule, so by default a server just stops —
    and always for a leave request (`waypost leave`);
    then listeners, checks and tasks stop. A second SIGTERM/SIGINT during shutdown exits at once
    with code 1 (the pid file is removed first). A clean stop exits 0; a graceful leave that
    times out exits 1, like Consul.
- `instrument(agent)` connects the agent's `Metrics` to its parts: catalog sizes, local checks by
  status, gossip members by status (`serf.members`), the gossip node's counters (`memberlist.*`,
  `metrics.gossip_counters`) and Lifeguard score, and runtime facts as scrape-time sources;
  Raft apply count and commit time through `RaftNode.on_commit`, leader state, and
  `instrument_dns(metrics, dns)` for DNS queries, cache hits and slow-path latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.gossip.messages import MemberState
from agent.metrics import (
    Gauge,
    Metrics,
    catalog_gauges,
    check_gauges,
    gossip_counters,
    member_gauges,
    runtime_gauges,
)
from agent.sdnotify import Notifier
from dns.server import DnsServer

if TYPE_CHECKING:
    from agent.agent import Agent
    from agent.server import CatalogServer

log = logging.getLogger("waypost.agent")
GRACEFUL_TIMEOUT = 15.0  # Consul: a graceful leave taking longer is abandoned (exit 1)
READY_POLL = 0.1  # seconds between readiness checks while waiting (a few attribute reads each)
STATUS_EVERY = 1.0  # at most one STATUS= line a second while waiting (systemctl status shows the latest)
WAITING_FOR_SERVERS = "waiting for servers"
SERF_STATUS = {MemberState.ALIVE: "alive", MemberState.SUSPECT: "alive",  # Serf: a suspect member is alive
               MemberState.DEAD: "failed", MemberState.LEFT: "left"}


def _force_exit(pid_file: str) -> None:
    if pid_file:
        with contextlib.suppress(OSError):
            Path(pid_file).unlink()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(1)


async def serve(agent: Agent, banner: Callable[[Agent], str] | None = None) -> int:
    """Run `agent` until asked to stop; `banner(agent)` is printed once it serves."""
    loop = asyncio.get_running_loop()
    notifier = agent.notifier
    received: list[signal.Signals] = []
    reloads: set[asyncio.Task] = set()

    def on_stop_signal(sig: signal.Signals) -> None:
        received.append(sig)
        if len(received) > 1:
            log.warning("Caught second signal %s. Exiting", sig.name)
            _force_exit(agent.config.pid_file)
        log.info("Caught signal: %s", sig.name)
        notifier.stopping()
        agent.stopped.set()

    def on_hup() -> None:
        if agent.stopped.is_set():
            return
        task = loop.create_task(_logged_reload(agent), name="sighup-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_stop_signal, sig)
    loop.add_signal_handler(signal.SIGHUP, on_hup)
    notifier.status("starting")
    await agent.start()
    gc.freeze()  # what start-up built (modules, config, the recovered catalog) is never scanned again
    if banner is not None:
        print(banner(agent), flush=True)
    log.info("agent started: HTTP on %s:%d, DNS on %s:%d", agent.config.client_addr, agent.http_port,
             agent.config.client_addr, agent.dns_port)
    announcer = loop.create_task(announce_ready(agent, notifier), name="sd-notify-ready")
    try:
        await agent.stopped.wait()
    finally:
        announcer.cancel()
        try:
            await announcer
        except asyncio.CancelledError:
            pass
        except Exception:  # a bug here must not keep the agent from stopping
            log.exception("readiness notification failed")
    if not received:
        notifier.stopping()  # a leave request, not a signal
    code = agent.exit_code
    sig = received[0] if received else None
    graceful = ((sig is None and not agent.exit_code)  # `waypost leave` / PUT /v1/agent/leave
                or (sig == signal.SIGTERM and agent.config.leave_on_terminate)
                or (sig == signal.SIGINT and not agent.config.skip_leave_on_interrupt))
    if sig is not None and not graceful:
        log.info("Graceful shutdown disabled. Exiting")
    if graceful:
        log.info("Gracefully shutting down agent...")
        notifier.status("leaving")
        try:
            await asyncio.wait_for(agent.graceful_leave(), GRACEFUL_TIMEOUT)
            log.info("Graceful exit completed")
        except TimeoutError:
            log.warning("Timeout on graceful leave. Exiting")
            code = 1
        notifier.status("stopping")
    for task in reloads:
        task.cancel()
    await agent.stop()
    log.info("shutdown complete")
    return code


class Readiness:
    """What a started agent still waits for before READY=1: `waiting()` → "" when ready, else the
    STATUS text. A server waits for a leader, then until it has applied the commit index it saw
    at the previous check (so a steady stream of writes does not hold READY back, a restarted
    server replaying a long log does). Call it periodically (`announce_ready`)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self._commit_seen: int | None = None

    def waiting(self) -> str:
        server = self.agent.server
        if server is None:
            return ""  # a client is ready once it serves (Consul: after -join)
        if not server.known_leader():
            self._commit_seen = None
            return self._no_leader()
        raft = server.raft
        applied, commit = raft.applied_index(), raft.commit_index()
        target = commit if self._commit_seen is None else self._commit_seen
        self._commit_seen = commit
        return "" if applied >= target else f"catching up {applied}/{commit}"

    def _no_leader(self) -> str:
        server = self.agent.server
        assert server is not None
        cluster = server.cluster
        settings, transport = cluster.settings, cluster.transport
        if transport is not None and settings.expect > 1 and server.raft.is_fresh():
            known = len({settings.server_id, *transport.addresses})
            missing = settings.expect - known
            if missing > 0:
                return f"waiting for {missing} more server{'s' if missing != 1 else ''}"
            return f"electing a leader among {known} servers"
        return "waiting for a leader"


async def announce_ready(agent: Agent, notifier: Notifier, *, poll: float = READY_POLL,
                         status_every: float = STATUS_EVERY, clock: Callable[[], float] = time.monotonic,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
    """READY=1 once `Readiness` says so, STATUS= lines (when changed, at most every `status_every`)
    meanwhile; for a client, then "waiting for servers" until gossip knows one."""
    readiness = Readiness(agent)
    shown, shown_at = "", -math.inf

    def show(text: str, *, now: bool = False) -> None:
        nonlocal shown, shown_at
        if agent.stopped.is_set():
            return  # STOPPING=1 was sent: nothing may follow it
        if text != shown and (now or clock() - shown_at >= status_every):
            log.info("%s", text)
            notifier.status(text)
            shown, shown_at = text, clock()

    while text := readiness.waiting():
        show(text)
        await sleep(poll)
    if agent.stopped.is_set():
        return
    notifier.ready(agent.ready_status())
    log.debug("ready: %s", agent.ready_status())
    if agent.server is not None or agent.membership.servers():
        return
    show(WAITING_FOR_SERVERS, now=True)
    while not agent.membership.servers():
        await sleep(status_every)
    show(agent.ready_status(), now=True)


async def _logged_reload(agent: Agent) -> None:
    problems = await agent.reload()
    for problem in problems:
        log.error("reload failed: %s", problem)


def instrument(agent: Agent) -> None:
    metrics = agent.metrics
    metrics.add_source(lambda: check_gauges(str(lc.check.status) for lc in agent.state.checks.values()))
    metrics.add_source(runtime_gauges)
    membership = agent.membership
    metrics.add_source(lambda: [("serf.lan.members", {}, len(membership.members()))])
    metrics.add_source(lambda: member_gauges(SERF_STATUS.get(m.state, "failed") for m in membership.members()))

    def gossip_health() -> Iterator[Gauge]:
        if membership.node is not None:
            yield "memberlist.health.score", {}, membership.node.health_score

    metrics.add_source(gossip_health)
    metrics.add_source(lambda: gossip_counters(membership.node.stats if membership.node is not None else {}),
                       counter=True)
    if agent.logs is not None:
        hub = agent.logs.hub
        metrics.add_source(lambda: [("agent.monitor.dropped", {}, hub.dropped_total)], counter=True)
    if agent.server is not None:
        instrument_server(metrics, agent.server)


def instrument_server(metrics: Metrics, server: CatalogServer) -> None:
    raft = server.raft
    metrics.add_source(lambda: catalog_gauges(server.store))

    def raft_gauges() -> Iterator[Gauge]:
        yield "raft.applied_index", {}, raft.applied_index()
        yield "raft.leader.lastContact", {}, raft.last_contact_ms()
        yield "raft.state.is_leader", {}, 1.0 if raft.is_leader() else 0.0

    metrics.add_source(raft_gauges)

    def on_commit(entries: int, seconds: float) -> None:
        metrics.incr("raft.apply", entries)
        metrics.observe("raft.commitTime", seconds * 1000.0)

    if hasattr(raft, "on_commit"):
        raft.on_commit = on_commit
    if raft.is_leader():
        metrics.incr("raft.state.leader")  # a one-voter server is leader from the start


def instrument_dns(metrics: Metrics, dns: DnsServer) -> None:
    def totals() -> Iterator[Gauge]:
        for transport, count in sorted(dns.queries.items()):
            yield "dns.queries", {"transport": transport}, count
        yield "dns.cache_hits", {}, dns.cache_hits

    metrics.add_source(totals, counter=True)
    dns.on_answered = lambda seconds: metrics.observe("dns.query_time", seconds * 1000.0)
