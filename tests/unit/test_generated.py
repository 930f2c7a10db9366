"""The CRD is generated from the Federation API, and every copy of it is current: what `scripts/render-install
--check` says, without helm or a cluster. And what generation promises: every field bounded, every default the
parser's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from red_api import crd
from red_api.kinds import Checker, Obj, declared, parse_object
from red_api.spec import FederationSpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
RENDER = "run scripts/render-install"


def test_crds_federation_yaml_is_what_the_api_generates():
    assert (ROOT / "crds" / "federation.yaml").read_text() == crd.render(), RENDER


def test_the_charts_copy_and_install_yaml_carry_the_same_crd():
    generated = crd.render()
    assert (ROOT / "helm" / "red-operator" / "files" / "federation-crd.yaml").read_text() == generated, RENDER
    docs = [d for d in yaml.safe_load_all((ROOT / "manifests" / "install.yaml").read_text()) if d]
    (installed,) = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    installed["metadata"].get("annotations", {}).pop("helm.sh/resource-policy", None)
    if not installed["metadata"].get("annotations"):
        installed["metadata"].pop("annotations", None)
    assert installed == yaml.safe_load(generated), RENDER


def schemas(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, sub in (schema.get("properties") or {}).items():
        out += schemas(sub, f"{path}.{name}")
    for key in ("items", "additionalProperties"):
        if isinstance(schema.get(key), dict):
            out += schemas(schema[key], f"{path}[]")
    return out


def test_every_string_list_and_map_of_the_crd_is_bounded():
    root = crd.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    unbounded = []
    for path, schema in schemas(root):
        if path in ("", ".metadata"):  # the API server's own: it bounds metadata itself
            continue
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            unbounded.append(f"{path}: free-form")
        free_string = schema.get("type") == "string" and "maxLength" not in schema and "enum" not in schema
        if free_string and path not in (".apiVersion", ".kind"):
            unbounded.append(f"{path}: string without maxLength")
        if schema.get("x-kubernetes-int-or-string") and "maxLength" not in schema:
            unbounded.append(f"{path}: quantity without maxLength")
        if schema.get("type") == "array" and "maxItems" not in schema:
            unbounded.append(f"{path}: list without maxItems")
        if "additionalProperties" in schema and "maxProperties" not in schema:
            unbounded.append(f"{path}: map without maxProperties")
        open_number = schema.get("type") in ("number", "integer") and "maximum" not in schema
        if open_number and "format" not in schema and not path.startswith(".status"):
            unbounded.append(f"{path}: number without maximum")
    assert not unbounded, "\n".join(unbounded)


def declared_classes(cls: type, seen: set[type] | None = None) -> set[type]:
    seen = set() if seen is None else seen
    seen.add(cls)
    for _, kind in declared(cls):
        for inner in (kind, getattr(kind, "item", None)):
            if isinstance(inner, Obj) and inner.cls not in seen:
                declared_classes(inner.cls, seen)
    return seen


@pytest.mark.parametrize("cls", sorted(declared_classes(FederationSpec), key=lambda c: c.__name__), ids=str)
def test_a_section_left_out_reads_as_its_dataclass_default(cls):
    """The dataclass defaults are the declared ones: code that builds a spec by hand (tests, `red tune`)
    gets what a manifest that leaves the field out gets."""
    assert parse_object(Checker(), cls, {}, "x") == cls()
