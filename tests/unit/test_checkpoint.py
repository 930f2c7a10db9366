"""Checkpoint files: atomic writes, a torn newest file, another Federation's files, pruning, safe loading."""

import hashlib
import json
import pickle

import numpy as np
import pytest
import torch

from red_api.spec import parse_spec
from red_runtime.engine import checkpoint

SPEC = parse_spec({"rounds": 10})
DIGEST = checkpoint.training_digest(SPEC)

pytestmark = pytest.mark.unit


def ckpt(round_no, owner="uid-a"):
    return checkpoint.Checkpoint(
        round=round_no, params=np.full(3, round_no, np.float32), federation=owner, training=DIGEST
    )


def test_the_newest_readable_checkpoint_of_this_federation_wins(tmp_path):
    for r in (1, 2, 3):
        checkpoint.save(tmp_path, ckpt(r), keep=3)
    newest = checkpoint.path_for(tmp_path, 3, "uid-a")
    newest.write_bytes(newest.read_bytes()[:100])  # torn by a crash on a volume without atomic rename
    got = checkpoint.latest(tmp_path, "uid-a", DIGEST)
    assert got.round == 2 and np.array_equal(got.params, np.full(3, 2, np.float32))
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_a_recreated_federation_does_not_resume_its_predecessor(tmp_path):
    checkpoint.save(tmp_path, ckpt(5, owner="uid-old"), keep=3)
    assert checkpoint.latest(tmp_path, "uid-new", DIGEST) is None
    assert checkpoint.latest(tmp_path, "uid-old", DIGEST).round == 5


def test_only_the_newest_keep_checkpoints_stay(tmp_path):
    for r in range(1, 6):
        checkpoint.save(tmp_path, ckpt(r), keep=2)
    assert checkpoint.rounds_in(tmp_path, "uid-a") == [4, 5]


def test_more_rounds_continue_but_another_model_starts_afresh(tmp_path):
    checkpoint.save(tmp_path, ckpt(5), keep=3)
    longer = parse_spec({"rounds": 30, "algorithm": {"targetAccuracy": 0.97}, "nodes": {"resources": {"cpu": 2}}})
    other_model = parse_spec({"rounds": 10, "task": {"model": {"name": "logreg"}}})
    assert checkpoint.latest(tmp_path, "uid-a", checkpoint.training_digest(longer)).round == 5
    assert checkpoint.latest(tmp_path, "uid-a", checkpoint.training_digest(other_model)) is None


class Planted:
    """What a hostile neighbour in a shared folder might plant: unpickling it runs code."""

    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('PWNED').write_text('ran')",))


def test_a_planted_pickle_is_never_unpickled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint.save(tmp_path, ckpt(1), keep=3)
    tensors = checkpoint.path_for(tmp_path, 2, "uid-a")
    tensors.write_bytes(pickle.dumps(Planted()))
    meta = json.loads(checkpoint.path_for(tmp_path, 1, "uid-a").with_suffix(".json").read_text())
    meta.update(round=2, tensors=tensors.name)
    meta["sha256"] = hashlib.sha256(tensors.read_bytes()).hexdigest()  # even with a matching checksum
    tensors.with_suffix(".json").write_text(json.dumps(meta))
    got = checkpoint.latest(tmp_path, "uid-a", DIGEST)
    assert got.round == 1
    assert not (tmp_path / "PWNED").exists()


def test_state_round_trips_as_tensors_and_json(tmp_path):
    momentum = {"state": {0: {"momentum_buffer": torch.ones(3)}}, "param_groups": [{"lr": 0.1, "params": [0]}]}
    saved = checkpoint.Checkpoint(
        round=4,
        params=np.arange(3, dtype=np.float32),
        strategy={"m": np.ones(3), "v": None},
        history=[{"round": 4, "loss": float("nan"), "accuracy": 0.5}],
        nodes=[{"id": "node-0", "state": "Healthy"}],
        node_states={7: {"params": np.zeros(2, np.float32), "optimizer_state": momentum}},
        federation="uid-a",
        training=DIGEST,
    )
    path = checkpoint.save(tmp_path, saved, keep=3)
    torch.load(path, weights_only=True)  # nothing in it needs the unsafe loader
    meta = json.loads(path.with_suffix(".json").read_text())  # strict JSON: the NaN loss is null
    assert meta["history"][0]["loss"] is None
    got = checkpoint.latest(tmp_path, "uid-a", DIGEST)
    assert np.array_equal(got.params, saved.params) and got.params.dtype == np.float32
    assert np.array_equal(got.strategy["m"], np.ones(3)) and got.strategy["v"] is None
    assert np.array_equal(got.node_states[7]["params"], np.zeros(2, np.float32))
    assert torch.equal(got.node_states[7]["optimizer_state"]["state"][0]["momentum_buffer"], torch.ones(3))


def test_pruning_spares_other_federations_and_foreign_files(tmp_path):
    for r in range(1, 4):
        checkpoint.save(tmp_path, ckpt(r, owner="uid-b"), keep=3)
    foreign = tmp_path / "round-000001.pt"  # a file of the same shape that Red did not write
    foreign.write_bytes(b"someone else's")
    for r in range(1, 6):
        checkpoint.save(tmp_path, ckpt(r), keep=1)
    assert checkpoint.rounds_in(tmp_path, "uid-a") == [5]
    assert checkpoint.rounds_in(tmp_path, "uid-b") == [1, 2, 3]
    assert foreign.read_bytes() == b"someone else's"
    assert checkpoint.latest(tmp_path, "uid-b", DIGEST).round == 3


def test_a_checkpoint_keeps_the_global_model_by_name(tmp_path):
    from torch import nn

    from red_runtime.learn.models import get_flat, layout

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    saved = checkpoint.Checkpoint(
        round=2, params=get_flat(model), federation="uid-a", training=DIGEST, layout=layout(model)
    )
    path = checkpoint.save(tmp_path, saved, keep=3)
    stored = torch.load(path, weights_only=True)["model"]
    assert torch.equal(stored["1.running_var"]["__ndarray__"], model[1].running_var)
    assert list(stored) == [k for k, v in model.state_dict().items() if v.is_floating_point()]
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["layout"][4] == ["1.running_mean", [4], True]
    got = checkpoint.latest(tmp_path, "uid-a", DIGEST)
    np.testing.assert_array_equal(got.params, saved.params)
