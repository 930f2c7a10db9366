"""Experiment tracking: an MLflow run per federation run, and TensorBoard event files in every run folder.

Both are reporting sinks. MLflow is reached through an `MlflowClient` of the sink's own, never MLflow's
global active run, so several runs (a sweep's trials) can be tracked from one process at once.
"""

from __future__ import annotations

import base64
import dataclasses
import logging
import os
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from red_api.kinds import finite_number
from red_api.names import MANIFEST, MODEL, SUMMARY
from red_api.spec import Federation, Mlflow, Tracking, tracking_uri_problem
from red_runtime import strict_json
from red_runtime.engine.events import NodeStatus, RoundReport, RunInfo, Sink, Summary

log = logging.getLogger("red.tracking")

TENSORBOARD = "tensorboard"  # the run folder's subfolder of event files
ARTIFACTS = (MODEL, "metrics.png", "nodes.json", SUMMARY, MANIFEST)
# MLflow's limits (mlflow.utils.validation): longer values, or bigger batches, are refused whole.
MAX_PARAM_KEY, MAX_PARAM_VALUE, MAX_TAG_VALUE = 250, 6000, 8000
PARAMS_PER_BATCH = 100
PARAM_KEY = re.compile(r"^[\w\-. :/]+$")  # the characters MLflow allows in a param name
REACH_TIMEOUT_S = 10.0


class TrackingError(RuntimeError):
    """The tracking server named in the spec or on the command line cannot be used."""


def flatten_params(value: Any, prefix: str = "") -> dict[str, str]:
    """A spec as MLflow params, one per field at its dotted path (`task.train.lr`), so that a sweep's runs
    compare field by field. A list, or a mapping whose keys MLflow cannot name, becomes one JSON value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    elif isinstance(value, Mapping) and value and all(_nameable(f"{prefix}.{k}") for k in value):
        items = list(value.items())
    else:
        return {prefix: _param_value(value)}
    out: dict[str, str] = {}
    for key, item in items:
        out.update(flatten_params(item, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _nameable(key: str) -> bool:
    return len(key) <= MAX_PARAM_KEY and bool(PARAM_KEY.match(key))


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else strict_json.dumps(_plain(value), sort_keys=True)
    return text[:MAX_PARAM_VALUE]


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def round_metrics(report: RoundReport) -> dict[str, float]:
    """A round's numbers as tracked: accuracy, loss, seconds, healthy nodes and the numeric extras. A
    non-finite value (a diverged loss) is left out: MLflow refuses it and a chart cannot draw it."""
    values = {
        "accuracy": report.accuracy,
        "loss": report.loss,
        "seconds": report.seconds,
        "nodes_healthy": report.nodes_healthy,
        **report.metrics,
    }
    return {k: float(v) for k, v in values.items() if finite_number(v)}


def check_reachable(uri: str, field: str) -> None:
    """Fail before any work when the MLflow tracking server at `uri` does not answer, naming `field` (the
    flag or spec field it came from): otherwise the run would train and track nothing, with one log line."""
    problem = tracking_uri_problem(uri)
    if problem:
        raise TrackingError(f"{field}: {uri!r}: {problem}")
    url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    request = urllib.request.Request(url, headers=_auth_headers())
    try:
        with urllib.request.urlopen(request, timeout=REACH_TIMEOUT_S, context=_tls_context()) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise TrackingError(
                f"{field}: {uri!r}: the tracking server refuses access (HTTP {err.code}): set MLFLOW_TRACKING_TOKEN, "
                "or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        raise TrackingError(
            f"{field}: {uri!r}: answers HTTP {err.code} to MLflow's REST API: is it an MLflow tracking server?"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise TrackingError(f"{field}: {uri!r}: the MLflow tracking server does not answer ({reason})") from None


def _auth_headers() -> dict[str, str]:
    """The credentials MLflow's client sends, from the same environment variables."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def _tls_context() -> ssl.SSLContext:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # the user turned verification off for MLflow's client too
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


def mlflow_target(fed: Federation, mlflow_uri: str | None = None) -> tuple[str, str] | None:
    """The tracking server a run reports to, and where it was given: `--mlflow` wins over the spec's."""
    if mlflow_uri:
        return mlflow_uri, "--mlflow"
    if fed.spec.tracking.mlflow is not None:
        return fed.spec.tracking.mlflow.uri, "spec.tracking.mlflow.uri"
    return None


def check_tracking(fed: Federation, mlflow_uri: str | None = None) -> None:
    """`check_reachable` for the server a run of `fed` would report to, if any; before any work starts."""
    target = mlflow_target(fed, mlflow_uri)
    if target is not None:
        check_reachable(*target)


def tracking_sinks(
    fed: Federation,
    folder: Path,
    mlflow_uri: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    experiment: str | None = None,
) -> list[Sink]:
    """The sinks that track a run of `fed` beyond its run folder `folder`: an MLflow run where the spec or
    `--mlflow` names a server (none otherwise). The run folder's own TensorBoard sink comes with RunFolder.
    A sweep calls this once per trial, with the trial's spec and name: one MLflow run each."""
    target = mlflow_target(fed, mlflow_uri)
    if target is None:
        return []
    ml = Mlflow(uri=target[0], experiment=fed.spec.tracking.mlflow.experiment if fed.spec.tracking.mlflow else "")
    params = flatten_params(dataclasses.replace(fed.spec, tracking=Tracking(mlflow=ml)))  # --mlflow shown too
    all_tags = {"red.federation": fed.name, "red.namespace": fed.namespace, **(tags or {})}
    name = experiment or ml.experiment_for(fed.name)  # a sweep's trials share their Federation's experiment
    return [MlflowSink(ml.uri, name, run_name or fed.name, params, all_tags, folder=folder)]


