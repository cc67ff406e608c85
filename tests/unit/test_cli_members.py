"""`waypost members|join|force-leave|keygen|keyring` end to end: the real CLI (run in a worker thread,
as it uses blocking urllib) against the real HTTP routes served on 127.0.0.1:0 with a fake gossip node."""

from __future__ import annotations

import asyncio
import base64
import io

import pytest
from aiohttp.test_utils import TestServer

from agent import cli
from agent.cli_members import format_keyring_pool
from agent.gossip.errors import GossipJoinError
from agent.gossip.keyring import KeyringReport
from agent.gossip.messages import MemberState
from agent.http.app import build_app
from tests.unit.test_members_api import KEY_A, KEY_B, FakeGossip, context, member


@pytest.fixture
def gossip() -> FakeGossip:
    return FakeGossip(member_list=[member("srv-1", role="consul", address="127.0.0.1"),
                                   member("web-2", MemberState.DEAD, address="127.0.0.3"),
                                   member("web-1", address="::1")])


@pytest.fixture
async def agent_url(gossip: FakeGossip):
    server = TestServer(build_app(context(gossip), max_body_bytes=1 << 20), host="127.0.0.1", port=0)
    await server.start_server()
    yield f"http://127.0.0.1:{server.port}"
    await server.close()


async def run(argv: list[str], url: str = "", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    environ = dict(env or {})
    if url:
        environ.setdefault("CONSUL_HTTP_ADDR", url)
    code = await asyncio.to_thread(cli.main, argv, stdout=out, stderr=err, environ=environ)
    return code, out.getvalue(), err.getvalue()


# --- members ---------------------------------------------------------------------------------


async def test_members_table_from_the_real_route(agent_url):
    code, out, err = await run(["members"], agent_url)
    assert (code, err) == (0, "")
    assert out == (
        "Node   Address         Status  Type    Build  Protocol  DC   Partition  Segment\n"
        "srv-1  127.0.0.1:8301  alive   server  0.1.0  2         dc1  default    <all>\n"
        "web-1  [::1]:8301      alive   client  0.1.0  2         dc1  default    <default>\n"
        "web-2  127.0.0.3:8301  failed  client  0.1.0  2         dc1  default    <default>\n"
    )


async def test_members_status_filter_detailed_and_no_match(agent_url):
    code, out, _ = await run(["members", "-status=failed", "-detailed"], agent_url)
    assert code == 0
    assert out == ("Node   Address         Status  Tags\n"
                   "web-2  127.0.0.3:8301  failed  "
                   "ap=default,build=0.1.0:waypost,dc=dc1,id=id-web-2,role=node,segment=<default>,vsn=2\n")
    assert (await run(["members", "-status", "left"], agent_url))[:2] == (2, "")
    assert (await run(["members", "-wan"], agent_url))[0] == 2  # no WAN pool
    code, out, _ = await run(["members", "-filter", 'Name == "web-1"'], agent_url)
    assert code == 0 and out.splitlines()[1].startswith("web-1")


# --- join ------------------------------------------------------------------------------------


async def test_join_counts_successes_and_reports_each_failure(agent_url, gossip):
    code, out, err = await run(["join", "10.0.0.2", "[::1]:8301"], agent_url)
    assert (code, out, err) == (0, "Successfully joined cluster by contacting 2 nodes.\n", "")
    assert gossip.joins == [["10.0.0.2:8301"], ["[::1]:8301"]]
    gossip.join_error = GossipJoinError({"10.0.0.9:8301": "connection refused"})
    code, out, err = await run(["join", "10.0.0.9", "provider=aws"], agent_url)
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith("Error joining address '10.0.0.9': Unexpected response code: 500 (1 error occurred:")
    assert "Failed to join 10.0.0.9:8301: connection refused" in err
    assert any("Error joining address 'provider=aws': Unexpected response code: 400" in ln for ln in lines)
    assert lines[-1] == "Failed to join any nodes."


async def test_join_without_addresses_prints_usage():
    code, out, err = await run(["join"])
    assert (code, out) == (1, "")
    assert err.startswith("At least one address to join must be specified.\n\nUsage: waypost join")


# --- force-leave -----------------------------------------------------------------------------


async def test_force_leave(agent_url, gossip):
    assert await run(["force-leave", "web-2"], agent_url) == (0, "", "")
    assert await run(["force-leave", "-prune", "web-1"], agent_url) == (0, "", "")
    assert gossip.forced == [("web-2", False), ("web-1", True)]
    code, out, err = await run(["force-leave", "ghost"], agent_url)
    assert (code, out) == (1, "")
    assert err == "Error force leaving: Unexpected response code: 500 (agent: No node found with name 'ghost')\n"
    code, _, err = await run(["force-leave"], agent_url)
    assert code == 1 and err.startswith("A single node name must be specified to force leave.\n\nUsage:")
    assert (await run(["force-leave", "a", "b"], agent_url))[0] == 1


async def test_force_leave_unreachable_agent_honours_http_addr_flag():
    code, _, err = await run(["force-leave", "-http-addr=127.0.0.1:1", "x"])
    assert code == 1 and err.startswith("Error force leaving: connection refused (http://127.0.0.1:1)")


# --- keygen ----------------------------------------------------------------------------------


async def test_keygen_prints_a_fresh_32_byte_key_without_an_agent():
    first, second = await run(["keygen"]), await run(["keygen"])
    assert first[0] == 0 and first[2] == ""
    assert len(base64.b64decode(first[1].strip(), validate=True)) == 32
    assert first[1] != second[1]
    assert (await run(["keygen", "extra"]))[0] == 1
    code, out, _ = await run(["keygen", "-h"])
    assert code == 0 and out.startswith("Usage: waypost keygen")


# --- keyring ---------------------------------------------------------------------------------


async def test_keyring_list_and_list_primary(agent_url, gossip):
    gossip.report = KeyringReport(num_nodes=3, responses={"srv-1": "", "web-1": ""},
                                  keys={KEY_B: 1, KEY_A: 3}, primary_keys={KEY_A: 3})
    code, out, err = await run(["keyring", "-list"], agent_url)
    assert (code, err) == (0, "")
    keys = sorted([KEY_A, KEY_B])
    counts = {KEY_A: 3, KEY_B: 1}
    assert out == ("==> Gathering installed encryption keys...\n\ndc1 (LAN):\n"
                   + "".join(f"  {k} [{counts[k]}/3]\n" for k in keys))
    code, out, _ = await run(["keyring", "-list-primary", "-local-only"], agent_url)
    assert out == f"==> Gathering installed primary encryption keys...\n\ndc1 (LAN):\n  {KEY_A} [3/3]\n"
    assert gossip.ops == [("list", ""), ("list", "")]


@pytest.mark.parametrize(("flag", "op", "info"), [
    ("-install", "install", "==> Installing new gossip encryption key...\n"),
    ("-use", "use", "==> Changing primary gossip encryption key...\n"),
    ("-remove", "remove", "==> Removing gossip encryption key...\n"),
])  # fmt: skip
async def test_keyring_writes(agent_url, gossip, flag, op, info):
    gossip.report = KeyringReport(num_nodes=1, responses={"srv-1": ""})
    assert await run(["keyring", flag, KEY_B], agent_url) == (0, info, "")
    assert gossip.ops == [(op, KEY_B)]


async def test_keyring_errors(agent_url, gossip):
    code, out, err = await run(["keyring", "-install", "bogus"], agent_url)
    assert (code, out) == (1, "==> Installing new gossip encryption key...\n")
    assert err.startswith("error: Unexpected response code: 400 (Failed to decode key")
    gossip.report = KeyringReport(num_nodes=2, responses={"srv-1": "", "web-1": "Key not installed"})
    code, _, err = await run(["keyring", "-use", KEY_B], agent_url)
    assert code == 1 and "dc1 (LAN) error: 1/2 nodes reported failure" in err and "web-1: Key not installed" in err
    gossip.keyring = None
    code, _, err = await run(["keyring", "-list"], agent_url)
    assert code == 1 and "Keyring is empty (encryption not enabled)" in err


async def test_keyring_flag_rules_need_no_agent():
    code, out, err = await run(["keyring"])
    assert (code, out) == (1, "") and err.startswith("Usage: waypost keyring")
    assert await run(["keyring", "-list", "-install", KEY_A]) == (1, "", "Only a single action is allowed\n")
    code, _, err = await run(["keyring", "-list", "-relay-factor", "6"])
    assert (code, err) == (1, "Error parsing relay factor: Relay factor must be in range: [0, 5]\n")
    code, _, err = await run(["keyring", "-use", KEY_A, "-local-only"])
    assert code == 1 and "local-only can only be set for list queries" in err


def test_format_keyring_pool_shows_messages_and_wan():
    pool = {"WAN": False, "Datacenter": "dc1", "Segment": "", "Keys": {"k": 1}, "NumNodes": 2,
            "Messages": {"web-1": "timed out"}}
    assert format_keyring_pool(pool, "Keys") == "\ndc1 (LAN):\n  ===> web-1: timed out\n  k [1/2]"
    assert format_keyring_pool({"WAN": True, "Keys": {}}, "Keys") == "\nWAN:"


async def test_commands_are_in_the_table():
    _, _, err = await run([])
    for name in ("members", "join", "force-leave", "keygen", "keyring"):
        assert f"    {name} " in err
