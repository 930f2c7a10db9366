"""Byzantine-robust aggregation: each needs every node's own update, never a pooled one."""

import math

import numpy as np

from red_runtime.strategies.base import Option, Strategy, Update, stacked_means


class FedMedian(Strategy):
    """Coordinate-wise median (Yin et al., 2018)."""

    name = "fedmedian"
    linear = False

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        return np.median(stacked_means(updates), axis=0)


class TrimmedMean(Strategy):
    """Coordinate-wise mean after dropping the `beta` share of largest and smallest values."""

    name = "trimmedmean"
    linear = False
    options = {"beta": Option(0.1, minimum=0, maximum=0.49)}

    @classmethod
    def option_problems(cls, options, sampled):
        problems = super().option_problems(options, sampled)
        beta = options.get("beta", cls.options["beta"].default)
        if not problems and sampled - 2 * math.floor(beta * sampled) < 1:
            problems.append(f"beta: {beta!r}: trims every one of the {sampled} sampled nodes")
        return problems

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        rows = np.sort(stacked_means(updates), axis=0)
        cut = math.floor(self.opts["beta"] * len(rows))
        return rows[cut : len(rows) - cut].mean(axis=0)


class Krum(Strategy):
    """Krum / Multi-Krum (Blanchard et al., 2017): keep the updates closest to their n - f - 2 neighbours."""

    name = "krum"
    linear = False
    options = {"f": Option(1, minimum=0, integer=True), "m": Option(1, minimum=1, integer=True)}

    @classmethod
    def option_problems(cls, options, sampled):
        problems = super().option_problems(options, sampled)
        f = int(options.get("f", 1))
        if not problems and sampled < 2 * f + 3:
            problems.append(f"f: {f}: Krum needs at least 2f+3 = {2 * f + 3} nodes per round, got {sampled}")
        return problems

    def scores(self, rows: np.ndarray) -> np.ndarray:
        n, f = len(rows), int(self.opts["f"])
        sq = (rows * rows).sum(axis=1)
        dist = np.maximum(sq[:, None] + sq[None, :] - 2 * rows @ rows.T, 0.0)
        closest = max(1, n - f - 2)
        return np.array([np.sort(np.delete(dist[i], i))[:closest].sum() for i in range(n)])

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        rows = stacked_means(updates)
        keep = np.argsort(self.scores(rows), kind="stable")[: int(self.opts["m"])]
        return rows[keep].mean(axis=0)
