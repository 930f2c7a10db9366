"""The tenant policy a platform team sets in the chart: which images, Pod and ServiceAccount annotation keys,
priority classes and tolerations a Federation may name. Enforced twice from the one list of RULES below: by
the ValidatingAdmissionPolicy the chart installs (each rule's CEL, so `kubectl apply` refuses with the field
named) and by the operator (each rule's Python, so a Federation that got in before the policy, or past it,
ends InvalidSpec and runs nothing).

An allow-list holds prefixes (images, annotation keys) or names (priority classes); ANY alone allows all,
which is the chart's default, so the README's examples apply unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from typing import Any

from red_api.kinds import excerpt
from red_api.names import DEFAULT_IMAGE

ANY = "*"
# The taint a GPU group tolerates by default (pod.PodOptions): always allowed, whatever `tolerations` says.
GPU_TAINT = "nvidia.com/gpu"
TOLERATIONS = ("any", "gpu")
ENV = "RED_TENANT_POLICY"  # the policy as JSON, as the chart gives it to the operator


@dataclass(frozen=True)
class TenantPolicy:
    imagePrefixes: tuple[str, ...] = (ANY,)
    podAnnotationKeys: tuple[str, ...] = (ANY,)
    serviceAccountAnnotationKeys: tuple[str, ...] = (ANY,)
    priorityClasses: tuple[str, ...] = (ANY,)
    tolerations: str = "any"  # "gpu": only the GPU taint may be tolerated

    @classmethod
    def parse(cls, doc: Mapping[str, Any] | None) -> TenantPolicy:
        """From the chart's tenantPolicy values; ValueError naming the key for anything else."""
        doc = doc or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(doc) - known)
        if unknown:
            raise ValueError(f"tenantPolicy: {', '.join(unknown)}: unknown (known: {', '.join(sorted(known))})")
        values: dict[str, Any] = {}
        for name in known - {"tolerations"}:
            items = doc.get(name, [ANY])
            if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
                raise ValueError(f"tenantPolicy.{name}: {excerpt(items)}: must be a list of non-empty strings")
            values[name] = tuple(items)
        tolerations = doc.get("tolerations", "any")
        if tolerations not in TOLERATIONS:
            raise ValueError(
                f"tenantPolicy.tolerations: {excerpt(tolerations)}: must be one of {', '.join(TOLERATIONS)}"
            )
        return cls(**values, tolerations=tolerations)

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TenantPolicy:
        text = environ.get(ENV, "")
        try:
            return cls.parse(json.loads(text) if text else None)
        except json.JSONDecodeError as err:
            raise ValueError(f"{ENV}: not JSON: {err}") from err


def _allowed(value: str, allowed: tuple[str, ...]) -> bool:
    return ANY in allowed or any(value.startswith(p) for p in allowed)


def _named(value: str, allowed: tuple[str, ...]) -> bool:
    return ANY in allowed or value in allowed


def _groups(spec: Any) -> Iterator[tuple[str, Any]]:
    """(path, PodOptions) of the head and of every worker group."""
    yield "spec.ray.head", spec.ray.head
    for i, group in enumerate(spec.ray.workerGroups):
        yield f"spec.ray.workerGroups[{i}]", group


def _images(spec: Any, p: TenantPolicy) -> Iterator[tuple[str, Any, str]]:
    if not _allowed(spec.ray.image, p.imagePrefixes):
        yield "spec.ray.image", spec.ray.image, "is not an image this cluster allows"
    uri = (spec.ray.runtimeEnv or {}).get("image_uri")
    if isinstance(uri, str) and not _allowed(uri, p.imagePrefixes):
        yield "spec.ray.runtimeEnv.image_uri", uri, "is not an image this cluster allows"


def _annotations(spec: Any, p: TenantPolicy) -> Iterator[tuple[str, Any, str]]:
    for path, group in _groups(spec):
        for key in group.annotations:
            if not _allowed(key, p.podAnnotationKeys):
                yield f"{path}.annotations[{key}]", key, "is not a Pod annotation this cluster allows"
        for key in group.serviceAccountAnnotations:
            if not _allowed(key, p.serviceAccountAnnotationKeys):
                yield (
                    f"{path}.serviceAccountAnnotations[{key}]",
                    key,
                    "is not a ServiceAccount annotation this cluster allows",
                )


