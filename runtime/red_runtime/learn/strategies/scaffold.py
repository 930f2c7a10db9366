"""SCAFFOLD (Karimireddy et al., 2020, "Stochastic Controlled Averaging for Federated Learning").

Client drift under non-IID data is corrected with control variates: the server keeps c, each node its own
c_i, and a node adds c - c_i to every local gradient. After K local steps from x to y_i, the node's new
variate is c_i - c + (x - y_i) / (K * lr) (the paper's option II). Nodes send [y_i, change of c_i]; the
server moves x by serverLr times the mean change and c by the mean variate change times the share of
nodes that took part. Both halves are weighted means, so node actors pool them like FedAvg's models.
"""

from typing import Any

import numpy as np

from red_runtime.learn.strategies.base import Strategy, Update, weighted_mean


def split(received: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[model, control variate] as the server sent them (or a node's [model, variate change])."""
    half = len(received) // 2
    return received[:half], received[half:]


class Scaffold(Strategy):
    name = "scaffold"  # option serverLr: red_api/catalog.py

    def __init__(self, **options: float):
        super().__init__(**options)
        self.control: np.ndarray | None = None

    def broadcast(self, params: np.ndarray) -> np.ndarray:
        control = np.zeros_like(params) if self.control is None else self.control.astype(params.dtype)
        return np.concatenate([params, control])

    def step(self, global_params: np.ndarray, updates: list[Update]) -> np.ndarray:
        models, control_change = split(weighted_mean(updates))
        took_part = sum(len(u.nodes) or 1 for u in updates)
        x = global_params.astype(np.float64)
        c = np.zeros_like(x) if self.control is None else self.control
        self.control = c + min(1.0, took_part / self.node_count) * control_change
        return self.plain_buffers(x + self.opts["serverLr"] * (models - x), models).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"control": self.control}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.control = state.get("control")
