"""Vectorised training (vectorized.py, NodeHost's batched path) gives what the serial loop gives, to 1e-5 per
parameter, and falls back to the serial loop where it cannot run; `task.train.vectorize` in the spec."""

from __future__ import annotations

import copy
import logging
import time

import numpy as np
import pytest
import torch
from torch import nn

from red_api.manifest import load_manifest
from red_api.spec import Model, SpecError, Train, parse_manifest, parse_spec
from red_runtime.engine import node as node_module
from red_runtime.engine.node import NodeHost
from red_runtime.learn import vectorized
from red_runtime.learn.data import Arrays
from red_runtime.learn.models import build_model, get_flat, local_indices
from red_runtime.learn.training import LocalState, train_local
from red_runtime.learn.vectorized import Job, train_many

pytestmark = pytest.mark.unit

CPU = torch.device("cpu")
TOL = 1e-5
FEATURES, CLASSES = 20, 4
OPTIMIZERS = {
    "sgd": Train(epochs=2, batchSize=8, lr=0.1),
    "sgd-momentum-decay": Train(epochs=2, batchSize=8, lr=0.1, momentum=0.9, weightDecay=0.01),
    "adam": Train(epochs=2, batchSize=8, optimizer="adam", lr=0.01, weightDecay=0.01),
}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread, as a node actor with cpu: 1 has: on a busy machine, steps this small on more threads
    mostly wait for each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mlp() -> nn.Module:
    return build_model(Model(name="mlp", hidden=(16,)), (FEATURES,), CLASSES, seed=0)


def node_data(sizes: list[int], seed: int = 0) -> list[Arrays]:
    rng = np.random.default_rng(seed)
    return [
        Arrays(rng.normal(size=(n, FEATURES)).astype(np.float32), rng.integers(0, CLASSES, n).astype(np.int64))
        for n in sizes
    ]


def gen(node: int, round_no: int) -> torch.Generator:
    return torch.Generator().manual_seed(1000 * round_no + node)


def serial_round(model, starts, states, cfg, round_no):
    return [train_local(model, s, st, cfg, gen(i, round_no), CPU) for i, (s, st) in enumerate(zip(starts, states))]


def vector_round(model, starts, states, cfg, round_no):
    jobs = [Job(s, st, gen(i, round_no)) for i, (s, st) in enumerate(zip(starts, states))]
    return train_many(model, jobs, cfg, CPU)


def assert_same(serial, vector, serial_states, vector_states):
    for (p1, l1), (p2, l2) in zip(serial, vector):
        assert np.abs(p1 - p2).max() <= TOL
        assert abs(l1 - l2) <= TOL
    for a, b in zip(serial_states, vector_states):
        assert a.rounds_trained == b.rounds_trained
        assert (a.optimizer_state is None) == (b.optimizer_state is None)
        if a.optimizer_state is None:
            continue
        assert a.optimizer_state["param_groups"] == b.optimizer_state["param_groups"]
        assert a.optimizer_state["state"].keys() == b.optimizer_state["state"].keys()
        for i, entry in a.optimizer_state["state"].items():
            other = b.optimizer_state["state"][i]
            assert entry.keys() == other.keys()
            for kind, tensor in entry.items():
                assert tensor.dtype == other[kind].dtype and tensor.shape == other[kind].shape, kind
                assert torch.allclose(tensor, other[kind], atol=TOL, rtol=0), kind


def two_rounds(cfg: Train, sizes: list[int], paths: tuple[str, str]):
    """Two rounds of every node from the same start, each by the serial loop or the vectorised one (`paths`),
    against two serial rounds; the second starts from each node's first result, optimizer state carried."""
    model = mlp()
    start = get_flat(model)
    data = node_data(sizes)
    reference = [LocalState(train=d) for d in data]
    mixed = [LocalState(train=d) for d in data]
    runs = {"serial": serial_round, "vector": vector_round}
    starts_ref = starts_mix = [start] * len(sizes)
    for round_no, path in enumerate(paths, start=1):
        expected = serial_round(model, starts_ref, reference, cfg, round_no)
        got = runs[path](model, starts_mix, mixed, cfg, round_no)
        assert_same(expected, got, reference, mixed)
        starts_ref, starts_mix = [p for p, _ in expected], [p for p, _ in got]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_one_and_two_vectorised_rounds_match_the_serial_loop(name):
    two_rounds(OPTIMIZERS[name], [40, 40, 40, 40], ("vector", "vector"))


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_nodes_of_unequal_sizes_match_the_serial_loop(name):
    # Sizes that fall into several lockstep groups, with partial last batches and idle steps within a group.
    two_rounds(OPTIMIZERS[name], [3, 17, 40, 37, 64, 9, 8, 100], ("vector", "vector"))


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("paths", [("serial", "vector"), ("vector", "serial")])
def test_either_path_resumes_from_the_optimizer_state_the_other_saved(name, paths):
    two_rounds(OPTIMIZERS[name], [24, 31, 40], paths)


