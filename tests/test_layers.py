"""The one-way import rules of ARCHITECTURE.md, checked on every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agent", "checks", "dns")

# layer of each module (path prefix → layer); the longest matching prefix wins
LAYERS = {
    "agent/types.py": 0, "agent/errors.py": 0, "agent/version.py": 0,
    "agent/raft/messages.py": 0, "agent/raft/errors.py": 0,
    "agent/raft/core.py": 1, "agent/raft/leader.py": 1, "agent/raft/raftlog.py": 1, "agent/raft/progress.py": 1,
    "agent/raft/readonly.py": 1, "agent/raft/memstore.py": 1, "agent/raft/codec.py": 2,
    "agent/catalog/commands.py": 0, "agent/events.py": 1, "checks/definition.py": 0, "checks/errors.py": 0,
    "checks/result.py": 0, "dns/query.py": 0, "dns/lookup.py": 0, "dns/config.py": 0, "dns/wire.py": 0,
    "agent/catalog": 1, "agent/catalog/reconcile.py": 1, "agent/local/state.py": 1, "agent/filter": 1, "dns/answer": 1,
    "checks/thresholds.py": 1, "checks/ttl.py": 1,
    "agent/gossip/messages.py": 1, "agent/gossip/config.py": 1, "agent/gossip/swim.py": 1, "agent/gossip/rumors.py": 1,
    "agent/gossip/table.py": 1, "agent/gossip/broadcast.py": 1, "agent/gossip/suspicion.py": 1,
    "agent/gossip/probe.py": 1,
    "agent/raft/storage.py": 2, "agent/raft/transport.py": 2, "agent/raft/waiters.py": 2, "agent/raft/persist.py": 2,
    "agent/config": 2, "agent/decode": 2, "agent/servicedef.py": 2,
    "agent/encode.py": 2, "checks": 2, "dns/cache.py": 2,
    "agent/logs.py": 2, "agent/metrics.py": 2, "agent/metrics_text.py": 2, "agent/sdnotify.py": 2,
    "agent/raft/node.py": 3, "agent/raft/cluster.py": 3,
    "agent/local": 3, "agent/server.py": 3, "agent/discovery.py": 3, "agent/reconcile_driver.py": 3,
    "agent/sessions_driver.py": 3, "agent/rpc.py": 3, "agent/membership.py": 3,
    "agent/gossip/joiner.py": 3,
    "agent/remote": 3, "agent/remote/catalog_json.py": 2, "agent/remote/dns_json.py": 2,
    "agent/remote/proxy.py": 4,
    "agent/gossip/errors.py": 0, "agent/gossip/crypto.py": 2, "agent/gossip/keyring.py": 2,
    "agent/gossip/envelope.py": 2, "agent/gossip/keyops.py": 3, "agent/gossip/node.py": 3,
    "agent/gossip/transport.py": 3, "agent/gossip/userevents.py": 3,
    "agent/checks_adapter.py": 3, "agent/dns_adapter.py": 3, "checks/runner.py": 3,
    "checks/checkset.py": 3, "checks/schedule.py": 1, "dns": 3,
    "agent/http": 4,
    "agent/agent.py": 5, "agent/agent_info.py": 5, "agent/lifecycle.py": 5, "agent/cli": 5, "agent/__main__.py": 5,
}
PURE_FORBIDDEN = {"asyncio", "socket", "time", "threading", "subprocess", "os", "aiohttp", "selectors"}


def layer_of(rel: str) -> int:
    best = max((p for p in LAYERS if rel.startswith(p)), key=len, default=None)
    if best is None:
        pytest.fail(f"{rel} has no layer in tests/test_layers.py: add it")
    return LAYERS[best]


def module_path(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    candidate = ROOT.joinpath(*parts)
    if candidate.with_suffix(".py").exists():
        return str(candidate.with_suffix(".py").relative_to(ROOT))
    if (candidate / "__init__.py").exists():
        return str((candidate / "__init__.py").relative_to(ROOT))
    return None


def imports_of(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return names


SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_flow_one_way(path: Path) -> None:
    rel = str(path.relative_to(ROOT))
    own = layer_of(rel)
    for name in imports_of(path):
        top = name.split(".")[0]
        if rel.startswith(("checks/", "dns/")):
            assert top != "agent", f"{rel} imports {name}: checks/ and dns/ never import agent/"
        if own <= 1:
            assert top not in PURE_FORBIDDEN, f"{rel} (pure core) imports {name}"
            if top == "dnslib":
                assert rel.startswith("dns/answer"), f"{rel} imports dnslib (only dns/answer may)"
        target = module_path(name)
        if target is None or target.endswith("__init__.py") or target == rel:
            continue
        assert layer_of(target) <= own, f"{rel} (layer {own}) imports {name} (layer {layer_of(target)})"


def test_every_module_has_a_contract_docstring() -> None:
    missing = [str(p.relative_to(ROOT)) for p in SOURCES if not ast.get_docstring(ast.parse(p.read_text()))]
    assert not missing, f"modules without a contract docstring: {missing}"


def test_no_dnspython() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text().lower()
    assert "dnspython" not in pyproject.replace("never dnspython", "")
