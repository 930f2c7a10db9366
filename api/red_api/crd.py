"""The Federation CustomResourceDefinition, generated from the declarations in spec.py and status.py.

`python -m red_api.crd` prints it; scripts/render-install writes it to crds/federation.yaml and the chart, and
`scripts/render-install --check` (and tests/unit/test_generated.py) fail when a committed copy is stale.
Nobody edits the CRD: a field, a bound or a rule changes in spec.py, and this regenerates it.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from red_api.kinds import Obj
from red_api.names import API_GROUP, KIND, PLURAL, VERSION
from red_api.spec import MAX_NAME_LENGTH, FederationSpec
from red_api.status import STATUS

HEADER = """\
# The Federation CustomResourceDefinition (red.dev/v1alpha1).
# Generated from api/red_api (spec.py, status.py) by scripts/render-install: do not edit.
#
# Every string, list and map is bounded, so the API server refuses an oversized Federation at apply time.
# Unknown fields: a structural schema prunes them silently, while the spec model rejects them. Apply with
# `kubectl apply --validate=strict` to have typos refused instead of dropped. What CEL cannot say (a custom
# topology's connectivity, each strategy's own option bounds) the spec model checks; the operator reports
# such a Federation Failed with reason InvalidSpec and creates nothing for it.
"""

# (name, type, jsonPath, wide only)
PRINTER_COLUMNS = (
    ("Ready", "string", '.status.conditions[?(@.type=="Ready")].status', False),
    ("Phase", "string", ".status.phase", False),
    ("Round", "string", ".status.progress", False),
    ("Nodes", "string", ".status.nodesReady", False),
    ("Accuracy", "number", ".status.metrics.accuracy", False),
    ("Age", "date", ".metadata.creationTimestamp", False),
    ("RayJob", "string", ".status.rayJobName", True),
    ("RayCluster", "string", ".status.rayClusterName", True),
    ("Reason", "string", ".status.reason", True),
    ("Model", "string", ".status.artifacts.model", True),
    ("Serve", "string", ".status.serveURL", True),
)


def schema() -> dict[str, Any]:
    spec = Obj(FederationSpec).openapi()
    spec.pop("default")  # a Federation without a spec is one with every default: the sections default each
    return {
        "type": "object",
        "description": "Federated learning on Ray; the operator runs it as a KubeRay RayCluster and RayJob.",
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                "message": f"metadata.name: at most {MAX_NAME_LENGTH} characters leave room for the names KubeRay "
                "gives the RayCluster's Services",
            },
            {
                "rule": "self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
                "message": "metadata.name: must be a lowercase DNS label",
            },
        ],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": STATUS.openapi(),
        },
    }


def crd() -> dict[str, Any]:
    columns = []
    for name, kind, path, wide in PRINTER_COLUMNS:
        column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
        if wide:
            column["priority"] = 1
        columns.append(column)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{API_GROUP}", "labels": {"app.kubernetes.io/part-of": "red"}},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["fed"],
                "categories": ["red"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema()},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Long descriptions and CEL stay on one line each; quoting is PyYAML's choice.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def render() -> str:
    return HEADER + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=1 << 16, allow_unicode=True)


if __name__ == "__main__":
    sys.stdout.write(render())
