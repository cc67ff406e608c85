"""The gossip HTTP routes (agent/http/members.py) against a fake GossipAccess, through build_app."""

from __future__ import annotations

import types
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from aiohttp.test_utils import TestClient, TestServer

from agent.gossip.errors import GossipJoinError, KeyringError
from agent.gossip.keyring import KeyringReport, generate_key
from agent.gossip.messages import Member, MemberState
from agent.http.app import HttpContext, build_app
from agent.http.members import member_json

KEY_A, KEY_B = generate_key(), generate_key()


def member(name: str, state: MemberState = MemberState.ALIVE, address: str = "127.0.0.2", port: int = 8301,
           role: str = "node") -> Member:
    tags = {"role": role, "dc": "dc1", "id": f"id-{name}", "build": "0.1.0:waypost", "vsn": "2"}
    return Member(name, address, port, tags, state, 1, 0.0)


@dataclass
class FakeGossip:
    member_list: list[Member] = field(default_factory=list)
    keyring: object | None = "installed"
    join_error: Exception | None = None
    joins: list[list[str]] = field(default_factory=list)
    forced: list[tuple[str, bool]] = field(default_factory=list)
    ops: list[tuple[str, str]] = field(default_factory=list)
    report: KeyringReport = field(default_factory=lambda: KeyringReport(num_nodes=0))

    def members(self) -> list[Member]:
        return list(self.member_list)

    def local_member(self) -> Member:
        return self.member_list[0]

    async def join(self, addresses: Sequence[str]) -> int:
        self.joins.append(list(addresses))
        if self.join_error is not None:
            raise self.join_error
        return len(addresses)

    def force_leave(self, name: str, prune: bool = False) -> bool:
        self.forced.append((name, prune))
        return any(m.name == name for m in self.member_list)

    async def keyring_operation(self, op: str, key: str = "") -> KeyringReport:
        self.ops.append((op, key))
        return self.report


def context(gossip: FakeGossip | None) -> HttpContext:
    async def nothing() -> None:
        return None

    return HttpContext(
        config=types.SimpleNamespace(datacenter="dc1"), server=None, discovery=None, local=None,  # type: ignore[arg-type]
        reload=nothing, leave=nothing, self_info=dict,  # type: ignore[arg-type]
        members=lambda: [{"Name": "fallback", "Status": 1}], gossip=gossip,
    )


@pytest.fixture
def gossip() -> FakeGossip:
    return FakeGossip(member_list=[member("srv-1", role="consul", port=7301), member("cli-b"),
                                   member("cli-a", MemberState.DEAD, "::1"), member("gone", MemberState.LEFT),
                                   member("maybe", MemberState.SUSPECT)])


@pytest.fixture
async def client(gossip: FakeGossip):
    async with TestClient(TestServer(build_app(context(gossip), max_body_bytes=1 << 20))) as c:
        yield c


# --- members ---------------------------------------------------------------------------------


async def test_members_lists_every_member_sorted_with_consul_fields(client):
    resp = await client.get("/v1/agent/members")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert [m["Name"] for m in body] == ["cli-a", "cli-b", "gone", "maybe", "srv-1"]
    assert [m["Status"] for m in body] == [4, 1, 3, 1, 1]
    cli_a = body[0]
    assert cli_a == {"Name": "cli-a", "Addr": "::1", "Port": 8301, "Status": 4,
                     "Tags": {"role": "node", "dc": "dc1", "id": "id-cli-a", "build": "0.1.0:waypost", "vsn": "2"},
                     "ProtocolMin": 1, "ProtocolMax": 5, "ProtocolCur": 2,
                     "DelegateMin": 2, "DelegateMax": 5, "DelegateCur": 4}  # fmt: skip
    assert body[-1]["Port"] == 7301 and body[-1]["Tags"]["role"] == "consul"


