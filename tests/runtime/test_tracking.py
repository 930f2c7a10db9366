"""Tracking as a user sees it: a real `red run --mlflow` against a real MLflow server, read back with
MLflow's client, and the TensorBoard event files every run folder holds."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import uuid

import pytest
import torch
import yaml

from tests.runtime.conftest import example

pytestmark = pytest.mark.ray


def red(*args, module="red_runtime.apps.cli", timeout=600):
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout)


def write(tmp_path, doc):
    path = tmp_path / "fed.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def named(doc, prefix):
    doc["metadata"]["name"] = f"{prefix}-{uuid.uuid4().hex[:6]}"  # an experiment of its own on the session's server
    return doc


def events(folder):
    """Every Event in a folder's TensorBoard files: TFRecords (length, its CRC, the data, its CRC) of the
    Event protobuf that tensorboardX ships."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (length,) = struct.unpack_from("<Q", data, at)
            found.append(Event.FromString(data[at + 12 : at + 12 + length]))
            at += 12 + length + 4
    return found


def test_a_run_is_tracked_in_mlflow_and_in_tensorboard(tmp_path, mlflow_server):
    from mlflow.tracking import MlflowClient

    doc = named(example(rounds=3, **{"task.train.lr": 0.07}), "tracked")
    name, out = doc["metadata"]["name"], tmp_path / "out"
    proc = red("run", str(write(tmp_path, doc)), "--out", str(out), "--mlflow", mlflow_server)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [1, 2, 3]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name(name)  # the Federation's name: the spec names none
    [run] = client.search_runs([experiment.experiment_id])
    assert (run.info.run_name, run.info.status) == (name, "FINISHED")
    params = run.data.params
    assert params["task.train.lr"] == "0.07" and params["rounds"] == "3" and params["nodes.count"] == "8"
    assert run.data.tags["red.federation"] == name
    for key in ("accuracy", "loss", "train_loss"):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(r["round"], r[key]) for r in rows], key

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.pt", "metrics.png", "nodes.json", "summary.json", "federation.yaml"} <= names
    got = client.download_artifacts(run.info.run_id, "model.pt", str(tmp_path / "downloaded"))
    tracked, local = torch.load(got, weights_only=True), torch.load(out / "model.pt", weights_only=True)
    assert tracked.keys() == local.keys() and all(torch.equal(tracked[k], local[k]) for k in local)

    board = events(out / "tensorboard")
    scalars = {(v.tag, e.step): v.simple_value for e in board for v in e.summary.value if v.HasField("simple_value")}
    for r in rows:
        assert scalars[("accuracy", r["round"])] == pytest.approx(r["accuracy"], rel=1e-6)
        assert scalars[("loss", r["round"])] == pytest.approx(r["loss"], rel=1e-6)
    histograms = {e.step: v.histo for e in board for v in e.summary.value if v.tag == "node_train_loss"}
    assert sorted(histograms) == [1, 2, 3]
    for r in rows:  # one loss per node; the round's sample-weighted train loss lies among them
        histo = histograms[r["round"]]
        assert histo.num == 8 and histo.min <= r["train_loss"] <= histo.max


def test_the_drivers_run_follows_spec_tracking_and_a_diverged_run_ends_failed(tmp_path, mlflow_server):
    """driver.main, as the RayJob runs it, tracks per spec.tracking.mlflow; a run that fails is FAILED, not
    left RUNNING, and still carries what its folder holds."""
    from mlflow.tracking import MlflowClient

    experiment = f"diverging {uuid.uuid4().hex[:6]}"
    doc = example(rounds=3, **{"task.train.lr": 1e30, "nodes.count": 4})
    doc["spec"]["tracking"] = {"mlflow": {"uri": mlflow_server, "experiment": experiment}}
    out = tmp_path / "out"
    proc = red("--manifest", str(write(tmp_path, doc)), "--out", str(out), module="red_runtime.apps.launch")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "training diverged" in proc.stderr

    client = MlflowClient(mlflow_server)
    [run] = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.status == "FAILED"
    assert "Diverged" in run.data.tags["red.failure"] and run.data.params["task.train.lr"] == "1e+30"
    assert {"nodes.json", "federation.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


def test_an_unreachable_mlflow_fails_before_any_run_folder(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    proc = red(
        "run", str(write(tmp_path, example(rounds=1))), "--out", str(out), "--mlflow", f"http://127.0.0.1:{port}"
    )
    assert proc.returncode == 2
    assert f"--mlflow: 'http://127.0.0.1:{port}': the MLflow tracking server does not answer" in proc.stderr
    assert not out.exists() and "Ray" not in proc.stderr


def test_runs_tracked_from_one_process_stay_apart_and_always_end(tmp_path, mlflow_server):
    """A sweep tracks its trials from one process: each sink keeps to its own run, and every run ends,
    KILLED when a signal stopped it, FAILED when it failed before its first round or closed unfinished."""
    from mlflow.tracking import MlflowClient

    from red_runtime.engine.events import RoundReport, RunInfo
    from red_runtime.report.tracking import MlflowSink

    experiment = f"sweep {uuid.uuid4().hex[:6]}"
    info = RunInfo(name="sweep", namespace="default", rounds=2, nodes=2, slots=1, topology="star", algorithm="fedavg")
    sinks = {n: MlflowSink(mlflow_server, experiment, n, {"task.train.lr": lr}) for n, lr in (("a", 0.1), ("b", 0.2))}
    for sink in sinks.values():
        sink.started(info, [])
    for round_no in (1, 2):
        for lr, sink in zip((0.1, 0.2), sinks.values()):
            sink.round_done(RoundReport(round_no, 2, 1.0, lr * round_no, 2, 2, 0.1), [])
    sinks["a"].stopped("stopped by signal SIGTERM after round 2")
    for sink in sinks.values():
        sink.close()
    early = MlflowSink(mlflow_server, experiment, "c", {})
    early.failed("SpecError: spec.task.model.personal[0]: 'x': no such layer")
    early.close()

    client = MlflowClient(mlflow_server)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name(experiment).experiment_id])}
    assert {n: r.info.status for n, r in runs.items()} == {"a": "KILLED", "b": "FAILED", "c": "FAILED"}
    for name, lr in (("a", 0.1), ("b", 0.2)):
        history = sorted(client.get_metric_history(runs[name].info.run_id, "accuracy"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(1, lr), (2, lr * 2)]
        assert runs[name].data.params == {"task.train.lr": str(lr)}
    assert runs["a"].data.tags["red.stopped"].startswith("stopped by signal SIGTERM")
    assert "no such layer" in runs["c"].data.tags["red.failure"] and not runs["c"].data.params
