"""A sweep's progress in the Federation's status: trials {total, running, done, stopped, failed} and
best {trial, config, accuracy}, with status.metrics holding the best trial's final metrics, so the
ACCURACY printer column shows the best accuracy so far."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from red_api.sweep import Sweep
from red_runtime.engine.events import now_iso
from red_runtime.report.status_sink import StatusSink
from red_runtime.tune.trials import TrialRow, best_trial, read_trial


def trial_fields(total: int, running: int, rows: list[TrialRow], sweep: Sweep) -> dict[str, Any]:
    """The status fields for a sweep with `rows` ended so far (pure, for the tests)."""
    best = best_trial(rows, sweep.metric, sweep.mode)
    fields: dict[str, Any] = {
        "trials": {
            "total": total,
            "running": running,
            "done": sum(r.finished for r in rows),
            "stopped": sum(r.stopped_early for r in rows),
            "failed": sum(bool(r.error) for r in rows),
        },
        "progress": f"{len(rows)}/{total} trials",
    }
    if best is not None:
        last = best.history[-1]
        fields["best"] = {
            "trial": best.trial,
            "config": {k: str(v) for k, v in best.config.items()},
            "accuracy": round(float(last["accuracy"]), 6),
        }
        fields["metrics"] = {"accuracy": round(float(last["accuracy"]), 6), "loss": round(float(last["loss"]), 6)}
    return fields


class SweepStatus(Callback):
    """Tune callback: after each trial starts or ends, the counts and the best so far into the status."""

    def __init__(self, sink: StatusSink, sweep: Sweep, out: Path, rounds: int, name_of):
        self.sink, self.sweep, self.out, self.rounds, self.name_of = sink, sweep, Path(out), rounds, name_of
        self.ended: dict[str, TrialRow] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into the experiment's state; the sink holds the API client's socket and
        # threads, which only the live callback in this process uses.
        return {**self.__dict__, "sink": None, "name_of": None}

    def setup(self, **info: Any) -> None:
        self.sink.update(**trial_fields(self.sweep.trials, 0, [], self.sweep), startTime=now_iso(), completionTime=None)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._send(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, "")
        self._send(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial, str(getattr(trial, "error_msg", None) or "failed").splitlines()[0][:200])
        self._send(trials)

    def _ended(self, trial: Any, error: str) -> None:
        name = self.name_of(trial.trial_id)
        config = {p.path: trial.config.get(p.path) for p in self.sweep.params}
        self.ended[name] = read_trial(self.out / "trials" / name, name, config, self.rounds, error)

    def _send(self, trials: list) -> None:
        # Tune calls on_trial_complete while the trial is still RUNNING: the ones that ended are not counted.
        running = sum(1 for t in trials if t.status == "RUNNING" and self.name_of(t.trial_id) not in self.ended)
        self.sink.update(**trial_fields(self.sweep.trials, running, list(self.ended.values()), self.sweep))
