"""Running an agent as a service: signals, systemd notifications, graceful and forced stop, metrics wiring (layer 5).

Contract:
- `serve(agent) -> exit code` starts the agent and runs it until a signal or `leave`:
  * sd_notify (agent.notifier): `STATUS=starting`, then `READY=1` + `STATUS=` once HTTP and DNS
    accept connections and the server is the leader (a one-voter server is its own leader at
    once); `RELOADING=1`/`READY=1` around every reload (Agent.reload); `STOPPING=1` as soon as
    shutdown begins; `WATCHDOG=1` from the agent's watchdog task.
  * SIGHUP reloads (errors are logged, the old config stays). SIGTERM and SIGINT stop: gracefully
    (`Agent.graceful_leave`, at most `GRACEFUL_TIMEOUT`) when `leave_on_terminate` (SIGTERM) or
    not `skip_leave_on_interrupt` (SIGINT) — Consul's rule, so by default a server just stops —
    and always for a leave request (`waypost leave`);
    then listeners, checks and tasks stop. A second SIGTERM/SIGINT during shutdown exits at once
    with code 1 (the pid file is removed first). A clean stop exits 0; a graceful leave that
    times out exits 1, like Consul.
- `instrument(agent)` connects the agent's `Metrics` to its parts: catalog sizes, local checks by
  status and runtime facts as scrape-time gauges, Raft apply count and commit time through
  `RaftNode.on_commit`, leader state, and `instrument_dns(metrics, dns)` for DNS queries,
  cache hits and slow-path latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from agent.metrics import Gauge, Metrics, catalog_gauges, check_gauges, runtime_gauges
from dns.server import DnsServer

if TYPE_CHECKING:
    from agent.agent import Agent
    from agent.server import CatalogServer

log = logging.getLogger("waypost.agent")
GRACEFUL_TIMEOUT = 15.0  # Consul: a graceful leave taking longer is abandoned (exit 1)


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
    notifier.ready(agent.ready_status())
    await agent.stopped.wait()
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


async def _logged_reload(agent: Agent) -> None:
    problems = await agent.reload()
    for problem in problems:
        log.error("reload failed: %s", problem)


def instrument(agent: Agent) -> None:
    metrics = agent.metrics
    metrics.add_source(lambda: check_gauges(str(lc.check.status) for lc in agent.state.checks.values()))
    metrics.add_source(runtime_gauges)
    metrics.add_source(lambda: [("serf.lan.members", {}, len(agent.membership.members()))])
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
