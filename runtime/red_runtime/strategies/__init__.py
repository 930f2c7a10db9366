"""Server-side strategies, one per module, looked up by the manifest's `algorithm.name`."""

from typing import Any

from red_runtime.strategies.adaptive import FedAdagrad, FedAdam, FedYogi
from red_runtime.strategies.base import Strategy, Update, weighted_mean
from red_runtime.strategies.fedavg import FedAvg
from red_runtime.strategies.fedavgm import FedAvgM
from red_runtime.strategies.fedprox import FedProx
from red_runtime.strategies.robust import FedMedian, Krum, TrimmedMean

STRATEGIES: dict[str, type[Strategy]] = {
    cls.name: cls for cls in (FedAvg, FedProx, FedAvgM, FedAdam, FedYogi, FedAdagrad, FedMedian, TrimmedMean, Krum)
}


def check_options(name: str, options: dict[str, Any], sampled: int) -> list[str]:
    """Problems with `algorithm.options` for this strategy, as "key: value: reason" lines."""
    cls = STRATEGIES.get(name)
    return cls.option_problems(options, sampled) if cls else []


def make_strategy(name: str, options: dict[str, Any]) -> Strategy:
    return STRATEGIES[name](**options)


__all__ = ["STRATEGIES", "Strategy", "Update", "check_options", "make_strategy", "weighted_mean"]
