"""Where a server's time goes during a benchmark: py-spy samples grouped by layer (not CI).

`record(pid, seconds, out)` starts `py-spy record` on one process (raw collapsed stacks, 250 Hz,
non-blocking so the process is not paused); `split(path)` reads the stacks and returns the share
of samples whose innermost frame belongs to each layer below. Frames are matched by file path, so
the split follows the code as it moves. py-spy cannot tell uvloop's C code waiting in epoll from
its C code running callbacks: both count as "event loop (uvloop, incl. waiting)", and a thread pool
worker waiting for work counts as "idle fsync thread". `--profile` in bench_raft.py prints it.
"""

from __future__ import annotations

import collections
import shutil
import subprocess
import sys
from pathlib import Path

LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("storage write + fdatasync", ("agent/raft/storage.py",)),
    ("Raft core (pure)", ("agent/raft/core.py", "agent/raft/leader.py", "agent/raft/progress.py",
                          "agent/raft/raftlog.py", "agent/raft/readonly.py", "agent/raft/memstore.py")),
    ("Raft driver + forwarding", ("agent/raft/node.py", "agent/raft/cluster.py")),
    ("codec (msgpack, messages)", ("agent/raft/codec.py", "agent/raft/messages.py", "msgpack/",
                                   "agent/catalog/commands.py")),
    ("transport (Raft sockets)", ("agent/raft/transport.py", "asyncio/streams.py")),
    ("FSM apply (catalog, KV, watches)", ("agent/catalog/", "agent/server.py")),
    ("HTTP (aiohttp + handlers)", ("aiohttp/", "yarl/", "multidict/", "agent/http/", "json/")),
    ("metrics", ("agent/metrics.py", "agent/lifecycle.py")),
    ("idle fsync thread", ("concurrent/futures/thread.py", "threading.py")),
    ("event loop (uvloop, incl. waiting)", ("asyncio/runners.py", "uvloop/")),
    ("asyncio machinery", ("asyncio/",)),
    ("gossip", ("agent/gossip/",)),
]


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    return subprocess.Popen([exe, "record", "--nonblocking", "-r", "250", "-d", str(seconds), "-f", "raw",
                             "-o", str(out), "-p", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def layer_of(frame: str) -> str:
    where = frame.rsplit(" (", 1)[-1]
    for name, paths in LAYERS:
        if any(p in where for p in paths):
            return name
    return "other"


def split(path: Path) -> dict[str, float]:
    counts: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if stack and n.isdigit():
            counts[layer_of(stack.split(";")[-1])] += int(n)
    total = sum(counts.values()) or 1
    return {name: count / total for name, count in counts.most_common()}


def show(title: str, shares: dict[str, float]) -> str:
    parts = ", ".join(f"{name} {share:.0%}" for name, share in shares.items() if share >= 0.01)
    return f"    {title}: {parts}"
