"""`red tune` as a user runs it: a real Ray Tune sweep in which every trial is a whole federation."""

import csv

import pytest
import torch
import yaml

from tests.runtime.conftest import example
from tests.runtime.test_cli import red, write

pytestmark = pytest.mark.ray


def test_a_sweep_over_the_learning_rate_finds_a_good_one_and_asha_stops_weak_trials(tmp_path, mlflow_server):
    doc = example(rounds=8, **{"nodes.count": 4, "task.train.epochs": 3})
    out = tmp_path / "sweep"
    proc = red(
        "tune", str(write(tmp_path, doc)), "--param", "task.train.lr=loguniform:1e-3:0.5", "--samples", "8",
        "--out", str(out), "--mlflow", mlflow_server, timeout=840,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 8 and len({r["task.train.lr"] for r in rows}) == 8
    finished = [r for r in rows if r["stopped_early"] == "false" and not r["error"]]
    assert max(float(r["accuracy"]) for r in finished) >= 0.93
    stopped = [r for r in rows if r["stopped_early"] == "true"]
    assert stopped and all(int(r["rounds_run"]) < 8 for r in stopped)
    best = max(finished, key=lambda r: float(r["accuracy"]))
    assert f"best trial {best['trial']}" in proc.stderr
    # The best trial's run folder, complete: its model loads as tensors only.
    state = torch.load(out / "best" / "model.pt", weights_only=True)
    assert any(k.endswith("weight") for k in state)
    kept = yaml.safe_load((out / "best" / "federation.yaml").read_text())
    assert kept["spec"]["task"]["train"]["lr"] == pytest.approx(float(best["task.train.lr"]), rel=1e-5)
    assert (out / "trials.png").read_bytes()[:4] == b"\x89PNG"
    for row in rows:  # every trial ran as a federation of its own, in a folder of its own
        assert (out / "trials" / row["trial"] / "metrics.jsonl").exists()
    assert_one_mlflow_run_per_trial(mlflow_server, rows)


def assert_one_mlflow_run_per_trial(uri, rows):
    """The tracking server holds one run per trial in the Federation's experiment: the trial's lr as a param,
    a metric point per round it ran, and the model of each finished trial; a stopped one ended KILLED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits-star")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {r["trial"] for r in rows}
    for row in rows:
        run = runs[row["trial"]]
        assert float(run.data.params["task.train.lr"]) == pytest.approx(float(row["task.train.lr"]), rel=1e-5)
        history = client.get_metric_history(run.info.run_id, "accuracy")
        if row["stopped_early"] == "true":
            assert run.info.status == "KILLED" and 1 <= len(history) <= int(row["rounds_run"])
        else:
            assert run.info.status == "FINISHED"
            assert sorted(m.step for m in history) == list(range(1, 9))
            assert "model.pt" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_a_bad_param_fails_before_any_trial_runs(tmp_path):
    out = tmp_path / "sweep"
    proc = red("tune", str(write(tmp_path, example())), "--param", "task.train.lr=uniform:-1:0.1", "--out", str(out))
    assert proc.returncode == 2
    assert "--param task.train.lr=uniform:-1.0:0.1: value -1.0" in proc.stderr and "spec.task.train.lr" in proc.stderr
    assert not (out / "trials").exists()
