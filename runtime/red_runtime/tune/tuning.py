"""`red tune`: a Ray Tune sweep in which every trial is a whole federation, run by the same driver.

A trial asks Tune for its federation's placement-group bundles (the topology manager's, then one per
node-actor slot), so trials share the cluster without oversubscribing it, and the trial's driver
places its actors into the group Tune reserved. Each trial reports every round's accuracy and loss,
which is what lets ASHA stop weak trials early.
"""

from __future__ import annotations

import dataclasses
import re
import signal
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune import PlacementGroupFactory
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator

from red_api.sweep import Param, Sweep
from red_api.trial import apply_values, check_sweep, trial_manifest
from red_runtime.engine.driver import Driver, Reservation, cluster_machines, failure_reason
from red_runtime.engine.events import NodeStatus, Reporter, RoundReport, Sink, Summary, now_iso
from red_runtime.engine.placement import trial_plan
from red_runtime.engine.session import ray_session
from red_runtime.engine.stopping import EXIT_FAILED, EXIT_INVALID, Interrupted, StopRequest
from red_runtime.report.run_folder import RunFolder
from red_runtime.report.tracking import end_stopped_runs, mlflow_target, tracking_sinks
from red_runtime.tune.progress import TrialProgress
from red_runtime.tune.status import SweepStatus, trial_fields
from red_runtime.tune.trials import TRIALS, TrialRow, finish_sweep, read_trial, trial_name, without_sweep


class TuneSink(Sink):
    """Reports each round to Tune one round late, and the last one from `close`, after every sink listed
    before it has written and closed (the model, the MLflow artifacts): a report can end the trial (ASHA,
    or max_t reached), and a finished trial must leave a complete run folder and a closed MLflow run."""

    def __init__(self, report: Callable[[dict[str, Any]], None]):
        self.report = report
        self.pending: dict[str, Any] | None = None
        self.done = False

    def round_done(self, report: RoundReport, nodes: list[NodeStatus]) -> None:
        self._flush()
        self.pending = {"round": report.round, "accuracy": report.accuracy, "loss": report.loss}

    def finished(self, summary: Summary, params: Any, model: Any) -> None:
        self.done = True

    def close(self) -> None:
        if self.done:
            self._flush()

    def _flush(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            try:
                self.report(pending)
            except SystemExit:  # Tune ends a trial it stops (ASHA) by exiting the reporting thread
                raise TrialStopped() from None


class TrialStopped(Interrupted):
    """The sweep's scheduler stopped this trial: the driver ends it as stopped, not failed (sinks hear
    `stopped`, its MLflow run ends KILLED), then Tune's thread exits as Tune expects."""

    def __init__(self) -> None:
        super().__init__(signal.SIGTERM, "stopped early by the sweep's scheduler")


def trial_tracking(mlflow_uri: str | None, experiment: str, sweep_name: str):
    """The factory of a trial's MLflow sinks: one run per trial, named after it, in the sweep's experiment."""

    def sinks(trial_fed: Any, folder: Path, name: str) -> list[Sink]:
        return tracking_sinks(trial_fed, folder, mlflow_uri, run_name=name, tags={"red.sweep": sweep_name},
                              experiment=experiment)  # fmt: skip

    return sinks


def sweep_experiment(fed: Any, mlflow_uri: str | None) -> tuple[str, str] | None:
    """(uri, experiment) a sweep of `fed` is tracked in, or None."""

    target = mlflow_target(fed, mlflow_uri)
    if target is None:
        return None
    ml = fed.spec.tracking.mlflow
    return target[0], (ml.experiment_for(fed.name) if ml else fed.name)


def search_space(params: tuple[Param, ...]) -> dict[str, Any]:

    def domain(p: Param) -> Any:
        if p.kind == "loguniform":
            return tune.loguniform(*p.values)
        if p.kind == "uniform":
            return tune.uniform(*p.values)
        if p.kind == "randint":
            return tune.randint(p.values[0], p.values[1] + 1)  # Tune's upper bound is exclusive; ours is not
        if p.kind == "choice":
            return tune.choice(list(p.values))
        return tune.grid_search(list(p.values))

    return {p.path: domain(p) for p in params}


def run_trial(
    config: dict[str, Any],
    manifest: Mapping[str, Any],
    paths: tuple[str, ...],
    out: str,
    plan: Any,
    extra_sinks: Callable[[Any, Path, str], list[Sink]] | None = None,
) -> None:
    """Tune's trainable: one federation with the trial's values, in the placement group Tune reserved."""

    values = {p: config[p] for p in paths}
    fed = trial_manifest(manifest, values, f"trial {values}")
    name = trial_name(fed.name, tune.get_context().get_trial_id())
    fed = dataclasses.replace(fed, name=name)
    doc = apply_values(manifest, values)
    doc["metadata"] = {**doc.get("metadata", {}), "name": name}
    folder = Path(out) / TRIALS / name
    run = RunFolder(folder, resume=False, manifest=doc)
    sinks = [*run.sinks, *(extra_sinks(fed, folder, name) if extra_sinks else []), TuneSink(tune.report)]
    reserved = Reservation(ray.util.get_current_placement_group(), plan)
    try:
        checkpoints = run.checkpoints(fed.spec.checkpoint.path)  # the trial's own run folder: never shared
        Driver(fed, Reporter(sinks), checkpoint_dir=checkpoints, reserved=reserved).run()
    except TrialStopped:
        sys.exit(0)


def scheduler_for(sweep: Sweep, rounds: int):

    if sweep.scheduler == "fifo":
        return FIFOScheduler()
    # A trial is judged after its first round, and the weaker half stops at each rung (1, 2, 4, ... rounds).
    return ASHAScheduler(time_attr="round", max_t=rounds, grace_period=1, reduction_factor=2)


def tune_federations(
    manifest: Mapping[str, Any],
    fed: Any,
    sweep: Sweep,
    out: Path,
    callbacks: list | None = None,
    mlflow_uri: str | None = None,
) -> list[TrialRow]:
    """Run the sweep on the connected Ray cluster; one row per trial, in trial order. Tracked (--mlflow or
    spec.tracking.mlflow), each trial is one MLflow run in the Federation's experiment."""

    spec = fed.spec
    out = Path(out).resolve()  # trials run in folders of Tune's choosing
    plan = trial_plan(spec, cluster_machines(), sweep.trials, sweep.concurrency)
    paths = tuple(p.path for p in sweep.params)
    tracked = sweep_experiment(fed, mlflow_uri)
    extra_sinks = trial_tracking(mlflow_uri, tracked[1], fed.name) if tracked else None
    trainable = tune.with_resources(
        tune.with_parameters(
            run_trial, manifest=dict(manifest), paths=paths, out=str(out), plan=plan, extra_sinks=extra_sinks
        ),
        PlacementGroupFactory(plan.bundles, strategy=spec.placement.strategy),
    )
    tuner = tune.Tuner(
        trainable,
        param_space=search_space(sweep.params),
        tune_config=tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            num_samples=sweep.samples,
            # Draws seeded by the spec's seed: the same command sweeps the same values again.
            search_alg=BasicVariantGenerator(random_state=spec.task.seed),
            scheduler=scheduler_for(sweep, spec.rounds),
            max_concurrent_trials=sweep.concurrency or None,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str((out / "ray_results").resolve()),
            verbose=0,
            callbacks=callbacks or [],
        ),
    )
    results = tuner.fit()
    rows = []
    for result in results:
        name = trial_name(fed.name, _trial_id(result))
        config = {p: result.config.get(p) for p in paths}
        error = "" if result.error is None else _reason(result.error)
        rows.append(read_trial(out / TRIALS / name, name, config, spec.rounds, error))
    if tracked:
        end_stopped_runs(*tracked, [r.trial for r in rows if r.stopped_early])
        end_stopped_runs(*tracked, [r.trial for r in rows if r.error], status="FAILED")
    return sorted(rows, key=lambda r: r.trial)


