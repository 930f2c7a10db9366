"""Differential privacy for server-side rounds (DP-FedAvg, McMahan et al., 2018), accounted as it runs.

The mechanism, one step per round:
- Every live node trains every round, and its update counts with probability `fraction`, drawn by its
  own coin (Poisson sampling). Who counted stays secret: the nodes' states, the round's duration and
  the count of nodes reporting are the same whoever was picked.
- A counted update is the node's change, clipped to L2 norm `clip`; an uncounted one is zero.
- The server adds Gaussian noise of standard deviation `noiseMultiplier * clip` to the sum of the
  changes and divides by the expected count, `fraction * nodes.count`: a constant, never the
  realised count, so one node moves the released model by at most `clip / (fraction * nodes.count)`
  before noise.

That is the Poisson-subsampled Gaussian mechanism with sensitivity `clip` between federations that
differ in one node's data (present, or zeroed out), which the RDP accountant (Opacus) counts at the
manifest's `delta`. The coins and the noise come from OS entropy, never from `task.seed`: anyone who
can read the manifest could regenerate seeded noise and subtract it.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np

from red_api.spec import Algorithm, Privacy
from red_runtime.learn.strategies import Update

RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
ACCOUNTANT = "rdp"
SAMPLING = "poisson"

_os_entropy = random.SystemRandom()


def counted(fraction: float) -> bool:
    """One node's coin for one round: does its update count? OS entropy, so no one can replay it."""
    return fraction >= 1.0 or _os_entropy.random() < fraction


def noise_generator() -> np.random.Generator:
    """A generator seeded from OS entropy, fresh for every draw of noise."""
    return np.random.default_rng(secrets.randbits(128))


def clip_update(params: np.ndarray, start: np.ndarray, clip: float) -> np.ndarray:
    """`start` plus the node's change, scaled down to L2 norm `clip` if it is longer."""
    delta = params.astype(np.float64) - start
    norm = float(np.linalg.norm(delta))
    if norm > clip:
        delta *= clip / norm
    return (start + delta).astype(np.float32)


def noisy_mean(
    updates: list[Update], start: np.ndarray, privacy: Privacy, expected: float, rng: np.random.Generator
) -> Update:
    """The released update: `start` plus the noised sum of the counted changes over `expected` nodes.

    Each update's `params` sums its counted nodes' clipped models and `weight` counts them (an
    uncounted node adds zero to both); `nodes` names every node that reported, counted or not.
    """
    start = start.astype(np.float64)
    total = np.sum([u.params for u in updates], axis=0)
    change = total - sum(u.weight for u in updates) * start
    noise = rng.normal(0.0, privacy.noiseMultiplier * privacy.clip, size=change.shape)
    nodes = tuple(n for u in updates for n in u.nodes)
    return Update(start + (change + noise) / expected, 1.0, nodes)


def epsilon(rounds: int, sample_rate: float, privacy: Privacy) -> float:
    """Epsilon spent after `rounds` rounds of the Poisson-subsampled Gaussian at `privacy.delta`."""
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    rdp = compute_rdp(q=sample_rate, noise_multiplier=privacy.noiseMultiplier, steps=rounds, orders=RDP_ORDERS)
    eps, _ = get_privacy_spent(orders=RDP_ORDERS, rdp=rdp, delta=privacy.delta)
    return float(eps)


def published(metrics: Mapping[str, float | None], algorithm: Algorithm, rounds: int) -> dict[str, float]:
    """The round's metrics that may leave the server.

    Without privacy, all of them. With it, the nodes' train and eval figures are computed from raw
    node data that no noise covers, so only the privacy spent goes out (the noised global model's loss
    and accuracy on the server's test set are reported beside these, as in every run).
    """
    if algorithm.privacy is None:
        return {k: v for k, v in metrics.items() if v is not None}
    return {"epsilon": epsilon(rounds, algorithm.fraction, algorithm.privacy), "delta": algorithm.privacy.delta}


def report(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """What a run states about its privacy, from a round's published metrics; None for a run without."""
    if "epsilon" not in metrics or "delta" not in metrics:
        return None
    return {"epsilon": metrics["epsilon"], "delta": metrics["delta"], "accountant": ACCOUNTANT, "sampling": SAMPLING}


def summary_metrics(history: list[Mapping[str, Any]]) -> dict[str, Any]:
    """What summary.json states under privacy, in place of the nodes' own test figures (raw, unnoised)."""
    spent = report(history[-1]) if history else None
    return {"privacy": spent} if spent else {}
