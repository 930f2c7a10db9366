"""Simulated attackers (`spec.nodes.adversaries`): which nodes are poisoned, and what they send.

The attack runs inside the node host after honest training, on the update as it would be sent, so every
topology, strategy and pooling path sees exactly what a Byzantine node would send. Pure functions: the
driver (to mark the nodes) and every actor (to act) derive the same choice from the seed.
"""

from __future__ import annotations

import numpy as np

from red_api.spec import ATTACK_SCALES, Adversaries


def chosen(adversaries: Adversaries, seed: int, count: int) -> frozenset[int]:
    """The node indices that attack: `adversaries.count` of `count`, the same for a seed everywhere."""
    if adversaries.count <= 0:
        return frozenset()
    rng = np.random.default_rng([seed, 0xAD])
    return frozenset(int(i) for i in rng.choice(count, size=adversaries.count, replace=False))


def strength(adversaries: Adversaries) -> float | None:
    return adversaries.scale if adversaries.scale is not None else ATTACK_SCALES[adversaries.attack]


def poisoned(adversaries: Adversaries, start: np.ndarray, trained: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """What an attacking node sends instead of `trained`, the model it reached from `start`.

    signflip: the change reversed and scaled (start - s * change); scale: the change boosted
    (start + s * change); gaussian: the received model plus N(0, s^2) noise; labelflip poisons the data
    instead (flipped_labels), so its model goes as trained.
    """
    s = strength(adversaries)
    start64, change = start.astype(np.float64), trained.astype(np.float64) - start.astype(np.float64)
    if adversaries.attack == "signflip":
        out = start64 - s * change
    elif adversaries.attack == "scale":
        out = start64 + s * change
    elif adversaries.attack == "gaussian":
        out = start64 + rng.normal(0.0, s, size=start.shape)
    else:
        return trained
    return out.astype(trained.dtype)


def flipped_labels(y: np.ndarray, classes: int) -> np.ndarray:
    """labelflip's training labels: class c becomes classes - 1 - c."""
    return (classes - 1 - y).astype(y.dtype)


def attack_generator(seed: int, index: int, round_no: int) -> np.random.Generator:
    """The gaussian attack's noise: seeded per node and round, so a run repeats exactly."""
    return np.random.default_rng([seed, 0xAD, index, round_no])
