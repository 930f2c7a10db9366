"""Server-side strategies, one per module, looked up by the manifest's `algorithm.name`.

Importing the package loads nothing but itself: the spec model reads `strategies.catalog` (plain
Python) in the operator image, which has no numpy. The names below load their modules, and numpy,
on first use.
"""

from importlib import import_module
from typing import Any

_HOMES = {
    "STRATEGIES": "red_runtime.learn.strategies.registry",
    "make_strategy": "red_runtime.learn.strategies.registry",
    "Strategy": "red_runtime.learn.strategies.base",
    "Update": "red_runtime.learn.strategies.base",
    "weighted_mean": "red_runtime.learn.strategies.base",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


__all__ = ["STRATEGIES", "Strategy", "Update", "make_strategy", "weighted_mean"]
