"""The strategy classes by `algorithm.name`, one for each name in the catalog."""

from typing import Any

import numpy as np

from red_runtime.learn.strategies.adaptive import FedAdagrad, FedAdam, FedYogi
from red_runtime.learn.strategies.base import Strategy
from red_runtime.learn.strategies.fedavg import FedAvg
from red_runtime.learn.strategies.fedavgm import FedAvgM
from red_runtime.learn.strategies.fedbuff import FedBuff
from red_runtime.learn.strategies.fedprox import FedProx
from red_runtime.learn.strategies.qfedavg import QFedAvg
from red_runtime.learn.strategies.robust import Bulyan, FedMedian, Krum, MultiKrum, TrimmedMean
from red_runtime.learn.strategies.scaffold import Scaffold

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls
    for cls in (
        FedAvg,
        FedProx,
        FedAvgM,
        FedAdam,
        FedYogi,
        FedAdagrad,
        FedMedian,
        TrimmedMean,
        Krum,
        MultiKrum,
        Bulyan,
        QFedAvg,
        Scaffold,
        FedBuff,
    )
}


def make_strategy(
    name: str,
    options: dict[str, Any],
    local_lr: float | None = None,
    node_count: int | None = None,
    buffers: np.ndarray | None = None,
) -> Strategy:
    strategy = STRATEGIES[name](**options)
    if buffers is not None:
        strategy.buffers = buffers
    if local_lr is not None:
        strategy.local_lr = local_lr
    if node_count is not None:
        strategy.node_count = node_count
    return strategy
