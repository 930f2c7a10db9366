"""The sweep's progress bar: one tick per trial that ends, with the best accuracy so far."""

from __future__ import annotations

import math
import sys
from typing import Any

from ray.tune import Callback


class TrialProgress(Callback):
    def __init__(self, total: int, metric: str, mode: str, stream: Any = None):
        self.total, self.metric, self.mode = total, metric, mode
        self.stream = stream or sys.stderr
        self.bar = None
        self.best = math.nan
        self.failed = 0

    def setup(self, **info: Any) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc="trials", unit="trial", file=self.stream, dynamic_ncols=True)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value):
            better = value > self.best if self.mode == "max" else value < self.best
            if math.isnan(self.best) or better:
                self.best = float(value)
        self._show(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._tick(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.failed += 1
        self._tick(trials)

    def _tick(self, trials: list) -> None:
        if self.bar is not None:
            self.bar.update(1)
        self._show(trials)

    def _show(self, trials: list) -> None:
        if self.bar is None:
            return
        running = sum(1 for t in trials if t.status == "RUNNING")
        best = "-" if math.isnan(self.best) else f"{self.best:.4f}"
        self.bar.set_postfix({f"best_{self.metric}": best, "running": running, "failed": self.failed}, refresh=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
