"""manifests/install.yaml, the chart rendered for `kubectl apply` and GitOps: up to date, complete, and
accepted by the API server as is and through manifests/kustomization.yaml."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.conftest import Helm

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "manifests" / "install.yaml"
NAMESPACE = "red-system"


class GoYaml(yaml.SafeLoader):
    """Reads `1e-05` as a float, as kubectl and the API server do (YAML 1.2); PyYAML's 1.1 reads a string.
    kustomize writes the CRD's `1.0e-5` that way."""


GoYaml.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def objects(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(text, Loader=GoYaml) if doc]


@pytest.mark.unit
def test_install_yaml_holds_the_whole_operator_in_red_system():
    objs = objects(INSTALL.read_text())
    assert objs[0] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": NAMESPACE,
            "labels": {"app.kubernetes.io/part-of": "red", "pod-security.kubernetes.io/enforce": "restricted"},
        },
    }
    kinds = sorted(o["kind"] for o in objs)
    assert kinds == sorted(
        [
            "Namespace",
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            # the tenant policy at admission (helm/red-operator/templates/tenant-policy.yaml)
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    )
    assert {
        o["metadata"].get("namespace", NAMESPACE)
        for o in objs
        if o["kind"] in ("ServiceAccount", "Service", "Deployment")
    } == {NAMESPACE}


@pytest.mark.cluster
def test_install_yaml_is_the_chart_rendered(helm: Helm):
    """scripts/render-install --check fails when the chart (or crds/) changed and install.yaml did not."""
    proc = subprocess.run(
        [str(ROOT / "scripts" / "render-install"), "--check"],
        env={**os.environ, "HELM": helm.path},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.fixture
def red_system(kube) -> Iterator[None]:
    """red-system for a server-side dry run of what goes in it; made (and removed) here only if missing."""
    created = kube.kubectl("create", "namespace", NAMESPACE, check=False).returncode == 0
    yield
    if created:
        kube.kubectl("delete", "namespace", NAMESPACE, "--wait=false", check=False)


@pytest.mark.cluster
def test_install_yaml_applies_server_side(kube, red_system):
    for source in (["-f", str(INSTALL)], ["-k", str(INSTALL.parent)]):
        kube.kubectl("apply", "--server-side", "--dry-run=server", *source)


@pytest.mark.cluster
def test_the_kustomization_is_install_yaml(kube):
    built = objects(kube.kubectl("kustomize", str(INSTALL.parent)).stdout)

    def key(o: dict[str, Any]) -> tuple[str, str]:
        return o["kind"], o["metadata"]["name"]

    assert sorted(built, key=key) == sorted(objects(INSTALL.read_text()), key=key)
