"""`red run --out s3://...` and `red fetch` as a user runs them, against a real S3 wire-protocol server (moto's)."""

from __future__ import annotations

import json
import re

import pytest
import torch
from pyarrow import fs

from tests.runtime.conftest import example
from tests.runtime.test_cli import red, write

pytestmark = pytest.mark.ray


def listing(s3_server: str, uri: str) -> list[str]:
    s3fs = fs.S3FileSystem(endpoint_override=s3_server, region="us-east-1")
    root = uri[len("s3://") :]
    infos = s3fs.get_file_info(fs.FileSelector(root, recursive=True))
    return sorted(i.path[len(root) + 1 :] for i in infos if i.type == fs.FileType.File)


def test_a_run_to_object_storage_is_fetched_back_and_its_model_scores_the_reported_accuracy(tmp_path, s3, s3_server):
    out = f"{s3}/runs/digits"
    doc = example(rounds=3, **{"checkpoint.every": 1})
    proc = red("run", str(write(tmp_path, doc)), "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert f"results in {out}/" in proc.stderr
    stored = listing(s3_server, out)
    assert {"model.pt", "metrics.jsonl", "summary.json", "metrics.png", "nodes.json", "federation.yaml"} <= set(stored)
    assert [p for p in stored if p.startswith("checkpoints/")], stored

    proc = red("fetch", "--from", out, "--to", str(tmp_path / "fetched"), "--evaluate")
    assert proc.returncode == 0, proc.stderr
    reported = float(re.search(r"final accuracy (\d\.\d+)", proc.stdout).group(1))
    measured = float(re.search(r"on the test set: accuracy (\d\.\d+)", proc.stdout).group(1))
    summary = json.loads((tmp_path / "fetched" / "summary.json").read_text())
    assert reported == round(summary["final_accuracy"], 4) == measured and measured > 0.5, proc.stdout
    # What a user loads by hand: tensors only, so the safe loader takes it.
    state = torch.load(tmp_path / "fetched" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_a_run_resumes_from_the_checkpoints_in_object_storage_alone(tmp_path, s3, s3_server):
    out = f"{s3}/runs/resume"
    first = red("run", str(write(tmp_path, example(rounds=3, **{"checkpoint.every": 1}))), "--out", out)
    assert first.returncode == 0, first.stderr
    # A new machine: nothing local, only the bucket. Three more rounds continue the same training.
    more = write(tmp_path, example(rounds=6, **{"checkpoint.every": 1}), name="more.yaml")
    second = red("run", str(more), "--out", out, "--resume", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "resuming after round 3" in second.stderr
    fetched = tmp_path / "fetched"
    assert red("fetch", "--from", out, "--to", str(fetched)).returncode == 0
    rounds = [json.loads(line)["round"] for line in (fetched / "metrics.jsonl").read_text().splitlines()]
    assert rounds == [1, 2, 3, 4, 5, 6]


def test_a_bucket_that_does_not_exist_fails_before_any_work(tmp_path, s3):
    for resume in ([], ["--resume"]):
        proc = red("run", str(write(tmp_path, example(rounds=3))), "--out", "s3://no-such-bucket-here/x", *resume)
        assert proc.returncode == 2, proc.stderr
        assert "s3://no-such-bucket-here/x: the bucket 'no-such-bucket-here' does not exist" in proc.stderr
        assert "nodes on" not in proc.stderr, "no Ray was started"
