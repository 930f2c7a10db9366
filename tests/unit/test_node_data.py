"""What a node actor keeps of its nodes' data does not grow with copies of it: a node's share of a pooled dataset
is an index into the one pool, and generated data is made again from (seed, node) unless the actor holds it
(`task.dataset.cache`). The data a node trains on is the same either way."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from red_api.spec import SpecError, parse_spec
from red_runtime.engine.node import NodeHost, round_generator
from red_runtime.learn.data import AUTO_CACHE_BYTES, DataSource, Rows, holds_generated
from red_runtime.learn.training import local_splits, train_local

pytestmark = pytest.mark.unit


def spec(nodes: int, dataset: dict, role: str = "train", attack: dict | None = None):
    doc = {
        "nodes": {"count": nodes, "role": role, **({"adversaries": attack} if attack else {})},
        "task": {"dataset": dataset, "partition": {"kind": "dirichlet", "alpha": 0.5}, "model": {"name": "mlp"}},
    }
    return parse_spec(doc)


def synthetic(cache: str, samples: int = 64, features: int = 100) -> dict:
    return {"name": "synthetic", "samplesPerNode": samples, "features": features, "cache": cache}


def host_for(s, slots: int = 1, slot: int = 0) -> NodeHost:
    """A NodeHost's data path without Ray: its DataSource, cache decision and lazily built node states."""
    host = object.__new__(NodeHost)
    host.spec = s
    host.source = DataSource(s.task, s.nodes.count)
    host.source.prepare()
    host.source.hold_for(list(range(slot, s.nodes.count, slots)))
    host.states = {}
    host.adversaries = frozenset()
    return host


def touch_every_node(host: NodeHost) -> None:
    """Build every node's state and take its data as training and evaluation do, round after round."""
    for _ in range(2):
        for index in range(host.spec.nodes.count):
            state = host._state(index)
            for part in (state.train, state.eval, state.test):
                if part is not None:
                    part.arrays()


# What a node's state costs besides its data: LocalState, Rows and its index or slice (about a kilobyte).
PER_NODE_STATE = 2048


def traced_bytes(work) -> int:
    """Bytes still allocated once `work` is done (numpy reports its buffers to tracemalloc)."""
    tracemalloc.start()
    try:
        keep = work()
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del keep
    return current


def data_bytes(s) -> int:
    source = DataSource(s.task, s.nodes.count)
    return sum(source.node_data(i).x.nbytes + source.node_data(i).y.nbytes for i in range(s.nodes.count))


@pytest.mark.parametrize("cache", ["never", "auto"])
def test_generated_data_is_made_again_not_held(cache):
    s = spec(2000, synthetic(cache))
    total = 2000 * 64 * (100 * 4 + 8)
    if cache == "auto":  # over the budget, so auto makes it again too
        s = spec(2000, synthetic(cache, samples=64, features=(AUTO_CACHE_BYTES // (2000 * 64 * 4)) + 1))
        total = 2000 * 64 * (s.task.dataset.features * 4 + 8)

    def work():
        host = host_for(s)
        touch_every_node(host)
        return host

    held = traced_bytes(work)
    # Each node's state (a few small Python objects) and the one node used last: a few percent of the data.
    one_node = total // 2000
    assert held < 2000 * PER_NODE_STATE + one_node, (held, total)
    assert held < total / 20


def test_cache_always_holds_generated_data_and_the_measure_sees_it():
    s = spec(500, synthetic("always"))

    def work():
        host = host_for(s)
        touch_every_node(host)
        return host

    assert traced_bytes(work) > 500 * 64 * 100 * 4


def test_a_pooled_nodes_data_is_an_index_into_the_one_pool():
    s = spec(10, {"name": "digits"}, role="train-eval-test")
    host = host_for(s)
    pool = host.source.pool()
    pool_bytes = pool.x.nbytes + pool.y.nbytes

    def work():
        touch_every_node(host)
        return host

    held = traced_bytes(work)
    # Copies of every node's share would be the pool again (less its test split); what is held is the indices.
    indices = sum(len(p) * 8 for st in host.states.values() for p in (st.train, st.eval, st.test))
    assert held < indices + 10 * PER_NODE_STATE < pool_bytes / 10, (held, pool_bytes)
    rows = host.states[3].train
    assert isinstance(rows, Rows) and rows.load() is pool


@pytest.mark.parametrize("dataset", [{"name": "digits"}, synthetic("never")], ids=["digits", "synthetic"])
def test_rows_give_the_nodes_data_as_before(dataset):
    s = spec(20, dataset, role="train-eval")
    source = DataSource(s.task, s.nodes.count)
    for index in range(s.nodes.count):
        rows, copied = source.node_rows(index), source.node_data(index)
        taken = rows.arrays()
        np.testing.assert_array_equal(taken.x, copied.x)
        np.testing.assert_array_equal(taken.y, copied.y)
        a, b = local_splits(rows, s.nodes.roles, s.task.seed, index), local_splits(copied, s.nodes.roles, 0, index)
        np.testing.assert_array_equal(a.eval.arrays().x, b.eval.x)
        np.testing.assert_array_equal(a.train.arrays().y, b.train.y)


def test_training_from_regenerated_data_equals_training_from_held_data():
    s = spec(4, synthetic("never"))
    held, again = host_for(s), host_for(spec(4, synthetic("always")))
    model = torch.nn.Sequential(torch.nn.Linear(100, 10))
    start = torch.nn.utils.parameters_to_vector(model.parameters()).detach().numpy()
    for index in range(4):
        a, _ = train_local(model, start, held._state(index), s.task.train, round_generator(0, index, 1), "cpu")
        b, _ = train_local(model, start, again._state(index), s.task.train, round_generator(0, index, 1), "cpu")
        np.testing.assert_array_equal(a, b)


def test_labelflip_relabels_the_rows_it_indexes():
    s = spec(10, {"name": "digits"}, attack={"count": 9, "attack": "labelflip"})
    host = host_for(s)
    host.adversaries = frozenset(range(10))
    honest = DataSource(s.task, s.nodes.count).node_data(2).y
    np.testing.assert_array_equal(host._state(2).train.arrays().y, 9 - honest)


def test_auto_holds_what_fits_its_budget():
    assert holds_generated("auto", AUTO_CACHE_BYTES) and not holds_generated("auto", AUTO_CACHE_BYTES + 1)
    assert holds_generated("always", 10 * AUTO_CACHE_BYTES) and not holds_generated("never", 1)
    # A thousand reference nodes (512 x 784) in two actors are held under auto, ten thousand are not.
    reference = 512 * (784 * 4 + 8)
    assert holds_generated("auto", 500 * reference) and not holds_generated("auto", 5000 * reference)


@pytest.mark.parametrize("value", ["sometimes", True])
def test_a_bad_cache_names_the_field(value):
    with pytest.raises(SpecError, match=r"spec.task.dataset.cache"):
        spec(4, {**synthetic("auto"), "cache": value})
