"""Adaptive server optimisers (Reddi et al., 2021, "Adaptive Federated Optimization").

All three treat delta = mean - global as a gradient step and differ only in the second moment:
FedAdagrad sums squares, FedAdam takes an exponential average, FedYogi a sign-controlled one.
"""

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from red_runtime.learn.strategies.base import Strategy, Update, weighted_mean


class _Adaptive(Strategy, ABC):
    """Options serverLr, beta1, beta2 and tau (red_api/catalog.py)."""

    def __init__(self, **options: float):
        super().__init__(**options)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    @abstractmethod
    def second_moment(self, v: np.ndarray, delta_sq: np.ndarray) -> np.ndarray:
        """The next second-moment estimate; the one line in which the three optimisers differ."""

    def step(self, global_params: np.ndarray, updates: list[Update]) -> np.ndarray:
        mean = weighted_mean(updates)
        delta = self.weights_only(mean - global_params.astype(np.float64))
        b1, tau = self.opts["beta1"], self.opts["tau"]
        if self.m is None:
            self.m = np.zeros_like(delta)
            self.v = np.full_like(delta, tau * tau)
        self.m = b1 * self.m + (1 - b1) * delta
        self.v = self.second_moment(self.v, delta * delta)
        new = global_params + self.opts["serverLr"] * self.m / (np.sqrt(self.v) + tau)
        return self.plain_buffers(new, mean).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"m": self.m, "v": self.v}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m, self.v = state.get("m"), state.get("v")


class FedAdagrad(_Adaptive):
    name = "fedadagrad"

    def second_moment(self, v, delta_sq):
        return v + delta_sq


class FedAdam(_Adaptive):
    name = "fedadam"

    def second_moment(self, v, delta_sq):
        b2 = self.opts["beta2"]
        return b2 * v + (1 - b2) * delta_sq


class FedYogi(_Adaptive):
    name = "fedyogi"

    def second_moment(self, v, delta_sq):
        b2 = self.opts["beta2"]
        return v - (1 - b2) * delta_sq * np.sign(v - delta_sq)
