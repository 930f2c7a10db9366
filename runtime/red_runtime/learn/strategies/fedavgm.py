"""FedAvgM (Hsu et al., 2019): server momentum on the pseudo-gradient (global - mean)."""

from typing import Any

import numpy as np

from red_runtime.learn.strategies.base import Strategy, Update, weighted_mean


class FedAvgM(Strategy):
    name = "fedavgm"  # options serverLr, momentum: red_api/catalog.py

    def __init__(self, **options: float):
        super().__init__(**options)
        self.velocity: np.ndarray | None = None

    def step(self, global_params: np.ndarray, updates: list[Update]) -> np.ndarray:
        mean = weighted_mean(updates)
        pseudo_grad = self.weights_only(global_params.astype(np.float64) - mean)
        if self.velocity is None:
            self.velocity = pseudo_grad
        else:
            self.velocity = self.opts["momentum"] * self.velocity + pseudo_grad
        return self.plain_buffers(global_params - self.opts["serverLr"] * self.velocity, mean).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"velocity": self.velocity}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.velocity = state.get("velocity")