def test_the_built_in_cnn_matches_the_serial_loop():
    model = build_model(Model(name="cnn", channels=(4, 8)), (1, 8, 8), CLASSES, seed=0)
    rng = np.random.default_rng(0)
    data = [Arrays(rng.random((n, 1, 8, 8), dtype=np.float32), rng.integers(0, CLASSES, n)) for n in (24, 24, 19)]
    serial, vector = [LocalState(train=d) for d in data], [LocalState(train=d) for d in data]
    start = [get_flat(model)] * 3
    cfg = OPTIMIZERS["adam"]
    assert_same(serial_round(model, start, serial, cfg, 1), vector_round(model, start, vector, cfg, 1), serial, vector)


def test_a_node_first_trained_in_a_later_round_joins_nodes_with_state():
    cfg = OPTIMIZERS["adam"]
    model, data = mlp(), node_data([32, 32, 32])
    start = get_flat(model)
    serial = [LocalState(train=d) for d in data]
    vector = [LocalState(train=d) for d in data]
    train_local(model, start, serial[0], cfg, gen(0, 1), CPU)
    train_many(model, [Job(start, vector[0], gen(0, 1))], cfg, CPU)
    expected = serial_round(model, [start] * 3, serial, cfg, 2)
    got = vector_round(model, [start] * 3, vector, cfg, 2)
    assert_same(expected, got, serial, vector)


def test_the_auto_rule_is_by_device_and_work_per_step():
    small, big = mlp(), build_model(Model(name="mlp", hidden=(128,)), (784,), 10, seed=0)
    assert vectorized.auto_group(small, Train(), CPU) == vectorized.AUTO_CPU_NODES
    assert vectorized.auto_group(big, Train(batchSize=32), CPU) is None
    assert vectorized.auto_group(big, Train(batchSize=32), torch.device("cuda")) == vectorized.AUTO_GPU_NODES


def test_lockstep_groups_keep_like_sizes_together_within_the_limit():
    assert vectorized.groups([4, 4, 4, 1, 4], limit=10) == [[0, 1, 2, 4], [3]]
    assert vectorized.groups([10, 9, 8, 7], limit=10) == [[0, 1, 2], [3]]
    assert vectorized.groups([2, 2, 2], limit=2) == [[0, 1], [2]]


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight

    def forward(self, x):
        return self.b(self.a(x))


class Frozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.a.bias.requires_grad_(False)

    def forward(self, x):
        return self.a(x)


@pytest.mark.parametrize(
    "model, reason",
    [
        (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "buffers"),
        (Tied(), "shared"),
        (Frozen(), "frozen"),
    ],
)
def test_what_cannot_be_stacked_is_named(model, reason):
    assert reason in vectorized.unsupported(model)


def test_a_plain_model_can_be_stacked():
    assert vectorized.unsupported(mlp()) is None
    cnn = build_model(Model(name="cnn", channels=(2,)), (1, 8, 8), 10, seed=0)
    assert vectorized.unsupported(cnn) is None


def test_saved_state_fits_only_the_same_optimizer_settings():
    cfg = OPTIMIZERS["sgd-momentum-decay"]
    model, (data,) = mlp(), node_data([16])
    state = LocalState(train=data)
    train_local(model, get_flat(model), state, cfg, gen(0, 1), CPU)
    count = len(list(model.parameters()))
    assert vectorized.fits(None, cfg, count)
    assert vectorized.fits(state.optimizer_state, cfg, count)
    # A checkpoint's older learning rate, which load_state_dict would bring back: the serial loop's to do.
    assert not vectorized.fits(state.optimizer_state, Train(lr=0.2, momentum=0.9, weightDecay=0.01), count)
    assert not vectorized.fits(state.optimizer_state, OPTIMIZERS["adam"], count)


