"""Gossip → catalog, end to end in simulation: real SWIM cores on the seeded fake network feed the
leader's `plan_member_reconcile`, applied to a real `StateStore` every 0.1 s of simulated time
(as the driver does on member events). Every assertion names its seed."""

from __future__ import annotations

import pytest

from agent.catalog.commands import DeregisterCommand, RegisterCommand
from agent.catalog.reconcile import MemberView, plan_member_reconcile
from agent.catalog.store import StateStore
from agent.gossip.messages import MemberState
from agent.types import SERF_CHECK_ID, NodeService
from checks.definition import Status
from tests.sim.swim_net import SwimNet

LEADER = "s0"


class Leader:
    """The leader's catalog, reconciled from its own gossip view."""

    def __init__(self, net: SwimNet) -> None:
        self.net = net
        self.store = StateStore()
        self.index = 0

    def reconcile(self) -> bool:
        views = [MemberView.from_member(m) for m in self.net.members[LEADER].swim.members()]
        for command in plan_member_reconcile(views, self.store, datacenter="dc1", local_node=LEADER):
            self.apply(command)
        return False  # keeps run_until going

    def apply(self, command: RegisterCommand | DeregisterCommand) -> None:
        self.index += 1
        if isinstance(command, RegisterCommand):
            self.store.ensure_registration(self.index, command)
        else:
            self.store.deregister(self.index, command)

    def serf(self, name: str) -> Status | None:
        check = self.store.check(name, SERF_CHECK_ID)
        return None if check is None else check.status

    def run_until(self, t_end: float, condition: object) -> bool:
        def step() -> bool:
            self.reconcile()
            return bool(condition())  # type: ignore[operator]
        return self.net.run_until(t_end, step)


def cluster(seed: int, clients: int) -> tuple[SwimNet, Leader, list[str]]:
    net = SwimNet(seed)
    net.add(LEADER, {"role": "consul", "dc": "dc1", "port": "8300", "id": "id-s0", "build": "1.0:waypost"})
    names = [f"c{i}" for i in range(clients)]
    for name in names:
        net.add(name, {"role": "node", "dc": "dc1", "id": f"id-{name}"})
        net.join(name, [LEADER])
    leader = Leader(net)
    everyone = [LEADER, *names]
    assert leader.run_until(10.0, lambda: all(leader.serf(n) == Status.PASSING for n in everyone)), \
        f"seed={seed}: not every member registered passing"
    for name in names:  # each agent's anti-entropy adds a service on its node
        node = leader.store.node_row(name)
        assert node is not None
        leader.apply(RegisterCommand(node, NodeService(id="web", service="web"), skip_node_update=True))
    return net, leader, names


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_crash_turns_serf_health_critical_and_restart_brings_it_back(seed: int) -> None:
    net, leader, names = cluster(seed, 5)
    start = net.now
    net.crash("c2")
    assert leader.run_until(start + 15.0, lambda: leader.serf("c2") == Status.CRITICAL), f"seed={seed}"
    took = net.now - start
    print(f"seed={seed}: c2 critical {took:.1f} s after the crash (simulated)")
    _, instances = leader.store.check_service_nodes("web")
    passing = sorted(n.node for n, _, checks in instances if all(c.status == Status.PASSING for c in checks))
    assert passing == sorted(n for n in names if n != "c2"), f"seed={seed}"
    assert leader.store.node_service("c2", "web") is not None  # failed: still in the catalog
    net.restart("c2", [LEADER])
    assert leader.run_until(net.now + 10.0, lambda: leader.serf("c2") == Status.PASSING), f"seed={seed}"


@pytest.mark.parametrize("seed", [31, 32])
def test_graceful_leave_deregisters_the_node(seed: int) -> None:
    net, leader, _ = cluster(seed, 4)
    net.act("c1", lambda swim, now: swim.leave(now))
    assert leader.run_until(net.now + 10.0, lambda: leader.store.node_row("c1") is None), f"seed={seed}"
    assert net.state(LEADER, "c1") == MemberState.LEFT
    assert leader.store.service_nodes("web")[1] and all(n.node != "c1" for n, _ in leader.store.service_nodes("web")[1])


@pytest.mark.parametrize("seed", [41])
def test_the_leaders_own_leave_never_deregisters_it(seed: int) -> None:
    net, leader, _ = cluster(seed, 3)
    net.act(LEADER, lambda swim, now: swim.leave(now))
    leader.run_until(net.now + 5.0, lambda: False)
    assert leader.store.node_row(LEADER) is not None, f"seed={seed}"
