"""The strategy interface: how the server turns this round's updates into the next global model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from red_api.catalog import CATALOG, Choice, Option


@dataclass
class Update:
    """Model parameters from one or more nodes.

    `params` is the weighted *sum* of the nodes' flat parameter vectors (float64) and `weight` the sum
    of their weights, so an actor hosting many nodes can send one partial aggregate instead of one
    update per node; for a single node `params / weight` is its model.
    """

    params: np.ndarray
    weight: float
    nodes: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def mean(self) -> np.ndarray:
        return self.params / self.weight

    @staticmethod
    def single(node: str, params: np.ndarray, weight: float) -> Update:
        return Update(params=params.astype(np.float64) * weight, weight=float(weight), nodes=(node,))


class Strategy:
    """One server-side aggregation rule.

    `linear` strategies only need the weighted mean of the updates, so node actors pre-aggregate;
    robust ones (median, trimmed mean, Krum) must see each node's update. A class that names itself
    takes `linear` and `options` from its entry in red_api/catalog.py, which the spec model reads.
    """

    name: ClassVar[str]
    linear: ClassVar[bool] = True
    options: ClassVar[Mapping[str, Option | Choice]] = {}
    # Local-training proximal coefficient (FedProx); zero for everything else.
    proximal_mu: float = 0.0
    # The nodes' learning rate (task.train.lr), for rules that turn a change back into a gradient.
    local_lr: float = 0.05
    # nodes.count, for rules that scale by the share of nodes that took part.
    node_count: int = 1
    # Where the model's buffers (running statistics) lie in the flat vector: a server optimiser steps the
    # weights only, and every buffer takes the nodes' plain mean (see `plain_buffers`).
    buffers: np.ndarray = np.zeros(0, dtype=np.int64)

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            entry = CATALOG[cls.name]
            cls.linear, cls.options = entry.linear, entry.options

    def __init__(self, **options: Any):
        merged = {k: o.default for k, o in self.options.items()}
        merged.update(options)
        self.opts = merged

    def broadcast(self, params: np.ndarray) -> np.ndarray:
        """What the server sends the nodes: the global model, or more for rules that need more."""
        return params

    def aggregate(self, updates: list[Update]) -> np.ndarray:
        """Combine updates into one parameter vector (float64)."""
        return weighted_mean(updates)

    def step(self, global_params: np.ndarray, updates: list[Update]) -> np.ndarray:
        """The next global model (float32) from the current one and this round's updates."""
        return self.aggregate(updates).astype(np.float32)

    def plain_buffers(self, new: np.ndarray, mean: np.ndarray) -> np.ndarray:
        """`new` with each buffer set to the nodes' mean: statistics are averaged, never momentum-stepped."""
        if not self.buffers.size:
            return new
        out = np.array(new)
        out[self.buffers] = mean[self.buffers]
        return out

    def weights_only(self, delta: np.ndarray) -> np.ndarray:
        """A server step's direction with the buffers taken out, so optimiser state never sees them."""
        if self.buffers.size:
            delta[self.buffers] = 0.0
        return delta

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore server state (optimiser moments) from a checkpoint."""


def weighted_mean(updates: list[Update]) -> np.ndarray:
    if not updates:
        raise ValueError("no updates to aggregate")
    total = sum(u.weight for u in updates)
    acc = np.zeros_like(updates[0].params, dtype=np.float64)
    for u in updates:
        acc += u.params
    return acc / total


def stacked_means(updates: list[Update]) -> np.ndarray:
    """Each node's own model, one row each; robust strategies need them unpooled."""
    for u in updates:
        if len(u.nodes) > 1:
            raise ValueError(f"robust aggregation received a pooled update from {len(u.nodes)} nodes")
    return np.stack([u.mean for u in updates])
