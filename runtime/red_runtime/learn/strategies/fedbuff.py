"""FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022).

Nodes train without waiting for each other, each from whatever global model was current when it
started; the server steps as soon as `bufferSize` changes have arrived. A change that started from a
model `tau` steps old counts `1 / sqrt(1 + tau)` (polynomial) or fully (constant). The scheduling lives
in engine/rounds/buffered.py; this is the arithmetic.
"""

from __future__ import annotations

import numpy as np

from red_runtime.learn.strategies.base import Strategy, Update

# The staleness a node's change carried, in the update's metrics.
STALENESS = "staleness"


def staleness_weight(kind: str, tau: int) -> float:
    return 1.0 if kind == "constant" else 1.0 / float(np.sqrt(1.0 + tau))


class FedBuff(Strategy):
    """Each update's `params` is one node's change (its model minus the one it started from), weight 1."""

    name = "fedbuff"

    def step(self, global_params: np.ndarray, updates: list[Update]) -> np.ndarray:
        if not updates:
            raise ValueError("no updates to aggregate")
        total = np.zeros_like(global_params, dtype=np.float64)
        plain = np.zeros_like(total)
        for u in updates:
            total += staleness_weight(self.opts["staleness"], int(u.metrics[STALENESS])) * u.params
            plain += u.params
        x = global_params.astype(np.float64)
        new = x + self.opts["serverLr"] * total / len(updates)
        return self.plain_buffers(new, x + plain / len(updates)).astype(np.float32)
