"""Byzantine-robust aggregation: each needs every node's own update, never a pooled one.

None is linear, and their options (and the rules that tie them to the sampled count) are in
red_api/catalog.py.
"""

import math

import numpy as np

from red_runtime.learn.strategies.base import Strategy, Update, stacked_means


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


def square_distances(rows: np.ndarray) -> np.ndarray:
    sq = (rows * rows).sum(axis=1)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * rows @ rows.T, 0.0)


def krum_scores(dist: np.ndarray, f: int) -> np.ndarray:
    """Each row's summed square distance to its n - f - 2 nearest others (at least one)."""
    n = len(dist)
    closest = max(1, n - f - 2)
    return np.array([np.sort(np.delete(dist[i], i))[:closest].sum() for i in range(n)])


class Krum(Strategy):
    """Krum (Blanchard et al., 2017): keep the updates closest to their n - f - 2 neighbours; the plain
    mean of the `m` best."""

    name = "krum"

    def scores(self, rows: np.ndarray) -> np.ndarray:
        return krum_scores(square_distances(rows), int(self.opts["f"]))

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        rows = stacked_means(updates)
        keep = np.argsort(self.scores(rows), kind="stable")[: int(self.opts["m"])]
        return rows[keep].mean(axis=0)


class MultiKrum(Strategy):
    """Multi-Krum (Blanchard et al., 2017): the `m` updates with the best Krum scores (n - f when m is 0),
    averaged with their nodes' sample counts as weights."""

    name = "multikrum"

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        rows = stacked_means(updates)
        f = int(self.opts["f"])
        m = int(self.opts["m"]) or max(1, len(rows) - f)
        keep = np.argsort(krum_scores(square_distances(rows), f), kind="stable")[:m]
        weights = np.array([updates[i].weight for i in keep], dtype=np.float64)
        if weights.sum() <= 0:
            weights = np.ones_like(weights)
        return weights @ rows[keep] / weights.sum()


class Bulyan(Strategy):
    """Bulyan (El Mhamdi et al., 2018): pick n - 2f updates by repeated Krum, then average, coordinate by
    coordinate, the n - 4f of them closest to their median. Needs n >= 4f + 3."""

    name = "bulyan"

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        rows = stacked_means(updates)
        n, f = len(rows), int(self.opts["f"])
        dist = square_distances(rows)
        left = list(range(n))
        chosen = []
        for _ in range(max(1, n - 2 * f)):
            sub = dist[np.ix_(left, left)]
            best = left[int(np.argmin(krum_scores(sub, f)))]
            chosen.append(best)
            left.remove(best)
        selected = rows[chosen]
        beta = max(1, len(chosen) - 2 * f)
        median = np.median(selected, axis=0)
        nearest = np.argsort(np.abs(selected - median), axis=0, kind="stable")[:beta]
        return np.take_along_axis(selected, nearest, axis=0).mean(axis=0)
