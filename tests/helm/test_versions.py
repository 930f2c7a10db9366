"""One release version for everything a user installs: the package, the chart's operator image, and the
runtime image a Federation runs on unless it names another (spec.ray.image's default)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from red_api.spec import RaySpec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "red-operator"


def pyproject_version() -> str:
    return re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)


def test_chart_operator_and_runtime_images_share_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    runtime_tag = RaySpec().image.rpartition(":")[2]
    assert chart["appVersion"] == pyproject_version() == runtime_tag


def test_make_images_builds_the_images_the_chart_and_federations_pull():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    plan = subprocess.run(["make", "-n", "images"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    tags = re.findall(r"docker build -f images/\S+ -t (\S+) \.", plan)
    assert tags == [f"{values['image']['repository']}:{chart['appVersion']}", RaySpec().image]


def test_the_chart_carries_crds_federation_yaml_unchanged():
    """The chart's CRD is a copy (Helm packages no symlinks): scripts/render-install refreshes it."""
    copy = CHART / "files" / "federation-crd.yaml"
    assert copy.read_bytes() == (ROOT / "crds" / "federation.yaml").read_bytes(), "run scripts/render-install"
