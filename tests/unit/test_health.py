"""Node health from process ids, with a fake ping: restarts, stragglers, slots gone for good."""

import pytest

from red_runtime.engine.events import FAILED, HEALTHY, RESTARTING, STRAGGLING, NodeStatus
from red_runtime.engine.health import HealthMonitor, SlotGone

pytestmark = pytest.mark.unit
SLOTS = 2


class FakeActors:
    """incarnation per slot; a slot in `dead` has no actor any more."""

    def __init__(self):
        self.incarnations = {0: "a0", 1: "b0"}
        self.dead: set[int] = set()

    def ping(self, slot, startup=False):
        if slot in self.dead:
            raise SlotGone(f"slot {slot} died")
        return self.incarnations[slot]


def monitor(actors, count=6):
    nodes = [NodeStatus(id=f"node-{i}") for i in range(count)]
    return HealthMonitor(nodes, lambda s: list(range(s, count, SLOTS)), lambda i: i % SLOTS, actors.ping), nodes


def rows(indices, actors):
    return [{"index": i, "incarnation": actors.incarnations[i % SLOTS]} for i in indices]


def test_reporting_nodes_are_healthy_and_late_ones_straggle():
    actors = FakeActors()
    health, nodes = monitor(actors)
    for slot in range(SLOTS):
        health.started(slot)
    assert health.round_done(1, rows([0, 1, 2, 3, 5], actors), straggling={4}, crashed=set()) == []
    assert [n.state for n in nodes] == [HEALTHY] * 4 + [STRAGGLING, HEALTHY]
    assert nodes[0].lastRound == 1 and nodes[4].lastRound == 0


def test_a_new_incarnation_is_a_restart_for_every_node_of_that_slot():
    actors = FakeActors()
    health, nodes = monitor(actors)
    for slot in range(SLOTS):
        health.started(slot)
    health.round_done(1, rows(range(6), actors), set(), set())
    actors.incarnations[1] = "b1"  # Ray restarted slot 1's actor
    health.round_done(2, rows(range(6), actors), set(), set())
    assert [n.restarts for n in nodes] == [0, 1, 0, 1, 0, 1]
    assert [n.state for n in nodes] == [HEALTHY, RESTARTING] * 3
    health.round_done(3, rows(range(6), actors), set(), set())
    assert [n.state for n in nodes] == [HEALTHY] * 6 and nodes[1].restarts == 1


def test_a_crashed_slot_that_comes_back_counts_a_restart_and_one_that_does_not_fails_its_nodes():
    actors = FakeActors()
    health, nodes = monitor(actors)
    for slot in range(SLOTS):
        health.started(slot)
    actors.incarnations[0] = "a1"
    actors.dead.add(1)
    gone = health.round_done(1, [], straggling=set(), crashed={0, 1, 2, 3, 4, 5})
    assert gone == ["node-1", "node-3", "node-5"]
    assert [n.state for n in nodes] == [RESTARTING, FAILED] * 3
    assert health.failed_indices() == {1, 3, 5} and health.dead_slots == {1}
    assert health.round_done(2, [], set(), crashed={1}) == [], "a dead slot is not pinged again"
