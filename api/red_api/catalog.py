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

MAX_COUNT = 100_000  # a count of nodes (Krum's f and m, FedBuff's concurrency): at most nodes.count


@dataclass(frozen=True)
class Option:
    """One numeric option of a strategy: its default and its bounds (every option has a maximum: a learning
    rate or a count beyond these is a mistake, and a bounded one cannot overflow what is computed from it)."""

    default: float
    minimum: float | None = None
    maximum: float = 1000.0
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
        if value > self.maximum:
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


_COUNT = {"minimum": 0, "maximum": MAX_COUNT, "integer": True}  # of nodes: Krum's f and m, FedBuff's concurrency

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
        options={
            "f": Option(1, **_COUNT),
            "m": Option(1, **{**_COUNT, "minimum": 1}),
        },
        rule=_krum_rule,
    ),
    # m = 0 keeps n - f, the count of nodes Multi-Krum assumes honest.
    "multikrum": Entry(
        linear=False,
        options={
            "f": Option(1, **_COUNT),
            "m": Option(0, **_COUNT),
        },
        rule=_multikrum_rule,
    ),
    "bulyan": Entry(linear=False, options={"f": Option(1, **_COUNT)}, rule=_bulyan_rule),
    "scaffold": Entry(options={"serverLr": Option(1.0, minimum=0, exclusive_min=True)}, control_variates=True),
    "qfedavg": Entry(linear=False, options={"q": Option(0.2, minimum=0, maximum=10)}, start_loss=True),
    # concurrency 0: every node that takes part trains at once.
    "fedbuff": Entry(
        linear=False,
        asynchronous=True,
        options={
            "concurrency": Option(0, **_COUNT),
            "bufferSize": Option(2, **{**_COUNT, "minimum": 1}),
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


def _loosest(name: str) -> Option:
    """One option's bounds across the strategies that take it: the loosest of theirs."""
    found = [entry.options[name] for entry in CATALOG.values() if name in entry.options]
    lows = [o.minimum for o in found]
    low = None if None in lows else min(lows)
    return Option(
        found[0].default,
        minimum=low,
        maximum=max(o.maximum for o in found),
        exclusive_min=all(o.exclusive_min and o.minimum == low for o in found),
        integer=all(o.integer for o in found),
    )


def _option_schema(name: str) -> dict[str, Any]:
    found = [entry.options[name] for entry in CATALOG.values() if name in entry.options]
    if isinstance(found[0], Choice):
        return {"type": "string", "enum": sorted({c for o in found for c in o.choices})}
    loose = _loosest(name)
    schema: dict[str, Any] = {"type": "integer" if loose.integer else "number"}
    if loose.minimum is not None:
        schema["minimum"] = loose.minimum
        if loose.exclusive_min:
            schema["exclusiveMinimum"] = True
    schema["maximum"] = loose.maximum
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


def _bound_cel(strategy: str, key: str, option: Option, loose: Option) -> dict[str, str] | None:
    """A strategy's own bounds on an option, where they are tighter than the schema's (the loosest)."""
    tests, said = [], []
    literal = int if loose.integer else float  # CEL compares an int field with ints, a number with doubles
    if option.minimum is not None and (option.minimum, option.exclusive_min) != (loose.minimum, loose.exclusive_min):
        tests.append(f"self.options.{key} {'>' if option.exclusive_min else '>='} {literal(option.minimum)!r}")
        said.append(f"{'greater than' if option.exclusive_min else 'at least'} {option.minimum}")
    if option.maximum != loose.maximum:
        tests.append(f"self.options.{key} <= {literal(option.maximum)!r}")
        said.append(f"at most {option.maximum}")
    if not tests:
        return None
    return {
        "rule": f"self.name != '{strategy}' || !has(self.options) || !has(self.options.{key}) || " + " && ".join(tests),
        "fieldPath": f".options.{key}",
        "message": f"must be {' and '.join(said)} for {strategy}",
    }


def option_cel() -> list[dict[str, str]]:
    """The rules over algorithm.options that the schema's types cannot say: which strategies take an option,
    and a strategy's own bounds where they are tighter than the schema's."""
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
        if isinstance(CATALOG[takers[0]].options[key], Choice):
            continue
        loose = _loosest(key)
        rules += [r for name in takers if (r := _bound_cel(name, key, CATALOG[name].options[key], loose))]
    return rules
