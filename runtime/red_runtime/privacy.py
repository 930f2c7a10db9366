"""Differential privacy for server-side rounds (DP-FedAvg, McMahan et al., 2018).

Each node's update (its model minus the global model it started from) is clipped to L2 norm
`clip` inside its actor; the server adds Gaussian noise of standard deviation
`noiseMultiplier * clip` to the sum and averages with equal weights, so one node's influence is
bounded whatever its data size. Privacy spent is accounted with Opacus' RDP accountant for the
subsampled Gaussian mechanism, one step per round, at the manifest's `delta`.
"""

from __future__ import annotations

import numpy as np

from red_runtime.spec import Privacy
from red_runtime.strategies import Update

RDP_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


def clip_update(params: np.ndarray, start: np.ndarray, clip: float) -> np.ndarray:
    """`start` plus the node's change, scaled down to L2 norm `clip` if it is longer."""
    delta = params.astype(np.float64) - start
    norm = float(np.linalg.norm(delta))
    if norm > clip:
        delta *= clip / norm
    return (start + delta).astype(np.float32)


def noisy_sum(updates: list[Update], privacy: Privacy, rng: np.random.Generator) -> Update:
    """All (clipped, equally weighted) updates as one, with the Gaussian mechanism's noise added."""
    total = np.sum([u.params for u in updates], axis=0)
    noise = rng.normal(0.0, privacy.noiseMultiplier * privacy.clip, size=total.shape)
    nodes = tuple(n for u in updates for n in u.nodes)
    return Update(total + noise, sum(u.weight for u in updates), nodes)


def epsilon(rounds: int, sample_rate: float, privacy: Privacy) -> float:
    """Epsilon spent after `rounds` rounds at `privacy.delta`; infinite without noise."""
    if privacy.noiseMultiplier <= 0:
        return float("inf")
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    rdp = compute_rdp(q=sample_rate, noise_multiplier=privacy.noiseMultiplier, steps=rounds, orders=RDP_ORDERS)
    eps, _ = get_privacy_spent(orders=RDP_ORDERS, rdp=rdp, delta=privacy.delta)
    return float(eps)
