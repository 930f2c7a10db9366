"""spec.tracking.mlflow and what tracking makes of a spec: params at dotted paths, rounds as metrics."""

from __future__ import annotations

import dataclasses
import math
import socket

import pytest
import yaml

from red_api.spec import SpecError, parse_manifest
from red_runtime.engine.events import RoundReport
from red_runtime.report.tracking import (
    MAX_PARAM_VALUE,
    TrackingError,
    check_reachable,
    check_tracking,
    flatten_params,
    round_metrics,
    tracking_sinks,
)

pytestmark = pytest.mark.unit


def manifest(spec=None, name="fed"):
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec or {}}


def problems(spec):
    with pytest.raises(SpecError) as err:
        parse_manifest(manifest(spec))
    return err.value.problems


def test_no_tracking_unless_asked():
    assert parse_manifest(manifest()).spec.tracking.mlflow is None
    assert parse_manifest(manifest({"tracking": {"mlflow": None}})).spec.tracking.mlflow is None


def test_the_experiment_defaults_to_the_federations_name():
    fed = parse_manifest(manifest({"tracking": {"mlflow": {"uri": "https://mlflow.example.com/"}}}, name="digits"))
    assert fed.spec.tracking.mlflow.uri == "https://mlflow.example.com/"
    assert fed.spec.tracking.mlflow.experiment_for(fed.name) == "digits"
    named = parse_manifest(
        manifest({"tracking": {"mlflow": {"uri": "http://10.0.0.7:5000", "experiment": "lr sweep"}}})
    )
    assert named.spec.tracking.mlflow.experiment_for(named.name) == "lr sweep"


@pytest.mark.parametrize(
    "mlflow, path, value",
    [
        ({}, "spec.tracking.mlflow.uri", "None"),
        ({"experiment": "e"}, "spec.tracking.mlflow.uri", "None"),
        ({"uri": "ftp://mlflow:21"}, "spec.tracking.mlflow.uri", "'ftp://mlflow:21'"),
        ({"uri": "mlflow:5000"}, "spec.tracking.mlflow.uri", "'mlflow:5000'"),
        ({"uri": "file:/red/mlruns"}, "spec.tracking.mlflow.uri", "'file:/red/mlruns'"),
        ({"uri": "sqlite:///mlflow.db"}, "spec.tracking.mlflow.uri", "'sqlite:///mlflow.db'"),
        ({"uri": "http://"}, "spec.tracking.mlflow.uri", "'http://'"),
        ({"uri": "http://a b"}, "spec.tracking.mlflow.uri", "'http://a b'"),
        ({"uri": 5000}, "spec.tracking.mlflow.uri", "5000"),
        ({"uri": "http://m:5000", "experiment": " "}, "spec.tracking.mlflow.experiment", "' '"),
        ({"uri": "http://m:5000", "experiment": 7}, "spec.tracking.mlflow.experiment", "7"),
        ({"uri": "http://m:5000", "experiment": "e" * 257}, "spec.tracking.mlflow.experiment", "'eee"),
        ({"uri": "http://m:5000", "run": "x"}, "spec.tracking.mlflow.run", "'x'"),
    ],
)
def test_a_bad_mlflow_setting_names_the_field_and_value(mlflow, path, value):
    found = problems({"tracking": {"mlflow": mlflow}})
    assert any(p.startswith(f"{path}: {value}") for p in found), found


def test_the_readmes_example_is_a_valid_spec(repo_root):
    example = (repo_root / "README.md").read_text().split("### Tracking")[1].split("```yaml")[1].split("```")[0]
    fed = parse_manifest(manifest(yaml.safe_load(example)["spec"], name="digits-star"))
    assert fed.spec.tracking.mlflow.uri == "http://mlflow.ml.svc:5000"
    assert fed.spec.tracking.mlflow.experiment_for(fed.name) == "digits"


