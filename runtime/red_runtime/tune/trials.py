"""A sweep's files and table: one row per trial, read from the trials' run folders, the best of them, and
the sweep folder's trials.csv, trials.png and best/.

Ray-free: the table and the choice of the best trial are tested without Ray, and `red tune` checks its
arguments before it imports Ray Tune.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from red_api.names import METRICS, MODEL, SUMMARY
from red_api.sweep import Sweep
from red_runtime.report.plot import plot_trials

TRIALS_CSV, TRIALS_PLOT, TRIALS, BEST = "trials.csv", "trials.png", "trials", "best"


@dataclass
class TrialRow:
    trial: str
    config: dict[str, Any]
    rounds: int  # the rounds the spec asks for
    history: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    complete: bool = False  # wrote its summary and model

    @property
    def rounds_run(self) -> int:
        return len(self.history)

    @property
    def finished(self) -> bool:
        """Ran every round (or met its target accuracy) and wrote its model."""
        return not self.error and self.rounds_run > 0 and self.complete

    @property
    def stopped_early(self) -> bool:
        """The scheduler (ASHA) stopped it before its last round."""
        return not self.error and not self.complete and self.rounds_run > 0

    def final(self, metric: str) -> float:
        return float(self.history[-1][metric]) if self.history else math.nan


def read_trial(folder: Path, trial: str, config: dict[str, Any], rounds: int, error: str = "") -> TrialRow:
    metrics = folder / METRICS
    history = []
    if metrics.exists():
        history = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    complete = (folder / SUMMARY).exists() and (folder / MODEL).exists()
    return TrialRow(trial, dict(config), rounds, history, error, complete)


def best_trial(rows: list[TrialRow], metric: str, mode: str) -> TrialRow | None:
    """The finished trial with the best final metric: only a finished trial has a model to keep."""
    done = [r for r in rows if r.finished and math.isfinite(r.final(metric))]
    if not done:
        return None
    pick = max if mode == "max" else min
    return pick(done, key=lambda r: r.final(metric))


def outcome(row: TrialRow) -> str:
    if row.error:
        return "failed"
    if row.stopped_early:
        return "stopped early"
    return "finished" if row.finished else "not run"


def write_csv(rows: list[TrialRow], path: Path) -> None:
    """trials.csv: trial, each swept value, final accuracy and loss, rounds run, stopped early, error."""
    keys = sorted({k for r in rows for k in r.config})
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["trial", *keys, "accuracy", "loss", "rounds_run", "stopped_early", "error"])
        for r in rows:
            out.writerow(
                [
                    r.trial,
                    *(r.config.get(k, "") for k in keys),
                    _number(r.final("accuracy")),
                    _number(r.final("loss")),
                    r.rounds_run,
                    str(r.stopped_early).lower(),
                    r.error,
                ]
            )


def _number(value: float) -> str:
    return f"{value:.6g}" if math.isfinite(value) else ""


def format_table(rows: list[TrialRow], best: TrialRow | None) -> str:
    """The table `red tune` prints: best trial marked with *."""
    keys = sorted({k for r in rows for k in r.config})
    header = ["  trial", *keys, "accuracy", "rounds", "outcome"]
    body = [
        [
            ("* " if r is best else "  ") + r.trial,
            *(_short(r.config.get(k, "")) for k in keys),
            _number(r.final("accuracy")) or "-",
            f"{r.rounds_run}/{r.rounds}",
            outcome(r) + (f": {r.error[:60]}" if r.error else ""),
        ]
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [header, *body]]
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_name(base: str, trial_id: str) -> str:
    """`digits-00003` for Tune's `abc12_00003`: unique within the sweep, a DNS label, and it names the
    trial's run folder and its Ray actors (which must not clash with another trial's)."""
    return f"{base}-{trial_id.rsplit('_', 1)[-1]}"


def without_sweep(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """A trial's manifest: the Federation's, less spec.sweep (a trial is one federation, not a sweep)."""
    doc = dict(manifest)
    doc["spec"] = {k: v for k, v in (manifest.get("spec") or {}).items() if k != "sweep"}
    return doc


def finish_sweep(
    rows: list[TrialRow], sweep: Sweep, out: Path, title: str, promote: bool = False, stream: Any = None
) -> TrialRow | None:
    """trials.csv, trials.png and best/ (a copy of the best trial's run folder); returns the best.

    `promote` (a Federation's sweep) also copies the best trial's files to the top of the run folder, so
    that status.artifacts.model, `red fetch` and spec.serve find the winning model where a run keeps it."""
    best = best_trial(rows, sweep.metric, sweep.mode)
    write_csv(rows, out / TRIALS_CSV)
    plot_trials({r.trial: r.history for r in rows}, out / TRIALS_PLOT, best.trial if best else None, title)
    if best is not None:
        shutil.rmtree(out / BEST, ignore_errors=True)
        shutil.copytree(out / TRIALS / best.trial, out / BEST)
        if promote:
            for item in (out / BEST).iterdir():
                if item.is_file():
                    shutil.copy2(item, out / item.name)
    print(format_table(rows, best), file=stream or sys.stderr)
    return best