def _scheduling(spec: Any, p: TenantPolicy) -> Iterator[tuple[str, Any, str]]:
    for path, group in _groups(spec):
        if group.priorityClassName and not _named(group.priorityClassName, p.priorityClasses):
            yield f"{path}.priorityClassName", group.priorityClassName, "is not a priority class this cluster allows"
        if p.tolerations == "gpu":
            for i, toleration in enumerate(group.tolerations or ()):
                if toleration.get("key") != GPU_TAINT:
                    why = f"tolerates a taint other than {GPU_TAINT}, which this cluster does not allow"
                    yield f"{path}.tolerations[{i}]", toleration, why


@dataclass(frozen=True)
class PolicyRule:
    """One rule in Python (over the parsed spec) and in CEL (over the Federation object, `object`), with the
    chart's values spliced in where the CEL names them (VALUES_HOLE)."""

    name: str
    check: Callable[[Any, TenantPolicy], Iterator[tuple[str, Any, str]]]
    cel: str
    message: str


# What the chart's template puts in place of `values.<key>`: the value as a CEL literal (JSON is one).
def _values(key: str) -> str:
    return "{{ .Values.tenantPolicy." + key + " | toJson }}"


# A Federation may have no spec at all (every field defaulted): each path is guarded from `object.spec` down.
_RAY = "has(object.spec) && has(object.spec.ray)"
_IMAGE = f"({_RAY} && has(object.spec.ray.image) ? object.spec.ray.image : '{DEFAULT_IMAGE}')"
_ENV_IMAGE = "object.spec.ray.runtimeEnv.image_uri"
_GROUPS = (
    f"({_RAY} && has(object.spec.ray.head) ? [object.spec.ray.head] : []) + "
    f"({_RAY} && has(object.spec.ray.workerGroups) ? object.spec.ray.workerGroups : [])"
)


def _prefixed(value: str, key: str) -> str:
    return f"{_values(key)}.exists(p, p == '{ANY}' || {value}.startsWith(p))"


RULES = (
    PolicyRule(
        "images",
        _images,
        cel=f"{_prefixed(_IMAGE, 'imagePrefixes')} && (!({_RAY}) || !has(object.spec.ray.runtimeEnv) || "
        f"!has({_ENV_IMAGE}) || {_prefixed(_ENV_IMAGE, 'imagePrefixes')})",
        message="spec.ray.image (or runtimeEnv.image_uri) is not an image this cluster allows",
    ),
    PolicyRule(
        "annotations",
        _annotations,
        cel=f"({_GROUPS}).all(g, (!has(g.annotations) || g.annotations.all(k, "
        f"{_prefixed('k', 'podAnnotationKeys')})) && "
        f"(!has(g.serviceAccountAnnotations) || g.serviceAccountAnnotations.all(k, "
        f"{_prefixed('k', 'serviceAccountAnnotationKeys')})))",
        message="a Pod or ServiceAccount annotation of spec.ray is not one this cluster allows",
    ),
    PolicyRule(
        "scheduling",
        _scheduling,
        cel=f"({_GROUPS}).all(g, (!has(g.priorityClassName) || g.priorityClassName == '' || "
        f"{_values('priorityClasses')}.exists(c, c == '{ANY}' || c == g.priorityClassName)) && "
        f"({_values('tolerations')} == 'any' || !has(g.tolerations) || g.tolerations.all(t, has(t.key) && "
        f"t.key == '{GPU_TAINT}')))",
        message=f"a priority class or a toleration (beyond {GPU_TAINT}) of spec.ray is not one this cluster allows",
    ),
)


def problems(spec: Any, policy: TenantPolicy) -> list[str]:
    """What `spec` names that `policy` does not allow, each as "path: value: reason" (SpecError's form)."""
    return [f"{path}: {excerpt(value)}: {why}" for rule in RULES for path, value, why in rule.check(spec, policy)]


def admission_validations() -> str:
    """The ValidatingAdmissionPolicy's validations, for the chart (scripts/render-install writes them to
    helm/red-operator/files/tenant-policy.yaml, which its template renders with `tpl`)."""
    lines = ["# Generated by scripts/render-install from api/red_api/policy.py: do not edit."]
    for rule in RULES:
        lines += [
            "- expression: |-",
            f"    {rule.cel}",
            f"  message: {json.dumps(rule.message)}",
            "  reason: Forbidden",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(admission_validations(), end="")
