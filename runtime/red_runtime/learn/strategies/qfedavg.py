"""q-FedAvg (Li et al., 2020, "Fair Resource Allocation in Federated Learning"): q-FFL's update rule.

A node whose loss at the global model is high gets more say: its change is weighted by F^q, and the step
is normalised by an estimate of the loss's local Lipschitz constant, L = 1 / the local learning rate.
q = 0 is the unweighted mean of the nodes' models.
"""

import numpy as np

from red_runtime.learn.strategies.base import Strategy, Update, stacked_means

# Every node reports this metric: its training loss at the model it was sent (catalog: start_loss).
START_LOSS = "start_loss"


class QFedAvg(Strategy):
    name = "qfedavg"  # option q: red_api/catalog.py

    def step(self, global_params: np.ndarray, updates: list[Update]) -> np.ndarray:
        rows = stacked_means(updates)
        w = global_params.astype(np.float64)
        q, lipschitz = self.opts["q"], 1.0 / self.local_lr
        losses = np.array([u.metrics[START_LOSS] for u in updates], dtype=np.float64) + 1e-10
        changes = lipschitz * (w - rows)  # each node's change, as a gradient estimate
        deltas = np.power(losses, q)[:, None] * changes
        h = q * np.power(losses, q - 1) * (changes * changes).sum(axis=1) + lipschitz * np.power(losses, q)
        return (w - deltas.sum(axis=0) / h.sum()).astype(np.float32)