async def test_members_filter_wan_and_segment(client):
    resp = await client.get("/v1/agent/members", params={"filter": 'Tags.role == "consul"'})
    assert [m["Name"] for m in await resp.json()] == ["srv-1"]
    resp = await client.get("/v1/agent/members?wan=1")
    assert (resp.status, await resp.json()) == (200, [])
    assert (await client.get("/v1/agent/members?segment=_all")).status == 200
    resp = await client.get("/v1/agent/members?segment=alpha")
    assert resp.status == 400 and "segments are not supported" in await resp.text()
    resp = await client.get("/v1/agent/members?wan=1&segment=alpha")
    assert (resp.status, await resp.text()) == (400, "Cannot provide a segment with wan=true")
    assert (await client.get("/v1/agent/members", params={"filter": "Name =="})).status == 400


async def test_members_without_gossip_falls_back_to_context():
    async with TestClient(TestServer(build_app(context(None), max_body_bytes=1 << 20))) as c:
        assert await (await c.get("/v1/agent/members")).json() == [{"Name": "fallback", "Status": 1}]
        resp = await c.put("/v1/agent/join/127.0.0.1")
        assert (resp.status, await resp.text()) == (500, "gossip is not running on this agent")
        assert (await c.put("/v1/agent/force-leave/x")).status == 500
        assert (await c.get("/v1/operator/keyring")).status == 500


def test_member_json_status_mapping():
    statuses = {s: member_json(member("x", s))["Status"] for s in MemberState}
    assert statuses == {MemberState.ALIVE: 1, MemberState.SUSPECT: 1, MemberState.DEAD: 4, MemberState.LEFT: 3}


# --- join ------------------------------------------------------------------------------------


async def test_join_normalizes_addresses_with_our_port_as_default(client, gossip):
    for raw in ("10.0.0.5", "10.0.0.6:9301", "[::1]:9302", "::2", "node.example"):
        resp = await client.put(f"/v1/agent/join/{raw}")
        assert (resp.status, await resp.text()) == (200, "")
    # memberlist's rule: a port-less address uses the joining agent's own gossip port (7301 here)
    assert gossip.joins == [["10.0.0.5:7301"], ["10.0.0.6:9301"], ["[::1]:9302"], ["[::2]:7301"],
                            ["node.example:7301"]]


async def test_join_failure_is_500_with_each_reason(client, gossip):
    gossip.join_error = GossipJoinError({"10.0.0.9:7301": "connection refused"})
    resp = await client.put("/v1/agent/join/10.0.0.9")
    assert resp.status == 500
    assert await resp.text() == "1 error occurred:\n\t* Failed to join 10.0.0.9:7301: connection refused\n\n"
    gossip.join_error = OSError("network unreachable")
    resp = await client.put("/v1/agent/join/10.0.0.9:1")
    assert (resp.status, await resp.text()) == (500, "Failed to join 10.0.0.9:1: network unreachable")


async def test_join_bad_addresses_and_wan(client, gossip):
    resp = await client.put("/v1/agent/join/provider=aws tag_key=x")
    assert resp.status == 400 and "cloud auto-join is not supported" in await resp.text()
    resp = await client.put("/v1/agent/join/10.0.0.1:99999")
    assert resp.status == 400 and "bad port" in await resp.text()
    resp = await client.put("/v1/agent/join/10.0.0.1?wan=1")
    assert resp.status == 500 and "WAN" in await resp.text()
    assert gossip.joins == []
    assert (await client.get("/v1/agent/join/10.0.0.1")).status == 405


# --- force-leave -----------------------------------------------------------------------------


async def test_force_leave_known_unknown_and_prune(client, gossip):
    assert (await client.put("/v1/agent/force-leave/cli-a")).status == 200
    assert (await client.put("/v1/agent/force-leave/gone?prune")).status == 200
    resp = await client.put("/v1/agent/force-leave/nobody")
    assert (resp.status, await resp.text()) == (500, "agent: No node found with name 'nobody'")
    resp = await client.put("/v1/agent/force-leave/cli-a?wan=1")  # no WAN pool: nobody is there
    assert resp.status == 500
    assert gossip.forced == [("cli-a", False), ("gone", True), ("nobody", False)]
    assert (await client.put("/v1/agent/force-leave/cli-a?prune=maybe")).status == 400


