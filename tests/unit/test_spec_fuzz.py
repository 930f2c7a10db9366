"""Whatever a manifest holds, parsing it either succeeds or raises SpecError naming the field and the value.

Anything else (a ValueError from int(), an OverflowError, a TypeError) would make kopf retry the reconcile
forever and `red validate` print a traceback. The numeric fields come from the spec model's own dataclasses,
so a field added later is fuzzed too.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

import pytest

from red_api.catalog import CATALOG
from red_api.kinds import excerpt
from red_api.spec import FederationSpec, SpecError, parse_manifest

pytestmark = pytest.mark.unit

# Not a number at all, or not one a double can hold: each must be refused wherever a number goes.
NOT_A_NUMBER = ["x", "", True, [1], {"a": 1}, math.nan, math.inf, -math.inf, 10**400, -(10**400)]
# Numbers at the edges: accepted or refused, but never anything but SpecError.
EDGES = [0, -1, 1, 0.5, -0.0, 1e-300, 1e308, -1e308, 2**63, 2**31, 7.0]
# Fields that only take effect with another setting; set it, so the deeper checks run too.
CONTEXT = {
    "topology.degree": {"topology": {"kind": "kregular"}},
    "topology.groups": {"topology": {"kind": "hierarchical"}},
    "task.partition.alpha": {"task": {"partition": {"kind": "dirichlet"}}},
    "task.partition.labels": {"task": {"partition": {"kind": "labels"}}},
}
QUANTITIES = ["ray.head.cpu", "ray.head.memory", "ray.workerGroups.cpu", "ray.workerGroups.memory"]


def numeric_fields(cls: type = FederationSpec, prefix: str = "") -> list[tuple[str, type]]:
    """Every int or float field of the spec model, as a dotted path and its type."""
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
        # X | None is X that may be left out; tuple[WorkerGroup, ...] is a list of sections.
        target = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType, tuple) else hint
        if typing.get_origin(hint) is tuple and not dataclasses.is_dataclass(target):
            continue
        if dataclasses.is_dataclass(target):
            found += numeric_fields(target, f"{prefix}{f.name}.")
        elif target in (int, float):
            found.append((f"{prefix}{f.name}", target))
    return found


def deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for key, value in b.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def spec_with(path: str, value) -> dict:
    """A spec that sets `path` (dotted; worker-group fields go into one group named w) to `value`."""
    if path.startswith("ray.workerGroups."):
        return {"ray": {"workerGroups": [{"name": "w", path.rpartition(".")[2]: value}]}}
    spec: dict = {}
    node = spec
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return deep_merge(CONTEXT.get(path, {}), spec)


def outcome(spec: dict) -> list[str] | None:
    """None when it parses, else the problems; any other exception fails the test."""
    doc = {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "f"}, "spec": spec}
    try:
        parse_manifest(doc)
    except SpecError as err:
        return err.problems
    return None


def named(problems: list[str] | None, path: str, value) -> bool:
    path = path.replace(".workerGroups.", ".workerGroups[0].")
    return problems is not None and any(p.startswith(f"spec.{path}:") and excerpt(value) in p for p in problems)


def test_the_walk_finds_the_numeric_fields():
    paths = dict(numeric_fields())
    assert {"rounds", "nodes.count", "algorithm.privacy.delta", "ray.workerGroups.gpu", "task.train.lr"} <= set(paths)


@pytest.mark.parametrize("path, kind", [pytest.param(p, k, id=p) for p, k in numeric_fields()])
def test_a_numeric_field_refuses_what_is_not_a_finite_number(path, kind):
    for value in NOT_A_NUMBER + ([1.5] if kind is int else []):
        assert named(outcome(spec_with(path, value)), path, value), (path, value)
    for value in EDGES:
        outcome(spec_with(path, value))


@pytest.mark.parametrize(
    "name, option", [pytest.param(n, o, id=f"{n}.{o}") for n, e in CATALOG.items() for o in e.options]
)
def test_every_option_of_every_strategy_refuses_what_is_not_a_finite_number(name, option):
    for count in (1, 20):
        for value in NOT_A_NUMBER:
            spec = {"algorithm": {"name": name, "options": {option: value}}, "nodes": {"count": count}}
            assert named(outcome(spec), f"algorithm.options.{option}", value), (name, option, value)
        for value in EDGES + [1.5]:
            outcome({"algorithm": {"name": name, "options": {option: value}}, "nodes": {"count": count}})


def test_krum_f_given_as_a_word_is_a_spec_error():
    assert named(outcome({"algorithm": {"name": "krum", "options": {"f": "x"}}}), "algorithm.options.f", "x")


@pytest.mark.parametrize("path", QUANTITIES)
def test_a_quantity_is_a_string_or_a_finite_number(path):
    for value in [[1], {"a": 1}, True, math.nan, math.inf, 10**400]:
        assert named(outcome(spec_with(path, value)), path, value), value
    assert outcome(spec_with(path, "500m")) is None and outcome(spec_with(path, 2)) is None


SECTIONS = ["topology", "nodes", "nodes.resources", "placement", "algorithm", "algorithm.options"]
SECTIONS += ["algorithm.privacy", "task", "task.dataset", "task.partition", "task.model", "task.train"]
SECTIONS += ["checkpoint", "faultTolerance", "ray", "ray.head", "ray.runtimeEnv"]


@pytest.mark.parametrize("path", SECTIONS)
def test_a_section_of_the_wrong_shape_is_a_spec_error(path):
    for value in ["x", 5, [1, 2], True]:
        assert named(outcome(spec_with(path, value)), path, value), value
    if path != "ray.runtimeEnv":  # free-form: Ray's runtime_env
        # Keys YAML can give that are not strings (1:, ~:) next to string ones.
        assert outcome(spec_with(path, {1: 2, None: 3, "zz": 4})) is not None


@pytest.mark.parametrize(
    "spec",
    [
        {1: 2, "zz": 3},
        {"topology": {"kind": ["ring"]}},
        {"topology": {"kind": "custom", "edges": [[0, 10**400], [1.5, 2], "ab", None]}},
        {"topology": {"kind": "custom", "edges": {"a": 1}}},
        {"nodes": {"role": 7}},
        {"task": {"model": {"hidden": [10**400, math.nan]}}},
        {"task": {"dataset": {"name": {"a": 1}}}},
        {"ray": {"workerGroups": [None, 3, {"name": ["w"]}]}},
        {"ray": {"workerGroups": {"name": "w"}}},
        {"algorithm": {"name": "krum", "options": {"f": math.nan, "m": "x"}, "privacy": {"clip": math.inf}}},
        {"algorithm": {"name": "trimmedmean", "options": {"beta": math.nan}}, "nodes": {"count": 1}},
    ],
)
def test_odd_shapes_are_spec_errors(spec):
    assert outcome(spec) is not None