class ItemForward(nn.Module):
    """A plain module whose forward reads a tensor's value, which vmap refuses."""

    def __init__(self, input_shape=(FEATURES,), classes=CLASSES):
        super().__init__()
        self.fc = nn.Linear(int(np.prod(input_shape)), classes)

    def forward(self, x):
        return self.fc(x) * (1.0 if float(x.sum()) > -1e9 else 0.0)


def test_a_forward_vmap_refuses_raises_and_leaves_the_states_as_they_were():
    model, data = ItemForward(), node_data([16, 16])
    states = [LocalState(train=d) for d in data]
    with pytest.raises(RuntimeError):
        vector_round(model, [get_flat(model)] * 2, states, OPTIMIZERS["adam"], 1)
    assert all(s.optimizer_state is None and s.rounds_trained == 0 for s in states)


# NodeHost without Ray: the manager's inbox and posts and ray.get replaced by plain values.


def spec_with(vectorize: str, model: str = "mlp", **algorithm):
    return parse_spec(
        {
            "nodes": {"count": 8},
            "algorithm": {"name": "fedavg", **algorithm},
            "task": {"model": {"name": model, "hidden": [16]}, "train": {**TRAIN_DOC, "vectorize": vectorize}},
        }
    )


TRAIN_DOC = {"epochs": 2, "batchSize": 8, "optimizer": "adam", "lr": 0.01}


class Sent:
    """Stands for the object ref of the model the server sent."""

    def __init__(self, value):
        self.value = value


class Host(NodeHost):
    """A NodeHost with its nodes' data given, that posts to a list."""

    def __init__(self, spec, model, data, monkeypatch):
        self.spec, self.slot, self.manager, self.source = spec, 0, None, None
        self.device = CPU
        self.model = model
        self.unbatched = self._unbatched()
        self._said = set()
        self.states = {i: LocalState(train=d) for i, d in enumerate(data)}
        self.adversaries, self.slow = frozenset(), frozenset()
        self.local_idx = local_indices(model, spec.task.model.personal, spec.task.model.localNorm)
        self.incarnation = "test"
        self.posts = []
        # ray.get gives what a Sent holds, and anything else (the list of posts) as it is.
        monkeypatch.setattr(node_module.ray, "get", lambda ref: ref.value if isinstance(ref, Sent) else ref)

    def _inbox(self, round_no, indices):
        sent = Sent(self.received)
        return {i: [(("server",), [sent])] for i in indices}

    def _post(self, round_no, srcs, dsts, update, results):
        self.posts.append((update, results))

    def round(self, received, round_no=1, proximal_mu=0.0):
        """Train every hosted node once; their updates by node id."""
        self.received, self.posts = received, []
        indices = sorted(self.states)
        assert self.train(
            round_no, indices, {i: "server" for i in indices}, False, proximal_mu, time.time() + 600
        ) == len(indices)
        return {u.nodes[0]: u.params for u, _ in self.posts}


def hosts(monkeypatch, vectorize: str, sizes: list[int], model=None, **algorithm):
    model = model or mlp()
    spec = spec_with(vectorize, **algorithm)
    return Host(spec, model, node_data(sizes), monkeypatch), Host(
        spec_with("never"), copy.deepcopy(model), node_data(sizes), monkeypatch
    )


def counting(monkeypatch):
    calls = []
    real = vectorized.train_many

    def train_many(model, jobs, cfg, device):
        calls.append(len(jobs))
        return real(model, jobs, cfg, device)

    monkeypatch.setattr(vectorized, "train_many", train_many)
    return calls