# --- keyring ---------------------------------------------------------------------------------


async def test_keyring_list(client, gossip):
    gossip.report = KeyringReport(num_nodes=2, responses={"srv-1": "", "cli-b": ""},
                                  keys={KEY_A: 2, KEY_B: 1}, primary_keys={KEY_A: 2})
    resp = await client.get("/v1/operator/keyring")
    assert resp.status == 200
    assert await resp.json() == [{"WAN": False, "Datacenter": "dc1", "Segment": "", "Keys": {KEY_A: 2, KEY_B: 1},
                                  "PrimaryKeys": {KEY_A: 2}, "NumNodes": 2, "Messages": {}}]
    assert gossip.ops == [("list", "")]


@pytest.mark.parametrize(("method", "op"), [("POST", "install"), ("PUT", "use"), ("DELETE", "remove")])
async def test_keyring_writes(client, gossip, method, op):
    gossip.report = KeyringReport(num_nodes=1, responses={"srv-1": ""})
    resp = await client.request(method, "/v1/operator/keyring", json={"Key": KEY_B})
    assert (resp.status, await resp.text()) == (200, "")
    assert gossip.ops == [(op, KEY_B)]


async def test_keyring_bad_input_is_400_before_anything_is_sent(client, gossip):
    cases = [(b"", "empty request body"), (b"[1]", "expected a JSON object"), (b"{}", 'missing "Key"'),
             (b'{"Key": "not base64!"}', "not valid base64"), (b'{"Key": "YWJj"}', "Invalid key size: 3 bytes")]
    for body, why in cases:
        resp = await client.post("/v1/operator/keyring", data=body)
        assert resp.status == 400 and why in await resp.text(), body
    resp = await client.get("/v1/operator/keyring?relay-factor=6")
    assert resp.status == 400 and "Relay factor must be in range: [0, 5]" in await resp.text()
    assert (await client.get("/v1/operator/keyring?relay-factor=x")).status == 400
    resp = await client.post("/v1/operator/keyring?local-only=true", json={"Key": KEY_A})
    assert resp.status == 400 and "local-only" in await resp.text()
    assert gossip.ops == []
    assert (await client.patch("/v1/operator/keyring")).status == 405


async def test_keyring_node_failures_are_500_in_consul_multierror_text(client, gossip):
    gossip.report = KeyringReport(num_nodes=3, responses={"srv-1": "", "cli-b": "Key not installed",
                                                          "cli-a": "no answer within 2s"})
    resp = await client.put("/v1/operator/keyring", json={"Key": KEY_B})
    assert resp.status == 500
    assert await resp.text() == ("3 errors occurred:\n\t* dc1 (LAN) error: 2/3 nodes reported failure\n"
                                 "\t* cli-a: no answer within 2s\n\t* cli-b: Key not installed\n\n")


async def test_keyring_without_encryption_is_500_like_serf(client, gossip):
    gossip.keyring = None
    resp = await client.get("/v1/operator/keyring")
    assert resp.status == 500
    assert await resp.text() == ("2 errors occurred:\n\t* dc1 (LAN) error: 1/1 nodes reported failure\n"
                                 "\t* srv-1: Keyring is empty (encryption not enabled)\n\n")
    resp = await client.post("/v1/operator/keyring", json={"Key": KEY_A})
    assert resp.status == 500 and "No keyring to modify (encryption not enabled)" in await resp.text()
    assert gossip.ops == []


async def test_keyring_error_from_the_node_is_400(client, gossip):
    async def refuse(op: str, key: str = "") -> KeyringReport:
        raise KeyringError("Removing the primary key is not allowed")

    gossip.keyring_operation = refuse  # type: ignore[method-assign]
    resp = await client.delete("/v1/operator/keyring", json={"Key": KEY_A})
    assert (resp.status, await resp.text()) == (400, "Removing the primary key is not allowed")