def end_stopped_runs(uri: str, experiment: str, run_names: list[str], status: str = "KILLED") -> int:
    """End the MLflow runs of trials that Ray Tune stopped (ASHA kills the trial's process, so its sink never
    closes): any of `run_names` still RUNNING in `experiment` ends `status`. Returns how many were ended."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or not run_names:
        return 0
    ended = 0
    wanted = set(run_names)
    for run in client.search_runs([found.experiment_id], filter_string="attributes.status = 'RUNNING'"):
        if run.info.run_name in wanted:
            client.set_tag(run.info.run_id, "red.stopped", "stopped early by the sweep's scheduler")
            client.set_terminated(run.info.run_id, status)
            ended += 1
    return ended


class MlflowSink(Sink):
    """One MLflow run: params at the start, metrics each round (step = round), the run folder's files as
    artifacts at the end. It ends FINISHED, FAILED, or KILLED (a signal stopped it) when the run closes,
    after the run folder's sink has written those files, whatever order the sinks were given in."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        params: Mapping[str, Any],
        tags: Mapping[str, str] | None = None,
        *,
        folder: str | os.PathLike | None = None,
    ):
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        self.uri = uri
        self.experiment = experiment
        self.run_name = run_name
        self.params = {k: _param_value(v) for k, v in params.items()}
        self.tags = {k: str(v)[:MAX_TAG_VALUE] for k, v in (tags or {}).items()}
        self.folder = Path(folder) if folder is not None else None
        self.run_id: str | None = None
        self.status: str | None = None  # the terminal status the run ends with
        self.broken = False  # a round's metrics failed to go: the server is down; later rounds don't wait on it

    def _experiment_id(self) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(self.experiment)
        if found is None:
            try:
                return self.client.create_experiment(self.experiment)
            except MlflowException:  # another run (a concurrent trial) created it first
                found = self.client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise TrackingError(f"MLflow experiment {self.experiment!r} is deleted: restore it or name another")
        return found.experiment_id

    def _open(self) -> str:
        if self.run_id is None:
            from mlflow.entities import Param

            run = self.client.create_run(self._experiment_id(), run_name=self.run_name, tags=self.tags)
            self.run_id = run.info.run_id
            params = [Param(k, v) for k, v in self.params.items()]
            for i in range(0, len(params), PARAMS_PER_BATCH):
                self.client.log_batch(self.run_id, params=params[i : i + PARAMS_PER_BATCH])
            log.info("MLflow run %s (%s) in experiment %s at %s", self.run_id, self.run_name, self.experiment, self.uri)
        return self.run_id

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(k, v, stamp, step) for k, v in values.items()]
        if metrics:
            self.client.log_batch(self._open(), metrics=metrics)

    def started(self, info: RunInfo, nodes: list[NodeStatus]) -> None:
        self._open()
        if info.resumed_from:
            self.client.set_tag(self.run_id, "red.resumed_from", str(info.resumed_from))

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        if self.broken:
            return
        try:
            self._log_metrics(round_metrics(report), report.round)
        except Exception:
            self.broken = True
            log.warning("MLflow at %s: round metrics no longer sent for %s", self.uri, self.run_name)
            raise

    def finished(self, summary: Summary, params: Any, model: Any) -> None:
        self.status = "FINISHED"
        final = {k: float(v) for k, v in summary.metrics.items() if finite_number(v)}
        self._log_metrics(final, summary.rounds_run)

    def failed(self, reason: str) -> None:
        self.status = "FAILED"
        self.client.set_tag(self._open(), "red.failure", reason[:MAX_TAG_VALUE])

    def stopped(self, reason: str) -> None:
        self.status = "KILLED"
        self.client.set_tag(self._open(), "red.stopped", reason[:MAX_TAG_VALUE])

    def close(self) -> None:
        """Upload what the run folder holds, then end the run: never left RUNNING, even if an upload fails."""
        if self.run_id is None:
            return
        try:
            if self.folder is not None:
                for name in ARTIFACTS:
                    if (self.folder / name).is_file():
                        self.client.log_artifact(self.run_id, str(self.folder / name))
        finally:
            self.client.set_terminated(self.run_id, self.status or "FAILED")
            self.run_id = None


class TensorBoardSink(Sink):
    """TensorBoard event files under `<run folder>/tensorboard/`: each round's numbers as scalars, and
    the nodes' train losses as a histogram (none under differential privacy: see RoundReport)."""

    def __init__(self, folder: str | os.PathLike):
        self.logdir = Path(folder) / TENSORBOARD
        self.writer = None

    def started(self, info: RunInfo, nodes: list[NodeStatus]) -> None:
        from tensorboardX import SummaryWriter

        # A resumed run replays the rounds after its checkpoint: TensorBoard drops the old events from there.
        purge = info.resumed_from + 1 if info.resumed_from else None
        self.writer = SummaryWriter(logdir=str(self.logdir), purge_step=purge)

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        if self.writer is None:
            return
        for key, value in round_metrics(report).items():
            self.writer.add_scalar(key, value, report.round)
        losses = [v for v in report.node_losses.values() if finite_number(v)]
        if losses:
            import numpy as np

            self.writer.add_histogram("node_train_loss", np.asarray(losses, dtype=np.float64), report.round)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