def assert_updates_match(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert np.abs(a[key] - b[key]).max() <= TOL, key


@pytest.mark.parametrize("vectorize", ["always", "auto"])
def test_a_node_host_trains_four_nodes_together_as_the_serial_loop_does(monkeypatch, vectorize):
    calls = counting(monkeypatch)
    host, serial = hosts(monkeypatch, vectorize, [40, 40, 40, 40])
    start = get_flat(host.model)
    for round_no in (1, 2):
        got, expected = host.round(start, round_no), serial.round(start, round_no)
        assert_updates_match(got, expected)
        start = np.mean(list(got.values()), axis=0)
    assert calls == [4, 4]


def test_auto_trains_too_few_nodes_one_by_one_and_says_so_once(monkeypatch, caplog):
    calls = counting(monkeypatch)
    host, serial = hosts(monkeypatch, "auto", [40, 40])
    start = get_flat(host.model)
    with caplog.at_level(logging.INFO, logger="red.node"):
        assert_updates_match(host.round(start), serial.round(start))
        host.round(start, 2)
    assert calls == []
    said = [r.getMessage() for r in caplog.records if "one by one" in r.getMessage()]
    assert len(said) == 1 and "fewer than 4" in said[0]


@pytest.mark.parametrize(
    "algorithm, proximal_mu, reason",
    [({"name": "fedprox", "options": {"mu": 0.1}}, 0.1, "proximal"), ({"name": "scaffold"}, 0.0, "SCAFFOLD")],
)
def test_per_step_terms_train_one_by_one(monkeypatch, caplog, algorithm, proximal_mu, reason):
    calls = counting(monkeypatch)
    host, _ = hosts(monkeypatch, "always", [16, 16, 16, 16], **algorithm)
    with caplog.at_level(logging.INFO, logger="red.node"):
        start = get_flat(host.model)
        # SCAFFOLD's server sends [model, control variate].
        host.round(np.concatenate([start, np.zeros_like(start)]) if reason == "SCAFFOLD" else start, 1, proximal_mu)
    assert calls == []
    assert any(reason in r.getMessage() for r in caplog.records)


def test_a_model_vmap_refuses_falls_back_to_the_serial_result_and_says_why_once(monkeypatch, caplog):
    model = ItemForward()
    host, serial = hosts(monkeypatch, "always", [16, 16, 16], model=model)
    start = get_flat(model)
    with caplog.at_level(logging.WARNING, logger="red.node"):
        assert_updates_match(host.round(start), serial.round(start))
        assert_updates_match(host.round(start, 2), serial.round(start, 2))
    assert host.unbatched.startswith("training them together failed")
    assert [r.getMessage() for r in caplog.records].count(
        f"node actor 0 trains nodes one by one: {host.unbatched}"
    ) == 1


def test_a_model_with_buffers_trains_one_by_one(monkeypatch):
    calls = counting(monkeypatch)
    model = nn.Sequential(nn.Linear(FEATURES, 8), nn.BatchNorm1d(8), nn.Linear(8, CLASSES))
    host, serial = hosts(monkeypatch, "always", [16, 16], model=model)
    assert "buffers" in host.unbatched
    start = get_flat(model)
    assert_updates_match(host.round(start), serial.round(start))
    assert calls == []


# The spec.


@pytest.mark.parametrize("value", ["auto", "always", "never"])
def test_vectorize_takes_its_three_words(value):
    assert parse_spec({"task": {"train": {"vectorize": value}}}).task.train.vectorize == value


def test_vectorize_defaults_to_auto():
    assert parse_spec({}).task.train.vectorize == "auto"


def manifest(train: dict) -> dict:
    return {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": "f"},
        "spec": {"task": {"train": train}},
    }


@pytest.mark.parametrize("value", ["sometimes", "on", "Always", "", 1, None, False])
def test_another_vectorize_value_is_refused_naming_the_field_and_value(value):
    with pytest.raises(SpecError) as err:
        parse_manifest(manifest({"vectorize": value}))
    (problem,) = err.value.problems
    assert problem.startswith(f"spec.task.train.vectorize: {value!r}: ")


def test_yaml_on_and_off_are_booleans_and_refused_as_such(tmp_path):
    path = tmp_path / "fed.yaml"
    path.write_text(
        "apiVersion: red.dev/v1alpha1\nkind: Federation\nmetadata: {name: f}\nspec: {task: {train: {vectorize: on}}}\n"
    )
    with pytest.raises(SpecError) as err:
        load_manifest(str(path))
    assert err.value.problems == ["spec.task.train.vectorize: True: must be one of auto, always, never, not a boolean"]
