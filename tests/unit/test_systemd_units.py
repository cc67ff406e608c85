"""systemd/: units verify cleanly, the hardening score stays ≤ 2.5, install.sh is re-runnable.

Needs `systemd-analyze` (Debian's systemd package; no running systemd): skipped without it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
WAYPOST = ROOT / ".venv" / "bin" / "waypost"
BAD_STDERR = re.compile(r"Unknown key|Failed to parse|ignoring|Unknown section", re.IGNORECASE)
MAX_EXPOSURE = 2.5

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def unit_copy(tmp_path: Path, *, dns53: bool = False) -> Path:
    """The unit with ExecStart pointing at an executable that exists here (verify checks it)."""
    text = (UNITS / "waypost.service").read_text().replace("/opt/waypost/bin/waypost", str(WAYPOST))
    if dns53:
        extra = [line for line in (UNITS / "waypost-dns53.conf").read_text().splitlines()
                 if line and not line.startswith(("#", "["))]
        text = text.replace("\n[Install]", "\n" + "\n".join(extra) + "\n\n[Install]")
    path = tmp_path / "waypost.service"
    path.write_text(text)
    return path


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, cwd=cwd, timeout=60)


@needs_analyze
@pytest.mark.parametrize("dns53", [False, True], ids=["plain", "with-dns53-dropin"])
def test_unit_verifies_and_is_hardened(tmp_path: Path, dns53: bool) -> None:
    if not WAYPOST.exists():
        pytest.skip("no .venv/bin/waypost")
    unit = unit_copy(tmp_path, dns53=dns53)
    verify = analyze("verify", unit.name, cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert not BAD_STDERR.search(verify.stderr), verify.stderr
    security = analyze("security", "--offline=yes", unit.name, cwd=tmp_path)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", security.stdout + security.stderr)
    assert match, security.stdout + security.stderr
    print(f"exposure {'with dns53' if dns53 else 'plain'}: {match[1]}")
    assert float(match[1]) <= MAX_EXPOSURE


def test_unit_has_what_the_issue_asks() -> None:
    text = (UNITS / "waypost.service").read_text()
    for line in ("Type=notify", "ExecReload=/bin/kill --signal HUP $MAINPID", "Restart=on-failure",
                 "LimitNOFILE=65536", "WatchdogSec=", "NoNewPrivileges=yes", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "ReadWritePaths=/var/lib/waypost",
                 "EnvironmentFile=-/etc/waypost.d/waypost.env", "CapabilityBoundingSet=\n"):
        assert line in text, line
    assert "CAP_NET_BIND_SERVICE" in (UNITS / "waypost-dns53.conf").read_text()
    assert (UNITS / "sysusers.d" / "waypost.conf").read_text().count("\nu waypost ") == 1
    assert "d /var/lib/waypost 0750 waypost waypost" in (UNITS / "tmpfiles.d" / "waypost.conf").read_text()


def test_install_into_destdir_is_rerunnable(tmp_path: Path) -> None:
    dest = tmp_path / "root"
    run = [str(UNITS / "install.sh"), "--destdir", str(dest), "--prefix", "/opt/wp", "--skip-venv", "--dns-port-53"]
    first = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0, first.stderr
    unit = dest / "etc/systemd/system/waypost.service"
    assert "ExecStart=/opt/wp/bin/waypost agent -config-dir=/etc/waypost.d" in unit.read_text()
    assert (dest / "etc/systemd/system/waypost.service.d/dns53.conf").exists()
    assert (dest / "usr/lib/sysusers.d/waypost.conf").exists() and (dest / "usr/lib/tmpfiles.d/waypost.conf").exists()
    env = dest / "etc/waypost.d/waypost.env"
    env.write_text("WAYPOST_OPTS=-log-json\n")  # an operator's edit survives a re-run
    second = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    assert env.read_text() == "WAYPOST_OPTS=-log-json\n"
    assert "kept existing" in second.stdout and "installed" not in second.stdout.replace("kept", "")
    bad = subprocess.run([str(UNITS / "install.sh"), "--prefix", "relative"], capture_output=True, text=True)
    assert bad.returncode == 2