def test_tracking_must_be_a_mapping_of_known_fields():
    assert problems({"tracking": {"wandb": {}}})[0].startswith("spec.tracking.wandb: {}: unknown field")
    assert problems({"tracking": {"mlflow": "http://m:5000"}})[0].startswith("spec.tracking.mlflow: 'http://m:5000'")


def test_params_are_the_whole_spec_at_dotted_paths():
    spec = {
        "rounds": 3,
        "task": {"train": {"lr": 0.125, "optimizer": "adam"}, "model": {"hidden": [32, 16]}},
        "algorithm": {"name": "fedprox", "options": {"mu": 0.01}, "targetAccuracy": 0.9},
        "ray": {"workerGroups": [{"name": "g"}]},
    }
    parsed = parse_manifest(manifest(spec)).spec
    # The API refuses such an environment variable name; a mapping of a newer release might hold one.
    ray = dataclasses.replace(parsed.ray, runtimeEnv={"env_vars": {"A=B": "x", "C": "y"}})
    params = flatten_params(dataclasses.replace(parsed, ray=ray))
    assert params["rounds"] == "3"
    assert params["task.train.lr"] == "0.125" and params["task.train.optimizer"] == "adam"
    assert params["task.train.epochs"] == "1"  # a default, filled in: runs compare on every field
    assert params["task.model.hidden"] == "[32, 16]"
    assert params["algorithm.options.mu"] == "0.01"
    assert params["algorithm.privacy"] == "null" and params["suspend"] == "false"
    # A key MLflow cannot name keeps its mapping whole, as JSON.
    assert params["ray.runtimeEnv.env_vars"] == '{"A=B": "x", "C": "y"}'
    assert params["tracking.mlflow"] == "null"
    assert params["ray.workerGroups"].startswith('[{"affinity": {}') and '"name": "g"' in params["ray.workerGroups"]
    assert all(len(k) <= 250 for k in params)


def test_a_long_param_value_is_cut_to_mlflows_limit():
    spec = {"ray": {"runtimeEnv": {"env_vars": {"LONG": "x" * 10_000}}}}
    params = flatten_params(parse_manifest(manifest(spec)).spec)
    assert len(params["ray.runtimeEnv.env_vars.LONG"]) == MAX_PARAM_VALUE


def test_round_metrics_leave_out_what_is_not_a_finite_number():
    report = RoundReport(
        round=2,
        rounds=5,
        loss=math.nan,
        accuracy=0.75,
        nodes_healthy=3,
        nodes_total=4,
        seconds=0.5,
        metrics={"train_loss": 0.4, "eval_loss": math.inf, "note": "x", "flag": True},
        node_losses={"node-0": 0.3},
    )
    assert round_metrics(report) == {"accuracy": 0.75, "seconds": 0.5, "nodes_healthy": 3.0, "train_loss": 0.4}
    assert "node_losses" not in report.as_dict() and "node-0" not in report.as_dict()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_named_by_where_it_was_given():
    uri = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(TrackingError, match=rf"^--mlflow: '{uri}': the MLflow tracking server does not answer"):
        check_reachable(uri, "--mlflow")
    fed = parse_manifest(manifest({"tracking": {"mlflow": {"uri": uri}}}))
    with pytest.raises(TrackingError, match=r"^spec\.tracking\.mlflow\.uri: "):
        check_tracking(fed)
    with pytest.raises(TrackingError, match=r"^--mlflow: 'mlflow:5000': must be the http:// or https:// URL"):
        check_tracking(fed, "mlflow:5000")


def test_no_mlflow_no_mlflow_sink(tmp_path):
    fed = parse_manifest(manifest())
    assert tracking_sinks(fed, tmp_path) == []
    [sink] = tracking_sinks(fed, tmp_path, mlflow_uri="http://mlflow:5000", run_name="trial-3")
    assert (sink.experiment, sink.run_name, sink.folder) == ("fed", "trial-3", tmp_path)
    assert sink.params["task.train.lr"] == "0.05" and sink.tags["red.federation"] == "fed"
    assert sink.params["tracking.mlflow.uri"] == "http://mlflow:5000"  # the run says where it was tracked
