"""What the API knows about each strategy, in plain Python: names, linearity and option rules.

The operator image has no numpy, yet it parses every Federation, so the spec model reads these entries
instead of the strategy classes. The classes take their `linear` flag and options from here as well
(`Strategy.__init_subclass__`), so each rule is stated once.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from red_api.kinds import excerpt, finite_number


@dataclass(frozen=True)
class Option:
    """One numeric option of a strategy: its default and its bounds."""

    default: float
    minimum: float | None = None
    maximum: float | None = None
    exclusive_min: bool = False
    integer: bool = False

    def problem(self, value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be a number"
        if not finite_number(value):
            return "must be a finite number"
        if self.integer and value != int(value):
            return "must be an integer"
        if self.minimum is not None:
            if self.exclusive_min and value <= self.minimum:
                return f"must be greater than {self.minimum}"
            if not self.exclusive_min and value < self.minimum:
                return f"must be at least {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"must be at most {self.maximum}"
        return None


@dataclass(frozen=True)
class Choice:
    """One option of a strategy that names one of a few ways (FedBuff's staleness weighting)."""

    default: str
    choices: tuple[str, ...]

    def problem(self, value: Any) -> str | None:
        if value not in self.choices:
            return f"must be one of {', '.join(self.choices)}"
        return None


# A rule over all of a strategy's options (defaults filled in) and the nodes sampled per round.
Rule = Callable[[Mapping[str, Any], int], "str | None"]


@dataclass(frozen=True)
class Entry:
    """A strategy as the spec sees it. `linear` ones need only the weighted mean, so actors pre-aggregate."""

    linear: bool = True
    options: Mapping[str, Option | Choice] = field(default_factory=dict)
    rule: Rule | None = None
    # Each node also reports the loss of the model it was sent, on its own training data (q-FedAvg).
    start_loss: bool = False
    # The server sends [model, control variate] and each node sends [model, change of its own variate]
    # (SCAFFOLD): both halves are weighted means, so actors still pool.
    control_variates: bool = False
    # Nodes train continuously and the server steps whenever enough updates have arrived (FedBuff).
    asynchronous: bool = False


def _trimmed_mean_rule(opts: Mapping[str, float], sampled: int) -> str | None:
    beta = opts["beta"]
    if sampled - 2 * math.floor(beta * sampled) < 1:
        return f"beta: {beta!r}: trims every one of the {sampled} sampled nodes"
    return None


def _krum_rule(opts: Mapping[str, float], sampled: int) -> str | None:
    f = int(opts["f"])
    if sampled < 2 * f + 3:
        return f"f: {opts['f']!r}: Krum needs at least 2f+3 = {2 * f + 3} nodes per round, got {sampled}"
    return None


def _multikrum_rule(opts: Mapping[str, float], sampled: int) -> str | None:
    problem = _krum_rule(opts, sampled)
    if problem is None and opts["m"] > sampled - opts["f"]:
        return f"m: {opts['m']!r}: keeps more than the n-f = {sampled - int(opts['f'])} honest nodes of {sampled}"
    return problem


def _bulyan_rule(opts: Mapping[str, float], sampled: int) -> str | None:
    f = int(opts["f"])
    if sampled < 4 * f + 3:
        return f"f: {opts['f']!r}: Bulyan needs at least 4f+3 = {4 * f + 3} nodes per round, got {sampled}"
    return None


def _fedbuff_rule(opts: Mapping[str, Any], sampled: int) -> str | None:
    if opts["concurrency"] > sampled:
        return f"concurrency: {opts['concurrency']!r}: more nodes in flight than the {sampled} that take part"
    return None


_ADAPTIVE = {
    "serverLr": Option(0.01, minimum=0, exclusive_min=True),
    "beta1": Option(0.9, 0, 1),
    "beta2": Option(0.99, 0, 1),
    "tau": Option(1e-3, minimum=0, exclusive_min=True),
}

CATALOG: dict[str, Entry] = {
    "fedavg": Entry(),
    "fedprox": Entry(options={"mu": Option(0.01, minimum=0)}),
    "fedavgm": Entry(options={"serverLr": Option(1.0, minimum=0, exclusive_min=True), "momentum": Option(0.9, 0, 1)}),
    "fedadam": Entry(options=_ADAPTIVE),
    "fedyogi": Entry(options=_ADAPTIVE),
    "fedadagrad": Entry(options={**_ADAPTIVE, "serverLr": Option(0.05, minimum=0, exclusive_min=True)}),
    "fedmedian": Entry(linear=False),
    "trimmedmean": Entry(linear=False, options={"beta": Option(0.1, minimum=0, maximum=0.49)}, rule=_trimmed_mean_rule),
    "krum": Entry(
        linear=False,
        options={"f": Option(1, minimum=0, integer=True), "m": Option(1, minimum=1, integer=True)},
        rule=_krum_rule,
    ),
    # m = 0 keeps n - f, the count of nodes Multi-Krum assumes honest.
    "multikrum": Entry(
        linear=False,
        options={"f": Option(1, minimum=0, integer=True), "m": Option(0, minimum=0, integer=True)},
        rule=_multikrum_rule,
    ),
    "bulyan": Entry(linear=False, options={"f": Option(1, minimum=0, integer=True)}, rule=_bulyan_rule),
    "scaffold": Entry(options={"serverLr": Option(1.0, minimum=0, exclusive_min=True)}, control_variates=True),
    "qfedavg": Entry(linear=False, options={"q": Option(0.2, minimum=0, maximum=10)}, start_loss=True),
    # concurrency 0: every node that takes part trains at once.
    "fedbuff": Entry(
        linear=False,
        asynchronous=True,
        options={
            "concurrency": Option(0, minimum=0, integer=True),
            "bufferSize": Option(2, minimum=1, integer=True),
            "serverLr": Option(1.0, minimum=0, exclusive_min=True),
            "staleness": Choice("polynomial", ("constant", "polynomial")),
        },
        rule=_fedbuff_rule,
    ),
}
NAMES = tuple(CATALOG)


def defaults(name: str) -> dict[str, Any]:
    return {key: option.default for key, option in CATALOG[name].options.items()}


def option_problems(name: str, options: Mapping[Any, Any], sampled: int) -> list[str]:
    """Problems with `algorithm.options` for strategy `name`, as "key: value: reason" lines."""
    entry = CATALOG.get(name)
    if entry is None:
        return []
    problems = []
    for key, value in options.items():
        if key not in entry.options:
            known = ", ".join(entry.options) or "none"
            problems.append(f"{key}: {excerpt(value)}: unknown option for {name} (known: {known})")
            continue
        reason = entry.options[key].problem(value)
        if reason:
            problems.append(f"{key}: {excerpt(value)}: {reason}")
    if not problems and entry.rule is not None:
        problem = entry.rule({**defaults(name), **options}, sampled)
        if problem:
            problems.append(problem)
    return problems


def _option_schema(name: str) -> dict[str, Any]:
    """One option's OpenAPI across the strategies that take it: the loosest of their bounds (each strategy's
    own are checked by option_problems)."""
    found = [entry.options[name] for entry in CATALOG.values() if name in entry.options]
    if isinstance(found[0], Choice):
        return {"type": "string", "enum": sorted({c for o in found for c in o.choices})}
    schema: dict[str, Any] = {"type": "integer" if all(o.integer for o in found) else "number"}
    lows = [o.minimum for o in found]
    if None not in lows:
        schema["minimum"] = min(lows)
    highs = [o.maximum for o in found]
    schema["maximum"] = max(highs) if None not in highs else 1e15
    return schema


def option_names() -> list[str]:
    return sorted({key for entry in CATALOG.values() for key in entry.options})


def options_openapi() -> dict[str, Any]:
    """algorithm.options in the CRD: every strategy's options, typed; which strategy takes which is a rule."""
    return {
        "type": "object",
        "description": "per strategy, e.g. {mu: 0.01} for fedprox; each strategy's options and bounds are checked "
        "by the spec model.",
        "properties": {name: _option_schema(name) for name in option_names()},
    }


def option_cel() -> list[dict[str, str]]:
    """One CEL rule per option: set only for a strategy that takes it."""
    rules = []
    for key in option_names():
        takers = [name for name, entry in CATALOG.items() if key in entry.options]
        names = ", ".join(f"'{n}'" for n in takers)
        rules.append(
            {
                "rule": f"!has(self.options) || !has(self.options.{key}) || self.name in [{names}]",
                "fieldPath": f".options.{key}",
                "message": f"is an option of {', '.join(takers)} only",
            }
        )
    return rules
