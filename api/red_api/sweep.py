"""A sweep over a Federation: what `red tune --param PATH=SPEC` and `spec.sweep` mean, checked without Ray.

Every check here runs before any trial starts. A parameter names a dotted path inside `spec`
(`task.train.lr`); trial.py applies each value a trial could draw (a range's bounds, each choice) to the
manifest and validates it with the spec model, so a value the spec refuses fails there, naming the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

KINDS = ("loguniform", "uniform", "choice", "randint", "grid")
SCHEDULERS = ("asha", "fifo")
MODES = ("max", "min")
METRICS = ("accuracy", "loss")
SWEEP_FIELDS = ("params", "samples", "metric", "mode", "scheduler", "concurrency")
MAX_SAMPLES = 10_000
MAX_CONCURRENCY = 1000
MAX_PARAMS = 32
MAX_PARAM_LENGTH = 1024


@dataclass(frozen=True)
class Param:
    """One swept spec path: a range (loguniform, uniform, randint: bounds, randint's upper included) or a
    list of values (choice: drawn at random; grid: every value in turn)."""

    path: str
    kind: str
    values: tuple[Any, ...]  # a range's bounds, or the listed values: checking these checks every draw
    where: str = "--param"  # how the user wrote it: the flag, or its place in spec.sweep

    @property
    def label(self) -> str:
        sep = "," if self.kind in ("choice", "grid") else ":"
        return f"{self.where} {self.path}={self.kind}:{sep.join(map(str, self.values))}"


@dataclass(frozen=True)
class Sweep:
    params: tuple[Param, ...]
    samples: int = 8
    metric: str = "accuracy"
    mode: str = "max"
    scheduler: str = "asha"
    concurrency: int = 0  # 0: as many trials at once as the cluster holds

    @property
    def trials(self) -> int:
        """How many trials run: grid values multiply the samples, as in Ray Tune."""
        grid = math.prod(len(p.values) for p in self.params if p.kind == "grid")
        return self.samples * grid


def _scalar(text: str) -> Any:
    """A choice written on the command line, read as YAML reads it: 0.1 a number, fedavg a string."""
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:  # not a YAML scalar ("[,1"): the text itself
        return text
    return value if isinstance(value, (int, float, str, bool)) else text


def parse_param(text: str, where: str = "--param") -> Param:
    """`task.train.lr=loguniform:1e-3:0.3` → Param; ValueError naming `where` and the text."""
    path, sep, spec = text.partition("=")
    path = path.strip()
    if path.startswith("spec."):
        path = path[len("spec.") :]
    if not sep or not path or not spec:
        raise ValueError(f"{where} {text!r}: expected PATH=KIND:VALUES, e.g. task.train.lr=loguniform:1e-3:0.3")
    kind, _, rest = spec.partition(":")
    if kind not in KINDS:
        raise ValueError(f"{where} {text!r}: unknown kind {kind!r}; one of {', '.join(KINDS)}")
    if kind in ("choice", "grid"):
        values = tuple(_scalar(v) for v in rest.split(","))
        if not rest or any(v == "" for v in values):
            raise ValueError(f"{where} {text!r}: {kind} takes a comma-separated list, e.g. {kind}:0.01,0.1")
        return Param(path, kind, values, where)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise ValueError(f"{where} {text!r}: {kind} takes two bounds, e.g. {kind}:LOW:HIGH")
    number = int if kind == "randint" else float
    try:
        low, high = (number(b) for b in bounds)
    except ValueError:
        raise ValueError(f"{where} {text!r}: bounds must be {number.__name__}s") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{where} {text!r}: needs LOW < HIGH, both finite")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"{where} {text!r}: loguniform needs LOW > 0")
    return Param(path, kind, (low, high), where)


def parse_sweep(
    params: list[str], samples: int, metric: str, mode: str, scheduler: str, concurrency: int, where: str = ""
) -> Sweep:
    """The sweep of `red tune`'s flags (or spec.sweep's fields, named under `where`)."""
    flag = (lambda name: f"{where}.{name}") if where else (lambda name: f"--{name}")
    params_field = f"{where}.params" if where else "--param"
    if not params:
        raise ValueError(f"{params_field}: a sweep needs at least one parameter")
    parsed = tuple(parse_param(p, f"{where}.params[{i}]" if where else "--param") for i, p in enumerate(params))
    seen = [p.path for p in parsed]
    dupes = sorted({p for p in seen if seen.count(p) > 1})
    if dupes:
        raise ValueError(f"{params_field}: {', '.join(dupes)}: swept twice")
    checks = (
        (
            isinstance(samples, int) and not isinstance(samples, bool) and 1 <= samples <= MAX_SAMPLES,
            "samples",
            samples,
        ),
        (metric in METRICS, "metric", metric),
        (mode in MODES, "mode", mode),
        (scheduler in SCHEDULERS, "scheduler", scheduler),
        (
            isinstance(concurrency, int) and not isinstance(concurrency, bool) and 0 <= concurrency <= MAX_CONCURRENCY,
            "concurrency",
            concurrency,
        ),
    )
    for ok, name, value in checks:
        if not ok:
            allowed = {"metric": METRICS, "mode": MODES, "scheduler": SCHEDULERS}.get(name)
            hint = (
                f"one of {', '.join(allowed)}"
                if allowed
                else f"an integer (samples 1..{MAX_SAMPLES}, concurrency 0..{MAX_CONCURRENCY})"
            )
            raise ValueError(f"{flag(name)}: {value!r}: expected {hint}")
    return Sweep(parsed, samples, metric, mode, scheduler, concurrency)


def sweep_from_spec(raw: Mapping[str, Any], path: str = "spec.sweep") -> Sweep:
    """spec.sweep: the same fields as `red tune`'s flags, params as a list of PATH=SPEC strings."""
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: {raw!r}: must be a mapping")
    unknown = sorted(map(str, set(raw) - set(SWEEP_FIELDS)))
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; known: {', '.join(SWEEP_FIELDS)}")
    params = raw.get("params") or []
    if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
        raise ValueError(f"{path}.params: {params!r}: a list of PATH=KIND:VALUES strings")
    if len(params) > MAX_PARAMS or any(len(p) > MAX_PARAM_LENGTH for p in params):
        raise ValueError(f"{path}.params: at most {MAX_PARAMS} parameters of at most {MAX_PARAM_LENGTH} characters")
    return parse_sweep(
        params,
        raw.get("samples", 8),
        raw.get("metric", "accuracy"),
        raw.get("mode", "max"),
        raw.get("scheduler", "asha"),
        raw.get("concurrency", 0),
        where=path,
    )


def openapi() -> dict[str, Any]:
    """spec.sweep in the CRD, from the same bounds as the checks above."""
    return {
        "type": "object",
        "description": "a Ray Tune sweep on the Federation's RayCluster, every trial a whole federation "
        "(as `red tune`).",
        "required": ["params"],
        "properties": {
            "params": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_PARAMS,
                "description": "PATH=SPEC, e.g. task.train.lr=loguniform:1e-3:0.3 (loguniform, uniform, randint, "
                "choice, grid).",
                "items": {"type": "string", "maxLength": MAX_PARAM_LENGTH},
            },
            "samples": {"type": "integer", "minimum": 1, "maximum": MAX_SAMPLES, "default": 8},
            "metric": {"type": "string", "enum": list(METRICS), "default": "accuracy"},
            "mode": {"type": "string", "enum": list(MODES), "default": "max"},
            "scheduler": {"type": "string", "enum": list(SCHEDULERS), "default": "asha"},
            "concurrency": {
                "type": "integer",
                "minimum": 0,
                "maximum": MAX_CONCURRENCY,
                "default": 0,
                "description": "trials at once; 0 as many as the cluster holds.",
            },
        },
    }
