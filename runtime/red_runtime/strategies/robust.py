"""Byzantine-robust aggregation: each needs every node's own update, never a pooled one.

None is linear, and their options (and the rules that tie them to the sampled count) are in
strategies/catalog.py.
"""

import math

import numpy as np

from red_runtime.strategies.base import Strategy, Update, stacked_means


class FedMedian(Strategy):
    """Coordinate-wise median (Yin et al., 2018)."""

    name = "fedmedian"

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        return np.median(stacked_means(updates), axis=0)


class TrimmedMean(Strategy):
    """Coordinate-wise mean after dropping the `beta` share of largest and smallest values."""

    name = "trimmedmean"

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        rows = np.sort(stacked_means(updates), axis=0)
        cut = math.floor(self.opts["beta"] * len(rows))
        return rows[cut : len(rows) - cut].mean(axis=0)


class Krum(Strategy):
    """Krum / Multi-Krum (Blanchard et al., 2017): keep the updates closest to their n - f - 2 neighbours."""

    name = "krum"

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