def _trial_id(result: Any) -> str:
    """Tune adds trial_id to every reported result; a trial that failed before its first report has only
    its folder, named `run_trial_<id>_<n>_...`."""
    reported = (result.metrics or {}).get("trial_id")
    if reported:
        return str(reported)
    match = re.search(r"_([0-9a-f]{5}_\d{5})_", Path(result.path).name)
    return match.group(1) if match else Path(result.path).name


def _reason(err: BaseException) -> str:

    return failure_reason(err).splitlines()[0]


def execute_sweep(
    fed: Any, doc: Mapping[str, Any], status: Any, address: str | None, run: Any, mlflow_uri: str | None = None
) -> int:
    """spec.sweep in a RayJob: the sweep on the Federation's own RayCluster, trials and the best trial in its
    status, the run folder holding trials.csv, trials.png, trials/, best/ and the best trial's model."""

    sweep = fed.spec.sweep
    manifest = without_sweep(doc)
    for sink in run.sinks:  # the trials write the run folders; the top level gets the best one's files
        sink.close()
    try:
        check_sweep(manifest, sweep)
    except ValueError as err:
        print(f"red: spec.sweep: {err}", file=sys.stderr)
        if status:
            status.update(completionTime=now_iso(), driverError=f"spec.sweep: {err}"[:1000])
            status.close()
        return EXIT_INVALID
    out = Path(run.folder)
    callbacks: list = [TrialProgress(sweep.trials, sweep.metric, sweep.mode, stream=sys.stdout)]
    if status:
        callbacks.append(SweepStatus(status, sweep, out, fed.spec.rounds, lambda tid: trial_name(fed.name, tid)))
    code, rows = 0, []
    try:
        with ray_session(address, StopRequest()):
            rows = tune_federations(manifest, fed, sweep, out, callbacks, mlflow_uri)
        best = finish_sweep(rows, sweep, out, f"{fed.name}: {sweep.trials} trials", promote=True, stream=sys.stdout)
        error = None if best else f"no trial of {len(rows)} finished; see trials.csv"
    except Exception as err:  # reported as the driver's error, like a failed federation
        error, best = failure_reason(err), None
    if error:
        print(f"red: sweep {fed.name} failed: {error}", file=sys.stderr)
        code = EXIT_FAILED
    if status:
        done = {"completionTime": now_iso(), **(trial_fields(sweep.trials, 0, rows, sweep) if rows else {})}
        status.update(**done, **({"driverError": error[:1000]} if error else {"artifacts": status.artifacts}))
        status.close()
    try:
        run.finish()
    except Exception as err:
        print(f"red: {err}", file=sys.stderr)
        code = code or EXIT_FAILED
    return code
