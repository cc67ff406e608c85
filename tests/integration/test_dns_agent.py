"""The DNS interface of a real `waypost agent -dev`, asked with the real `dig` (issue 4).

One agent for the module (ephemeral HTTP/DNS ports), configured through a config file with a
recursor: a small upstream DNS server this module starts (tests/integration/dns_upstream.py).
Covers A, SRV with glue, tags, RFC 2782, node, PTR, NXDOMAIN with SOA, NODATA for AAAA, `+tcp`,
truncation then the TCP retry, a health change reaching the very next answer, recursors (UDP and the
TCP retry on TC), case-insensitive names with the question's case kept, maintenance mode, and that
DNS and `/v1/health/service/:name?passing` agree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import AgentProcess

pytestmark = pytest.mark.skipif(shutil.which("dig") is None, reason="dig not installed (apt-get install dnsutils)")

UPSTREAM = Path(__file__).with_name("dns_upstream.py")
RECORD = re.compile(r"^(\S+)\s+(\d+)\s+IN\s+(\S+)\s+(.*)$")


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    proc = subprocess.Popen([sys.executable, str(UPSTREAM)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("port "), line
        yield int(line.split()[1])
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory, upstream: int) -> Iterator[AgentProcess]:
    workdir = tmp_path_factory.mktemp("dns")
    config = workdir / "dns.json"
    config.write_text(json.dumps({
        "recursors": [f"127.0.0.1:{upstream}"],
        "node_meta": {"rack": "r1"},
        "dns_config": {"service_ttl": {"*": "3s", "db": "7s"}, "node_ttl": "2s", "recursor_timeout": "2s"},
    }))
    proc = AgentProcess(workdir, "-node", "itest", "-config-file", str(config)).start()
    try:
        for i, tags in ((1, ["v1", "primary"]), (2, ["v2"]), (3, ["v1"])):
            register(proc, f"n{i}", f"10.0.0.{i}", {"ID": "web", "Service": "web", "Port": 8080 + i, "Tags": tags})
        register(proc, "n2", "10.0.0.2", {"ID": "db", "Service": "db", "Port": 5432, "Address": "10.9.0.2"})
        yield proc
    finally:
        proc.stop()


def register(agent: AgentProcess, node: str, address: str, service: dict | None = None,
             check: dict | None = None) -> None:
    body: dict = {"Node": node, "Address": address}
    if service:
        body["Service"] = service
    if check:
        body["Check"] = check
    reply = agent.put("/v1/catalog/register", body)
    assert reply.status == 200, reply.text


def dig(agent: AgentProcess, *args: str, cookie: bool = False) -> str:
    """Without a cookie (the default here) repeated questions are byte-identical after the ID, so
    they are served by the listener's exact-bytes hot path; with one, by the parsed-question cache."""
    options = ["+time=3", "+tries=1"] + ([] if cookie else ["+nocookie"])
    done = subprocess.run(["dig", "@127.0.0.1", "-p", str(agent.dns_port), *options, *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def section(out: str, name: str) -> list[tuple[str, int, str, str]]:
    """(owner, ttl, type, rdata) of one section of dig's output (the last one printed)."""
    rows: list[tuple[str, int, str, str]] = []
    inside = False
    for line in out.splitlines():
        if line.startswith(f";; {name} SECTION:"):
            inside, rows = True, []
        elif inside and not line.strip():
            inside = False
        elif inside and (m := RECORD.match(line)):
            rows.append((m[1], int(m[2]), m[3], m[4].strip()))
    return rows


def status(out: str) -> str:
    found = re.findall(r"status: (\w+)", out)
    assert found, out
    return found[-1]


def flags(out: str) -> set[str]:
    return set(re.findall(r";; flags: ([a-z ]+);", out)[-1].split())


def addresses(agent: AgentProcess, name: str) -> set[str]:
    return {r[3] for r in section(dig(agent, name, "A"), "ANSWER") if r[2] == "A"}


def http_passing(agent: AgentProcess, name: str) -> set[str]:
    rows = agent.get(f"/v1/health/service/{name}?passing").json()
    return {row["Service"]["Address"] or row["Node"]["Address"] for row in rows}  # type: ignore[union-attr]


# ---------------------------------------------------------------- records


def test_a_records_and_ttl(agent: AgentProcess) -> None:
    out = dig(agent, "web.service.consul")
    answers = section(out, "ANSWER")
    assert status(out) == "NOERROR" and "aa" in flags(out)
    assert {r[3] for r in answers} == {"10.0.0.1", "10.0.0.2", "10.0.0.3"}
    assert {r[1] for r in answers} == {3} and {r[2] for r in answers} == {"A"}  # service_ttl "*"
    assert section(dig(agent, "db.service.consul"), "ANSWER")[0][1:] == (7, "A", "10.9.0.2")  # service address


def test_srv_with_glue(agent: AgentProcess) -> None:
    out = dig(agent, "web.service.consul", "SRV")
    srv = section(out, "ANSWER")
    assert sorted(r[3] for r in srv) == ["1 1 8081 n1.node.dc1.consul.", "1 1 8082 n2.node.dc1.consul.",
                                         "1 1 8083 n3.node.dc1.consul."]
    glue = {(r[0], r[3]) for r in section(out, "ADDITIONAL") if r[2] == "A"}
    assert glue == {("n1.node.dc1.consul.", "10.0.0.1"), ("n2.node.dc1.consul.", "10.0.0.2"),
                    ("n3.node.dc1.consul.", "10.0.0.3")}
    out = dig(agent, "db.service.consul", "SRV")  # a service address: the target is its addr name
    (row,) = section(out, "ANSWER")
    assert row[3] == "1 1 5432 0a090002.addr.dc1.consul."
    assert ("0a090002.addr.dc1.consul.", "10.9.0.2") in {(r[0], r[3]) for r in section(out, "ADDITIONAL")}


def test_tag_and_rfc2782(agent: AgentProcess) -> None:
    assert addresses(agent, "v1.web.service.consul") == {"10.0.0.1", "10.0.0.3"}
    assert addresses(agent, "primary.web.service.consul") == {"10.0.0.1"}
    assert status(dig(agent, "v9.web.service.consul")) == "NXDOMAIN"
    out = dig(agent, "_web._v2.service.consul", "SRV")
    assert [r[3] for r in section(out, "ANSWER")] == ["1 1 8082 n2.node.dc1.consul."]
    assert len(section(dig(agent, "_web._tcp.service.consul", "SRV"), "ANSWER")) == 3
    assert len(section(dig(agent, "_web._tcp.consul", "SRV"), "ANSWER")) == 3  # `.service` left out


def test_node_and_ptr(agent: AgentProcess) -> None:
    out = dig(agent, "itest.node.consul")
    assert section(out, "ANSWER") == [("itest.node.consul.", 2, "A", "127.0.0.1")]
    txt = {r[3] for r in section(dig(agent, "itest.node.dc1.consul", "TXT"), "ANSWER")}
    assert '"rack=r1"' in txt
    assert section(dig(agent, "-x", "10.0.0.2"), "ANSWER") == [
        ("2.0.0.10.in-addr.arpa.", 0, "PTR", "n2.node.dc1.consul.")]
    assert section(dig(agent, "-x", "10.9.0.2"), "ANSWER")[0][3] == "db.service.dc1.consul."
    assert section(dig(agent, "0a000003.addr.consul"), "ANSWER")[0][3] == "10.0.0.3"


def test_nxdomain_and_nodata_carry_the_soa(agent: AgentProcess) -> None:
    out = dig(agent, "nope.service.consul")
    assert status(out) == "NXDOMAIN" and "aa" in flags(out) and not section(out, "ANSWER")
    ((owner, ttl, rtype, rdata),) = section(out, "AUTHORITY")
    assert (owner, rtype) == ("consul.", "SOA") and ttl == 5 and rdata.split()[-1] == "5"
    out = dig(agent, "web.service.consul", "AAAA")
    assert status(out) == "NOERROR" and not section(out, "ANSWER")
    assert [r[2] for r in section(out, "AUTHORITY")] == ["SOA"]
    assert status(dig(agent, "nope.node.consul")) == "NXDOMAIN"
    assert status(dig(agent, "web.service.dc9.consul")) == "NXDOMAIN"  # unknown datacenter


def test_tcp(agent: AgentProcess) -> None:
    out = dig(agent, "+tcp", "web.service.consul", "SRV")
    assert "(TCP)" in out and len(section(out, "ANSWER")) == 3


def test_truncation_then_tcp_retry(agent: AgentProcess) -> None:
    for i in range(1, 41):
        register(agent, f"many{i:02d}", f"10.7.0.{i}", {"ID": "many", "Service": "many", "Port": 80})
    out = dig(agent, "+noedns", "+ignore", "many.service.consul")  # plain UDP: 512 bytes, 3 answers
    assert "tc" in flags(out) and len(section(out, "ANSWER")) == 3
    out = dig(agent, "+noedns", "many.service.consul")  # dig retries over TCP by itself
    assert "Truncated, retrying in TCP mode" in out
    assert len(section(out, "ANSWER")) == 40 and "tc" not in flags(out)
    out = dig(agent, "+ignore", "many.service.consul", "SRV")  # EDNS 1232: as many as fit, TC set
    kept = section(out, "ANSWER")
    assert "tc" in flags(out) and 3 < len(kept) < 40
    targets = {r[3].split()[-1] for r in kept}
    assert {r[0] for r in section(out, "ADDITIONAL") if r[2] == "A"} == targets  # glue matches what was kept
    assert len(section(dig(agent, "many.service.consul", "SRV"), "ANSWER")) == 40


# ---------------------------------------------------------------- health, case, maintenance


def test_health_change_reaches_the_next_answer(agent: AgentProcess) -> None:
    reply = agent.put("/v1/agent/service/register", {"Name": "pay", "ID": "pay1", "Port": 9000,
                                                     "Check": {"CheckID": "pay1-ttl", "TTL": "60s"}})
    assert reply.status == 200, reply.text
    register(agent, "n2", "10.0.0.2", {"ID": "pay2", "Service": "pay", "Port": 9000})
    assert agent.put("/v1/agent/check/pass/pay1-ttl").status == 200
    agent.wait_for(lambda: http_passing(agent, "pay") == {"127.0.0.1", "10.0.0.2"}, what="pay passing")
    assert addresses(agent, "pay.service.consul") == {"127.0.0.1", "10.0.0.2"}  # now cached
    assert agent.put("/v1/agent/check/fail/pay1-ttl").status == 200
    agent.wait_for(lambda: http_passing(agent, "pay") == {"10.0.0.2"}, what="pay1 critical over HTTP")
    assert addresses(agent, "pay.service.consul") == {"10.0.0.2"}  # the very next answer
    out = dig(agent, "pay.service.consul", cookie=True)
    assert {r[3] for r in section(out, "ANSWER")} == {"10.0.0.2"}
    out = dig(agent, "pay.service.consul", "SRV")
    assert [r[3] for r in section(out, "ANSWER")] == ["1 1 9000 n2.node.dc1.consul."]
    assert agent.put("/v1/agent/check/pass/pay1-ttl").status == 200
    agent.wait_for(lambda: len(http_passing(agent, "pay")) == 2, what="pay1 passing again")
    assert addresses(agent, "pay.service.consul") == {"127.0.0.1", "10.0.0.2"}


def test_case_insensitive_names_keep_the_question_case(agent: AgentProcess) -> None:
    reply = agent.put("/v1/agent/service/register", {"Name": "Web2", "ID": "Web2", "Port": 80})
    assert reply.status == 200, reply.text
    agent.wait_for(lambda: agent.get("/v1/catalog/service/Web2").json(), what="Web2 in the catalog")
    for name in ("web2.service.consul", "WEB2.Service.CONSUL", "wEb2.sErViCe.cOnSuL"):
        out = dig(agent, name)
        assert section(out, "ANSWER") == [(name + ".", 3, "A", "127.0.0.1")], out
        for cookie in (False, True):  # cache hits (both caches) keep the case too
            assert section(dig(agent, name, cookie=cookie), "ANSWER")[0][0] == name + "."
    srv = section(dig(agent, "_WEB2._tcp.service.consul", "SRV"), "ANSWER")
    assert srv == [("_WEB2._tcp.service.consul.", 3, "SRV", "1 1 80 itest.node.dc1.consul.")]
    assert section(dig(agent, "ITEST.node.consul"), "ANSWER")[0][3] == "127.0.0.1"


def test_maintenance_mode_hides_an_instance(agent: AgentProcess) -> None:
    reply = agent.put("/v1/agent/service/register", {"Name": "shop", "ID": "shop1", "Port": 81})
    assert reply.status == 200, reply.text
    register(agent, "n3", "10.0.0.3", {"ID": "shop3", "Service": "shop", "Port": 81})
    agent.wait_for(lambda: http_passing(agent, "shop") == {"127.0.0.1", "10.0.0.3"}, what="shop")
    assert addresses(agent, "shop.service.consul") == {"127.0.0.1", "10.0.0.3"}
    assert agent.put("/v1/agent/service/maintenance/shop1?enable=true&reason=deploy").status == 200
    agent.wait_for(lambda: http_passing(agent, "shop") == {"10.0.0.3"}, what="shop1 in maintenance")
    assert addresses(agent, "shop.service.consul") == {"10.0.0.3"}
    assert agent.put("/v1/agent/service/maintenance/shop1?enable=false").status == 200
    agent.wait_for(lambda: len(http_passing(agent, "shop")) == 2, what="shop1 back")
    assert addresses(agent, "shop.service.consul") == {"127.0.0.1", "10.0.0.3"}


def test_dns_agrees_with_the_health_api(agent: AgentProcess) -> None:
    register(agent, "n4", "10.0.0.4", {"ID": "api", "Service": "api", "Port": 1},
             {"CheckID": "api-http", "Name": "api", "ServiceID": "api", "Status": "critical"})
    register(agent, "n5", "10.0.0.5", {"ID": "api", "Service": "api", "Port": 1},
             {"CheckID": "api-http", "Name": "api", "ServiceID": "api", "Status": "passing"})
    register(agent, "n6", "10.0.0.6", {"ID": "api", "Service": "api", "Port": 1, "Address": "10.6.6.6"})
    register(agent, "n7", "10.0.0.7", None, {"CheckID": "serfHealth", "Name": "node", "Status": "critical"})
    register(agent, "n7", "10.0.0.7", {"ID": "api", "Service": "api", "Port": 1})
    for name in ("web", "db", "api", "pay", "shop", "many"):
        dns = addresses(agent, f"{name}.service.consul")
        assert dns == http_passing(agent, name), name
    assert addresses(agent, "api.service.consul") == {"10.0.0.5", "10.6.6.6"}
    # a warning check is still "passing" for DNS (Consul's rule) but not for ?passing
    register(agent, "n5", "10.0.0.5", {"ID": "api", "Service": "api", "Port": 1},
             {"CheckID": "api-http", "Name": "api", "ServiceID": "api", "Status": "warning"})
    assert addresses(agent, "api.service.consul") == {"10.0.0.5", "10.6.6.6"}
    assert http_passing(agent, "api") == {"10.6.6.6"}


# ---------------------------------------------------------------- recursors


def test_recursor_relays_the_upstream_answer(agent: AgentProcess) -> None:
    out = dig(agent, "www.upstream.test")
    assert status(out) == "NOERROR" and "ra" in flags(out) and "aa" not in flags(out)
    assert section(out, "ANSWER") == [("www.upstream.test.", 42, "A", "192.0.2.7")]
    assert status(dig(agent, "missing.example")) == "NXDOMAIN"  # relayed from upstream
    out = dig(agent, "+tcp", "x.upstream.test")
    assert section(out, "ANSWER")[0][3] == "192.0.2.7"


def test_recursor_retries_over_tcp_when_upstream_truncates(agent: AgentProcess) -> None:
    out = dig(agent, "+tcp", "big.upstream.test", "TXT")
    assert len(section(out, "ANSWER")) == 40
    out = dig(agent, "+ignore", "big.upstream.test", "TXT")  # our UDP answer: as big as fits, or TC
    assert len(section(out, "ANSWER")) == 40 or "tc" in flags(out)
    stats = section(dig(agent, "stats.upstream.test", "TXT"), "ANSWER")[0][3]
    assert int(re.search(r"tcp=(\d+)", stats)[1]) >= 2  # type: ignore[index]
