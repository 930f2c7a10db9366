"""Topology graphs, mixing weights and the manager's neighbour enforcement (no Ray needed here)."""

import networkx as nx
import numpy as np
import pytest

from red_api.spec import Topology
from red_runtime.engine.topology import (
    SERVER,
    TopologyError,
    TopologyManager,
    build_graph,
    datasize_weights,
    metropolis_weights,
    node_id,
)

pytestmark = pytest.mark.unit


def nodes_only(g):
    return g.subgraph([n for n in g if n.startswith("node-")])


def test_star_connects_every_node_to_the_server_only():
    g = build_graph(Topology(kind="star"), 5, seed=0)
    assert g.degree[SERVER] == 5
    assert all(g.degree[node_id(i)] == 1 for i in range(5))


def test_ring_mesh_kregular_degrees_and_connectivity():
    ring = build_graph(Topology(kind="ring"), 6, 0)
    assert {d for _, d in ring.degree} == {2} and nx.is_connected(ring)
    mesh = build_graph(Topology(kind="mesh"), 6, 0)
    assert {d for _, d in mesh.degree} == {5}
    kreg = build_graph(Topology(kind="kregular", degree=3), 8, 0)
    assert {d for _, d in kreg.degree} == {3} and nx.is_connected(kreg)
    assert sorted(kreg.edges) == sorted(build_graph(Topology(kind="kregular", degree=3), 8, 0).edges)


def test_kregular_that_cannot_exist_is_refused():
    with pytest.raises(ValueError, match="spec.topology.degree"):
        build_graph(Topology(kind="kregular", degree=3), 7, 0)


def test_custom_and_hierarchical():
    custom = build_graph(Topology(kind="custom", edges=((0, 1), (1, 2), (2, 3))), 4, 0)
    assert custom.has_edge("node-0", "node-1") and not custom.has_edge("node-0", "node-3")
    hier = build_graph(Topology(kind="hierarchical", groups=2), 6, 0)
    assert sorted(hier.neighbors(SERVER)) == ["agg-0", "agg-1"]
    assert sorted(hier.neighbors("agg-1")) == ["node-1", "node-3", "node-5", SERVER]
    assert nx.is_connected(hier)


@pytest.mark.parametrize(
    "topology", [Topology(kind="ring"), Topology(kind="kregular", degree=3), Topology(kind="mesh")]
)
def test_metropolis_mixing_preserves_the_average(topology):
    g = build_graph(topology, 8, 1)
    ids = [node_id(i) for i in range(8)]
    w = np.array([[metropolis_weights(g, a).get(b, 0.0) for b in ids] for a in ids])
    np.testing.assert_allclose(w.sum(axis=0), 1.0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0)
    x = np.random.default_rng(0).standard_normal((8, 3))
    mixed = w @ x
    np.testing.assert_allclose(mixed.mean(axis=0), x.mean(axis=0))
    # and repeated mixing reaches consensus
    for _ in range(200):
        mixed = w @ mixed
    np.testing.assert_allclose(mixed, np.tile(x.mean(axis=0), (8, 1)), atol=1e-6)


def test_datasize_weights_follow_sample_counts():
    g = build_graph(Topology(kind="ring"), 4, 0)
    sizes = {"node-0": 10, "node-1": 30, "node-2": 50, "node-3": 60}
    w = datasize_weights(g, "node-0", sizes)
    assert w == pytest.approx({"node-0": 0.1, "node-1": 0.3, "node-3": 0.6})


def test_manager_enforces_edges_and_rounds():
    g = build_graph(Topology(kind="star"), 3, 0)
    tm = TopologyManager(list(g.edges), list(g.nodes), "star")
    tm.post(1, [SERVER], ["node-0", "node-1"], ["model"])
    with pytest.raises(TopologyError, match="node-0 may not send to node-1"):
        tm.post(1, ["node-0"], ["node-1"], ["update"])
    with pytest.raises(TopologyError):
        tm.post(1, ["node-0", "node-2"], ["node-1"], ["pooled"])
    tm.post(0, [SERVER], ["node-2"], ["stale"])
    box = tm.collect(1, ["node-0", "node-2"])
    assert box["node-0"] == [((SERVER,), ["model"])]
    assert box["node-2"] == []  # a message from an earlier round is dropped
    assert tm.collect(1, ["node-0"])["node-0"] == []  # collecting empties the mailbox
    tm.post(3, [SERVER], ["node-1"], ["round-3 model"])
    assert tm.collect(2, ["node-1"])["node-1"] == []  # a straggler's stale call for round 2...
    assert tm.collect(3, ["node-1"])["node-1"] == [((SERVER,), ["round-3 model"])]  # ...leaves round 3's
