"""The driver on a real Ray with real torch training."""

import signal
import time

import numpy as np
import pytest
import ray
from ray.util import placement_group_table

from red_api.spec import Topology, parse_manifest
from red_runtime.engine.driver import Driver
from red_runtime.engine.events import HEALTHY, PENDING, Reporter
from red_runtime.engine.stopping import Interrupted, StopRequest
from red_runtime.engine.topology import TopologyError, TopologyManager, build_graph
from tests.runtime.conftest import Recorder, example

pytestmark = pytest.mark.ray


def accuracies(rec):
    return [round(r.accuracy, 4) for r in rec.reports]


def test_digits_star_learns_and_is_reproducible(run_federation):
    first = run_federation(example())
    second = run_federation(example())
    assert first.summary.rounds_run == 20
    assert first.summary.final_accuracy >= 0.90
    assert accuracies(first) == accuracies(second)
    assert first.reports[-1].nodes_healthy == 8
    assert {n.state for n in first.nodes} == {HEALTHY}
    assert first.reports[0].loss > first.reports[-1].loss
    assert "eval_accuracy" in first.reports[-1].metrics  # the eval role reported from the nodes


def test_sharing_actors_gives_the_same_result_as_one_actor_per_node(run_federation):
    shared = run_federation(example(rounds=4, **{"nodes.resources": {"cpu": 1}}))  # 8 nodes in 2 actors
    own = run_federation(example(rounds=4, **{"nodes.resources": {"cpu": 0.25}}))  # 8 actors
    assert shared.info.slots == 2 and own.info.slots == 8
    assert accuracies(shared) == accuracies(own)
    np.testing.assert_allclose(shared.params, own.params, atol=1e-6)


def test_actors_and_node_data_are_built_lazily(run_federation):
    rec = run_federation(example(rounds=1, **{"nodes.resources": {"cpu": 0.25}, "algorithm.fraction": 0.25}))
    used = [n for n in rec.nodes if n.state == HEALTHY]
    assert len(used) == 2
    assert sum(n.state == PENDING for n in rec.nodes) == 6
    assert rec.summary.actors_started == 2  # one slot per sampled node, none for the others


def all_resources_returned(timeout_s: float = 30.0) -> bool:
    # Actor kills and group removal are asynchronous; wait for Ray to account for them.
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        free, total = ray.available_resources(), ray.cluster_resources()
        if free.get("CPU") == total.get("CPU") and free.get("memory") == total.get("memory"):
            return True
        time.sleep(0.2)
    return False


def test_nothing_is_left_after_a_run(run_federation):
    run_federation(example(rounds=2))
    assert all(pg["state"] == "REMOVED" for pg in placement_group_table().values())
    assert all_resources_returned()


def test_a_failed_run_also_cleans_up(run_federation):
    with pytest.raises(ValueError, match="spec.nodes.resources"):
        run_federation(example(**{"nodes.resources": {"cpu": 64}}))
    assert all(pg["state"] == "REMOVED" for pg in placement_group_table().values())
    assert all_resources_returned()


def test_manager_actor_refuses_a_non_neighbour(ray_cluster):
    g = build_graph(Topology(kind="star"), 3, 0)
    tm = ray.remote(TopologyManager).remote(list(g.edges), list(g.nodes), "star")
    ref = ray.put(np.zeros(3))
    assert ray.get(tm.post.remote(1, ["node-0"], ["server"], [ref])) == 1
    with pytest.raises(TopologyError, match="node-0 may not send to node-1"):
        ray.get(tm.post.remote(1, ["node-0"], ["node-1"], [ref]))
    ray.kill(tm)


@pytest.mark.parametrize(
    "name, topology",
    [
        ("ring", {"kind": "ring"}),
        ("hierarchical", {"kind": "hierarchical", "groups": 2}),
    ],
)
def test_other_schemas_run(run_federation, name, topology):
    rec = run_federation(example(rounds=3, topology=topology))
    assert rec.summary.rounds_run == 3
    assert rec.reports[-1].accuracy > rec.reports[0].accuracy - 0.05
    if name == "ring":
        assert "consensus_distance" in rec.reports[-1].metrics


def test_a_stop_while_the_actors_start_is_a_stop_not_a_failure(ray_cluster):
    """A SIGTERM (a deleted Pod) before round 1's actors have answered, its grace spent: the run stops in order."""

    class Stops(Recorder):
        stop_reason = None

        def stopped(self, reason):
            self.stop_reason = reason

    stop = StopRequest(grace_s=0)
    stop.request(signal.SIGTERM)
    rec = Stops()
    with pytest.raises(Interrupted):
        Driver(parse_manifest(example(rounds=2)), Reporter([rec]), stop=stop).run()
    assert rec.failure is None
    assert "stopped by signal SIGTERM" in rec.stop_reason and "round 1 abandoned" in rec.stop_reason
    assert rec.reports == []
