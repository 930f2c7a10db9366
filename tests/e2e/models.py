"""User models for the e2e tests (`task.model.name: tests.e2e.models:ExplodingModel`).

ExplodingModel raises on its first training batch, the way a user's model with a shape bug or a NaN check would. (A
node actor's start-up warm-up trains a private layer, never the user's model, so that batch is real data.)
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
from torch import nn

MESSAGE = "ExplodingModel: loss diverged in training (a deliberate failure for the e2e test)"


class ExplodingModel(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError(MESSAGE)
        return self.net(x)


class CrashOnceModel(nn.Module):
    """Kills its node actor's whole driver attempt once: after `RED_TEST_CRASH_AFTER` training batches it
    raises, leaving a marker file (`RED_TEST_CRASH_MARKER`) so the retried attempt trains through."""

    def __init__(self, input_shape: tuple[int, ...], classes: int):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 64), nn.ReLU(), nn.Linear(64, classes))
        self.batches = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.batches += 1
            marker = Path(os.environ["RED_TEST_CRASH_MARKER"])
            if self.batches > int(os.environ["RED_TEST_CRASH_AFTER"]) and not marker.exists():
                marker.write_text("crashed once\n")
                raise RuntimeError("CrashOnceModel: the first attempt dies here")
        return self.net(x)
