"""`waypost lock`'s Consul flags (-timeout, -monitor-retry, -pass-stdin) and the session keep-alive,
against an in-process fake agent (aiohttp on 127.0.0.1, ephemeral port) that can answer 500s."""

from __future__ import annotations

import asyncio
import io
import os
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from agent import cli_lock
from agent.cli_common import CommandExit, CommandFailed, Ctx
from agent.cli_lock import TIMEOUT_MESSAGE, Api, parse_lock_flags

ROOT = Path(__file__).resolve().parents[2]


class FakeAgent:
    """Sessions and KV lock semantics just deep enough for `lock`; `fail_gets` / `fail_renews`
    make the next N KV GETs / renews answer 500."""

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.kv: dict[str, dict] = {}
        self.index = 1
        self.changed = asyncio.Event()
        self.fail_gets = 0
        self.fail_renews = 0
        self.renews = 0
        self.gets_failed = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/v1/session/create", self.create)
        app.router.add_put("/v1/session/renew/{id}", self.renew)
        app.router.add_put("/v1/session/destroy/{id}", self.destroy)
        app.router.add_put("/v1/kv/{key:.*}", self.put)
        app.router.add_get("/v1/kv/{key:.*}", self.get)
        return app

    def bump(self) -> None:
        self.index += 1
        self.changed.set()
        self.changed = asyncio.Event()

    async def create(self, request: web.Request) -> web.Response:
        sid = str(uuid.uuid4())
        self.sessions.add(sid)
        return web.json_response({"ID": sid})

    async def renew(self, request: web.Request) -> web.Response:
        self.renews += 1
        if self.fail_renews > 0:
            self.fail_renews -= 1
            return web.Response(status=500, text="No cluster leader")
        sid = request.match_info["id"]
        if sid not in self.sessions:
            return web.Response(status=404, text="not found")
        return web.json_response([{"ID": sid}])

    async def destroy(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        self.sessions.discard(sid)
        for entry in self.kv.values():
            if entry.get("Session") == sid:
                del entry["Session"]
        self.bump()
        return web.json_response(True)

    async def put(self, request: web.Request) -> web.Response:
        key, query = request.match_info["key"], request.query
        entry = self.kv.setdefault(key, {"Key": key, "Value": None, "ModifyIndex": 0, "LockIndex": 0})
        ok = True
        if "acquire" in query:
            ok = entry.get("Session") in (None, query["acquire"]) and query["acquire"] in self.sessions
            if ok:
                entry["Session"] = query["acquire"]
                entry["LockIndex"] += 1
        elif "release" in query:
            ok = entry.get("Session") == query["release"]
            if ok:
                del entry["Session"]
        if ok:
            self.bump()
            entry["ModifyIndex"] = self.index
        return web.json_response(ok, headers={"X-Waypost-Fence-Token": f"{entry['LockIndex']}.{self.index}"})

    async def get(self, request: web.Request) -> web.Response:
        if self.fail_gets > 0:
            self.fail_gets -= 1
            self.gets_failed += 1
            return web.Response(status=500, text="rpc error")
        if request.query.get("index", "0") != "0" and int(request.query["index"]) >= self.index:
            try:
                await asyncio.wait_for(self.changed.wait(), 5)
            except TimeoutError:
                pass
        entry = self.kv.get(request.match_info["key"])
        headers = {"X-Consul-Index": str(self.index)}
        if entry is None:
            return web.Response(status=404, headers=headers)
        return web.json_response([entry], headers=headers)


@pytest.fixture
async def agent() -> AsyncIterator[tuple[FakeAgent, str]]:
    fake = FakeAgent()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield fake, f"http://127.0.0.1:{port}"
    await runner.cleanup()


def _ctx(base: str) -> tuple[Ctx, io.StringIO]:
    err = io.StringIO()
    return Ctx(stdout=io.StringIO(), stderr=err, environ={"WAYPOST_HTTP_ADDR": base}), err


def test_flags_parse_and_validate() -> None:
    values, args = parse_lock_flags(["-timeout", "1m", "-monitor-retry", "5", "-pass-stdin", "p", "true"])
    assert values["timeout-seconds"] == 60.0 and values["monitor-retry"] == 5 and values["pass-stdin"] is True
    assert args == ["p", "true"]
    defaults, _ = parse_lock_flags(["p", "true"])
    assert defaults["timeout-seconds"] == 0.0 and defaults["monitor-retry"] == 3 and defaults["pass-stdin"] is False
    with pytest.raises(CommandFailed, match="Invalid -timeout"):
        parse_lock_flags(["-timeout", "soon", "p", "true"])
    with pytest.raises(CommandFailed, match="Monitor retry"):
        parse_lock_flags(["-monitor-retry", "-1", "p", "true"])
    with pytest.raises(CommandExit):
        parse_lock_flags(["-monitor-retry", "x", "p", "true"])


async def test_timeout_gives_up_acquiring_and_cleans_up(agent: tuple[FakeAgent, str], tmp_path: Path) -> None:
    fake, base = agent
    fake.sessions.add("other")
    fake.kv["jobs/.lock"] = {"Key": "jobs/.lock", "Value": None, "ModifyIndex": 1, "LockIndex": 1, "Session": "other"}
    marker = tmp_path / "ran"
    values, args = parse_lock_flags(["-timeout", "300ms", "jobs", f"touch {marker}"])
    ctx, err = _ctx(base)
    started = asyncio.get_running_loop().time()
    code = await cli_lock._run_lock(values, ctx, args[0], args[1:])
    assert code == 1 and TIMEOUT_MESSAGE in err.getvalue()
    assert 0.3 <= asyncio.get_running_loop().time() - started < 3.0
    assert not marker.exists()
    assert fake.sessions == {"other"}  # our session was destroyed
    assert fake.kv["jobs/.lock"]["Session"] == "other"


async def test_timeout_not_reached_runs_the_child(agent: tuple[FakeAgent, str], tmp_path: Path) -> None:
    fake, base = agent
    marker = tmp_path / "ran"
    values, args = parse_lock_flags(["-timeout", "5s", "jobs", f"touch {marker}"])
    assert await cli_lock._run_lock(values, _ctx(base)[0], args[0], args[1:]) == 0
    assert marker.exists() and "Session" not in fake.kv["jobs/.lock"]


async def test_monitor_retries_500s_while_holding(agent: tuple[FakeAgent, str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_lock, "MONITOR_RETRY_WAIT", 0.01)
    fake, base = agent
    marker = tmp_path / "done"
    values, args = parse_lock_flags(["-monitor-retry", "3", "jobs", f"sleep 0.5; touch {marker}"])
    fake.fail_gets = 3  # the monitor's first reads after acquiring fail: retried, the child keeps running
    assert await cli_lock._run_lock(values, _ctx(base)[0], args[0], args[1:]) == 0
    assert marker.exists() and fake.gets_failed == 3


async def test_monitor_gives_up_after_the_retries(agent: tuple[FakeAgent, str], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_lock, "MONITOR_RETRY_WAIT", 0.01)
    fake, base = agent
    marker = tmp_path / "done"
    values, args = parse_lock_flags(["-monitor-retry", "1", "jobs", f"sleep 3; touch {marker}"])
    fake.fail_gets = 2  # one more than allowed: the lock counts as lost, the child is terminated
    ctx, err = _ctx(base)
    assert await cli_lock._run_lock(values, ctx, args[0], args[1:]) == 1
    assert not marker.exists() and "Lock lost" in err.getvalue() and "500" in err.getvalue()


async def test_keep_alive_rides_out_500s_until_the_ttl(agent: tuple[FakeAgent, str],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_lock, "SESSION_TTL", 0.4)
    monkeypatch.setattr(cli_lock, "RENEW_RETRY", 0.02)
    fake, base = agent
    fake.sessions.add("s")
    async with Api(base, "") as api:
        fake.fail_renews = 3  # a short outage: retried, the loop keeps going
        task = asyncio.ensure_future(api.keep_alive("s"))
        try:
            await asyncio.sleep(0.8)
            assert not task.done() and fake.renews >= 5
            fake.fail_renews = 10**6  # an outage longer than the TTL: the keep-alive fails
            with pytest.raises(cli_lock.AgentUnavailable):
                await asyncio.wait_for(task, 3)
        finally:
            task.cancel()


async def _run_cli(base: str, stdin: bytes, *flags: str) -> tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT), WAYPOST_HTTP_ADDR=base)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "agent", "lock", *flags, "jobs", "cat",
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                env=env, cwd=ROOT)
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 30)
    return proc.returncode or 0, out.decode()


async def test_pass_stdin(agent: tuple[FakeAgent, str]) -> None:
    _, base = agent
    assert await _run_cli(base, b"piped input\n", "-pass-stdin") == (0, "piped input\n")
    assert await _run_cli(base, b"piped input\n") == (0, "")  # Consul: the child's stdin is empty


async def test_keep_alive_reports_an_expired_session_as_lost(agent: tuple[FakeAgent, str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_lock, "SESSION_TTL", 0.1)
    _, base = agent
    async with Api(base, "") as api:  # the agent answers 404 with a text body, as /v1/session/renew does
        with pytest.raises(cli_lock.LockLost):
            await asyncio.wait_for(api.keep_alive("gone"), 3)
