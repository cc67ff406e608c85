"""A controllable HTTP peer for health-check tests, run as its own process.

`python -m tests.integration.check_peer [--port 0]` serves on 127.0.0.1 and prints `PORT <n>` once
listening. Every path except `/control` answers with the current status code and the body
`status <code>` (and counts the request); `PUT /control?status=N` sets the code, `GET /control`
returns `{"status": N, "hits": H}`. `CheckPeer` starts/stops it from a test by its own PID.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def serve(port: int) -> None:
    import asyncio

    from aiohttp import web

    state = {"status": 200, "hits": 0}

    async def answer(request: web.Request) -> web.Response:
        state["hits"] += 1
        return web.Response(status=state["status"], text=f"status {state['status']}")

    async def control(request: web.Request) -> web.Response:
        if request.method == "PUT":
            state["status"] = int(request.query["status"])
        return web.json_response(state)

    async def main() -> None:
        app = web.Application()
        app.router.add_route("*", "/control", control)
        app.router.add_route("*", "/{tail:.*}", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(f"PORT {runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


class CheckPeer:
    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.integration.check_peer"],
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the peer listens (or exits)
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"check peer failed to start: {line!r}")
        self.port = int(line.split()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _control(self, method: str, query: str = "") -> dict:
        req = urllib.request.Request(f"{self.url}/control{query}", method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def set_status(self, code: int) -> None:
        self._control("PUT", f"?status={code}")

    def hits(self) -> int:
        return int(self._control("GET")["hits"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    serve(parser.parse_args().port)
