"""A user model (`task.model.name: tests.e2e.models:ExplodingModel`) whose training step raises.

It survives the node actor's start-up warm-up (one forward and backward pass on a batch of two) and raises
on the first real training batch, the way a user's model with a shape bug or a NaN check would.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MESSAGE = "ExplodingModel: loss diverged in training (a deliberate failure for the e2e test)"


class ExplodingModel(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] > 2:
            raise RuntimeError(MESSAGE)
        return self.net(x)
