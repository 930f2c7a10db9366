"""Simulated stragglers (`spec.nodes.stragglers`): which nodes are slow, and how slow.

A slow node trains as usual and then waits out the extra time its slowdown implies, inside its actor,
so it holds the actor as a slow machine would. The driver and every actor derive the same choice.
"""

from __future__ import annotations

import time

import numpy as np

from red_api.spec import Stragglers


def slow_nodes(stragglers: Stragglers, seed: int, count: int) -> frozenset[int]:
    if stragglers.count <= 0:
        return frozenset()
    rng = np.random.default_rng([seed, 0x510])
    return frozenset(int(i) for i in rng.choice(count, size=stragglers.count, replace=False))


def hold_back(stragglers: Stragglers, began: float) -> None:
    """Stretch the work that started at `began` (perf_counter) to `slowdown` times its length."""
    time.sleep((stragglers.slowdown - 1.0) * (time.perf_counter() - began))
