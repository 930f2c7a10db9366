"""Checkpoint files: atomic writes, a torn newest file, another Federation's files, pruning."""

import numpy as np
import pytest

from red_runtime import checkpoint
from red_runtime.spec import parse_spec

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
    newest = checkpoint.path_for(tmp_path, 3)
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
    assert checkpoint.rounds_in(tmp_path) == [4, 5]


def test_more_rounds_continue_but_another_model_starts_afresh(tmp_path):
    checkpoint.save(tmp_path, ckpt(5), keep=3)
    longer = parse_spec({"rounds": 30, "algorithm": {"targetAccuracy": 0.97}, "nodes": {"resources": {"cpu": 2}}})
    other_model = parse_spec({"rounds": 10, "task": {"model": {"name": "logreg"}}})
    assert checkpoint.latest(tmp_path, "uid-a", checkpoint.training_digest(longer)).round == 5
    assert checkpoint.latest(tmp_path, "uid-a", checkpoint.training_digest(other_model)) is None
