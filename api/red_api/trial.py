"""Trials of a sweep: a manifest with a trial's values applied, validated by the spec model before any trial runs."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from red_api.spec import SpecError, parse_manifest
from red_api.sweep import Sweep


def apply_values(manifest: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the manifest with each dotted spec path set; missing sections are made on the way."""
    doc = copy.deepcopy(dict(manifest))
    for path, value in values.items():
        node = doc.setdefault("spec", {})
        *parents, leaf = path.split(".")
        for key in parents:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise ValueError(f"spec.{path}: spec.{key} is {child!r}, not a section")
            node = child
        node[leaf] = value
    return doc


def trial_manifest(manifest: Mapping[str, Any], values: Mapping[str, Any], where: str):
    """Apply a trial's values and validate: the Federation, or ValueError naming `where` and the problem."""
    try:
        return parse_manifest(apply_values(manifest, values))
    except (SpecError, ValueError) as err:
        problems = err.problems if isinstance(err, SpecError) else [str(err)]
        raise ValueError(f"{where}: {'; '.join(problems)}") from None


def check_sweep(manifest: Mapping[str, Any], sweep: Sweep) -> None:
    """Validate every bound and choice of every parameter against the spec, before any trial runs."""
    trial_manifest(manifest, {}, "the manifest")
    for param in sweep.params:
        for value in param.values:
            trial_manifest(manifest, {param.path: value}, f"{param.label}: value {value!r}")
