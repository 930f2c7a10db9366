"""The strategy classes by `algorithm.name`, one for each name in the catalog."""

from typing import Any

from red_runtime.strategies.adaptive import FedAdagrad, FedAdam, FedYogi
from red_runtime.strategies.base import Strategy
from red_runtime.strategies.fedavg import FedAvg
from red_runtime.strategies.fedavgm import FedAvgM
from red_runtime.strategies.fedprox import FedProx
from red_runtime.strategies.robust import FedMedian, Krum, TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedMedian, TrimmedMean, Krum)
}


def make_strategy(name: str, options: dict[str, Any]) -> Strategy:
    return STRATEGIES[name](**options)
