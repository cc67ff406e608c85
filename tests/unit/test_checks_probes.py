"""Each probe kind against a real loopback peer the test starts (ephemeral ports only)."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import sys

import pytest
from aiohttp import web

from checks.definition import CheckDefinition, CheckKind, Status
from checks.probes.http import HTTPProbe
from checks.probes.script import probe_os_service, probe_script
from checks.probes.tcp import probe_tcp, probe_udp

P, W, C = Status.PASSING, Status.WARNING, Status.CRITICAL


async def start_app(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


@pytest.fixture
async def server():
    seen: list[web.Request] = []
    bodies: list[bytes] = []
    release = asyncio.Event()

    async def code(request: web.Request) -> web.Response:
        seen.append(request)
        bodies.append(await request.read())
        return web.Response(status=int(request.match_info["code"]), text=f"body {request.match_info['code']}")

    async def big(request: web.Request) -> web.Response:
        return web.Response(text="x" * 10_000)

    async def slow(request: web.Request) -> web.Response:
        await release.wait()  # answers only when the test is over
        return web.Response(text="late")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    app = web.Application()
    app.router.add_route("*", "/code/{code}", code)
    app.router.add_get("/big", big)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    runner, base = await start_app(app)
    yield base, seen, bodies
    release.set()
    await runner.cleanup()


def http_defn(url: str, **kw) -> CheckDefinition:
    return CheckDefinition(check_id="h", name="h", kind=CheckKind.HTTP, http=url, interval=10, **kw)


@pytest.fixture
async def http_probe():
    probe = HTTPProbe()
    yield probe
    await probe.close()


@pytest.mark.parametrize(
    ("code", "status", "reason"),
    [(200, P, "OK"), (429, W, "Too Many Requests"), (500, C, "Internal Server Error"), (404, C, "Not Found")],
)
async def test_http_status_mapping(server, http_probe, code, status, reason):
    base, seen, _ = server
    url = f"{base}/code/{code}"
    result = await http_probe(http_defn(url), 2.0, 4096)
    assert result.status == status
    assert result.output == f"HTTP GET {url}: {code} {reason} Output: body {code}"
    assert seen[-1].headers["User-Agent"] == "Consul Health Check"
    assert seen[-1].headers["Accept"] == "text/plain, text/*, */*"


async def test_http_method_headers_body(server, http_probe):
    base, seen, bodies = server
    defn = http_defn(
        f"{base}/code/200",
        method="POST",
        body='{"a":1}',
        header={"X-Multi": ["one", "two"], "User-Agent": ["mine"]},
    )
    result = await http_probe(defn, 2.0, 4096)
    assert result.status == P and result.output.startswith("HTTP POST ")
    assert seen[-1].method == "POST"
    assert seen[-1].headers.getall("X-Multi") == ["one", "two"]
    assert seen[-1].headers["User-Agent"] == "mine"
    assert bodies[-1] == b'{"a":1}'


async def test_http_output_capped(server, http_probe):
    base, _, _ = server
    result = await http_probe(http_defn(f"{base}/big"), 2.0, 100)
    assert result.output.endswith("Output: " + "x" * 100)


async def test_http_timeout_is_critical(server, http_probe):
    base, _, _ = server
    result = await http_probe(http_defn(f"{base}/slow"), 0.2, 4096)
    assert result.status == C and "deadline exceeded" in result.output


async def test_http_connection_refused(http_probe):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = await http_probe(http_defn(f"http://127.0.0.1:{port}/"), 2.0, 4096)
    assert result.status == C and result.output.startswith(f'Get "http://127.0.0.1:{port}/": ')


async def test_http_redirect_same_origin_followed(server, http_probe):
    base, _, _ = server
    result = await http_probe(http_defn(f"{base}/redirect?to=/code/200"), 2.0, 4096)
    assert result.status == P and "body 200" in result.output


async def test_http_redirect_disabled(server, http_probe):
    base, _, _ = server
    result = await http_probe(http_defn(f"{base}/redirect?to=/code/200", disable_redirects=True), 2.0, 4096)
    assert result.status == C and ": 302 Found" in result.output


async def test_http_redirect_to_other_port_refused(server, http_probe):
    base, _, _ = server
    other_seen: list[web.Request] = []

    async def other(request: web.Request) -> web.Response:
        other_seen.append(request)
        return web.Response(text="other")

    app = web.Application()
    app.router.add_get("/", other)
    runner, other_base = await start_app(app)
    try:
        result = await http_probe(http_defn(f"{base}/redirect?to={other_base}/"), 2.0, 4096)
    finally:
        await runner.cleanup()
    assert result.status == C and "refused" in result.output
    assert other_seen == []


async def test_tcp_open_and_closed():
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ok = await probe_tcp(f"127.0.0.1:{port}", 2.0)
    assert ok.status == P and ok.output == f"TCP connect 127.0.0.1:{port}: Success"
    server.close()
    await server.wait_closed()
    bad = await probe_tcp(f"127.0.0.1:{port}", 2.0)
    assert bad.status == C and bad.output.startswith(f"dial tcp 127.0.0.1:{port}: ")
    assert (await probe_tcp("no-port", 1.0)).status == C


class Echo(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data, addr)


async def test_udp_answer_silence_and_refused():
    loop = asyncio.get_running_loop()
    echo, _ = await loop.create_datagram_endpoint(Echo, local_addr=("127.0.0.1", 0))
    port = echo.get_extra_info("sockname")[1]
    answered = await probe_udp(f"127.0.0.1:{port}", 2.0)
    assert answered.status == P and answered.output == f"UDP connect 127.0.0.1:{port}: Success"
    echo.close()
    silent_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # bound, never answers
    silent_sock.bind(("127.0.0.1", 0))
    try:
        silent = await probe_udp(f"127.0.0.1:{silent_sock.getsockname()[1]}", 0.2)
    finally:
        silent_sock.close()
    assert silent.status == P
    refused = await probe_udp(f"127.0.0.1:{port}", 2.0)  # closed port: ICMP port unreachable
    assert refused.status == C


@pytest.mark.parametrize(("code", "status"), [(0, P), (1, W), (2, C), (127, C)])
async def test_script_exit_codes(code, status):
    result = await probe_script(
        [sys.executable, "-c", f"print('hi'); raise SystemExit({code})"], "", 5.0, 4096
    )
    assert result == type(result)(status, "hi\n")


async def test_script_shell_and_stderr():
    result = await probe_script(["echo out; echo err >&2; exit 1"], "/bin/sh", 5.0, 4096)
    assert result.status == W and result.output == "out\nerr\n"


async def test_script_output_capped():
    result = await probe_script([sys.executable, "-c", "print('a' * 5000, end='')"], "", 5.0, 100)
    assert result.output == "Captured 100 of 5000 bytes\n...\n" + "a" * 100


async def test_script_missing_binary():
    result = await probe_script(["/nonexistent/check"], "", 5.0, 4096)
    assert result.status == C


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie waiting for reaping counts as gone
        return f.read().split(")")[-1].split()[0] != "Z"


async def test_script_timeout_kills_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    script = f"sleep 30 & echo $! > {pidfile}; wait"
    result = await probe_script([script], "/bin/sh", 0.5, 4096)
    assert result.status == C and result.output == "Timed out (500ms) running check"
    child = int(pidfile.read_text())
    for _ in range(100):
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    assert not _alive(child)


async def test_script_cancel_kills_process_group(tmp_path):
    pidfile = tmp_path / "child.pid"
    task = asyncio.create_task(probe_script([f"sleep 30 & echo $! > {pidfile}; wait"], "/bin/sh", 10.0, 4096))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait([task])
    child = int(pidfile.read_text())
    for _ in range(100):
        if not _alive(child):
            break
        await asyncio.sleep(0.01)
    assert not _alive(child)


async def test_os_service_with_fake_systemctl(tmp_path):
    fake = tmp_path / "systemctl"
    fake.write_text('#!/bin/sh\n[ "$3" = "nginx" ] && { echo active; exit 0; }\necho inactive; exit 3\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    up = await probe_os_service("nginx", 5.0, str(fake))
    assert up.status == P and up.output == 'Service "nginx" is active'
    down = await probe_os_service("redis", 5.0, str(fake))
    assert down.status == C and down.output == 'Service "redis" is inactive'
    assert (await probe_os_service("--now", 5.0, str(fake))).status == C


async def test_checkset_end_to_end_real_probes(server):
    """Real clock, tiny intervals: the HTTP check follows the server; a hung check delays nobody."""
    from checks.checkset import CheckSet
    from checks.result import CheckResult

    base, _, _ = server
    events: asyncio.Queue[tuple[str, CheckResult]] = asyncio.Queue()
    flip = {"code": 200}

    async def flipping(request: web.Request) -> web.Response:
        return web.Response(status=flip["code"], text="x")

    app = web.Application()
    app.router.add_get("/", flipping)
    runner, flip_base = await start_app(app)
    hung = CheckDefinition(
        check_id="hung", name="hung", kind=CheckKind.HTTP, http=f"{base}/slow", interval=0.05
    )
    web_check = CheckDefinition(
        check_id="web", name="web", kind=CheckKind.HTTP, http=f"{flip_base}/", interval=0.05, timeout=1.0
    )
    try:
        async with CheckSet(lambda cid, r: events.put_nowait((cid, r)), min_interval=0.05) as checks:
            await checks.add(hung)
            await checks.add(web_check)

            async def wait_for(status: Status) -> None:
                while True:
                    cid, result = await events.get()
                    if cid == "web" and result.status == status:
                        return

            async with asyncio.timeout(5):
                await wait_for(Status.PASSING)
                flip["code"] = 500
                await wait_for(Status.CRITICAL)
                flip["code"] = 429
                await wait_for(Status.WARNING)
            assert checks.status("hung").status == Status.CRITICAL  # still initial: its probe hangs
    finally:
        await runner.cleanup()
