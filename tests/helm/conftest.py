"""Fixtures for the chart's tests: the helm that tests/cluster/ctl builds, and a release removed afterwards.

`helm` asks for the `kube` fixture: that is what makes the session build the binaries (helm, kstatus)
before the first test, and the install tests need the cluster anyway.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import CLUSTER_DIR
from tests.operator.conftest import crd  # noqa: F401 - the Federation CRD, applied as the operator tests do

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "red-operator"


def built(binary: str) -> str:
    """A binary of tests/cluster/ctl build (RED_CLUSTER_BIN overrides the folder)."""
    path = Path(os.environ.get("RED_CLUSTER_BIN", CLUSTER_DIR / ".bin")) / binary
    if not os.access(path, os.X_OK):
        pytest.fail(f"no {path}: tests/cluster/ctl build builds it")
    return str(path)


class Helm:
    """The real helm, against the test cluster's kubeconfig."""

    def __init__(self, path: str, kubeconfig: str):
        self.path, self.kubeconfig = path, kubeconfig

    def run(self, *args: Any, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        cmd = [self.path, "--kubeconfig", self.kubeconfig, *map(str, args)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def template(self, *args: Any, chart: Path = CHART) -> list[dict[str, Any]]:
        """`helm template` of the chart, as the objects it renders."""
        out = self.run("template", "red", chart, *args).stdout
        return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def helm(kube) -> Helm:
    return Helm(built("helm"), kube.kubeconfig)


@pytest.fixture
def release(helm: Helm, namespace: str) -> Iterator[str]:
    """A release name of its own; uninstalled afterwards, so that its cluster-scoped RBAC goes too."""
    name = f"red-{uuid.uuid4().hex[:6]}"
    yield name
    helm.run("uninstall", name, "--namespace", namespace, "--wait", check=False)


def sets(*pairs: str) -> list[str]:
    """`--set` flags, one per `key=value`."""
    return [arg for pair in pairs for arg in ("--set", pair)]


def find(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def as_list(objs: list[dict[str, Any]]) -> str:
    """The objects as one kubectl input."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objs})
