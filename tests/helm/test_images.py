"""The images' contents, checked where they can drift without a Docker build: the runtime's Ray is the one
Red is tested with, and the slim operator image installs everything the operator imports."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "images"
# What `python -m red_operator` loads: the operator, its handlers and metrics (and through them the API).
OPERATOR_MODULES = ("red_operator.__main__", "red_operator.run", "red_operator.handlers", "red_operator.metrics")


def test_the_runtime_image_has_the_ray_red_is_tested_with():
    base = re.search(r"^ARG BASE=rayproject/ray:(\S+)-py311$", (IMAGES / "runtime.Dockerfile").read_text(), re.M)
    assert base and base.group(1) == importlib.metadata.version("ray")


def operator_image_requirements() -> list[Requirement]:
    text = (IMAGES / "operator.Dockerfile").read_text()
    line = next(line for line in text.splitlines() if "pip install" in line and '"' in line)
    return [Requirement(r) for r in re.findall(r'"([^"]+)"', line)]


def with_dependencies(names: set[str]) -> set[str]:
    """The distributions that pip installs for `names` (as installed here, extras aside)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for spec in importlib.metadata.requires(name) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def test_the_operator_starts_with_only_what_the_operator_image_installs(tmp_path: Path):
    """Import the operator in a Python that sees only those distributions (and red), as in the image: a
    needed package that is missing fails the import, an optional one (google-auth, blinker) takes its
    fallback as it would there."""
    site = tmp_path / "site-packages"
    site.mkdir()
    for name in with_dependencies({r.name for r in operator_image_requirements()}):
        dist = importlib.metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            if not (site / top).exists():
                (site / top).symlink_to(dist.locate_file(top))
    path = os.pathsep.join(map(str, (site, ROOT / "api", ROOT / "operator")))  # no runtime: the image has none
    proc = subprocess.run(
        [sys.executable, "-S", "-c", f"import {', '.join(OPERATOR_MODULES)}"],
        env={**os.environ, "PYTHONPATH": path, "PYTHONNOUSERSITE": "1"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"images/operator.Dockerfile lacks a package the operator imports:\n{proc.stderr}"


def test_the_operator_image_asks_for_what_pyproject_asks():
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S).group(1)
    declared = {canonicalize_name(r.name): r.specifier for r in map(Requirement, re.findall(r'"([^"]+)"', block))}
    for req in operator_image_requirements():
        assert req.specifier == declared.get(canonicalize_name(req.name), req.specifier), req


def test_the_wheel_the_images_install_carries_the_apis_data(tmp_path: Path):
    """The runtime image installs Red with `pip install .`, not editable: a file the API reads at import
    (the Kubernetes schemas) must be in the wheel, or the driver fails on its first import."""
    source = tmp_path / "src"  # a copy: a build leaves build/ and egg-info behind
    for part in ("api", "runtime", "operator"):
        shutil.copytree(ROOT / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", "out", "."]
    subprocess.run(build, cwd=source, check=True, capture_output=True)
    (wheel,) = (source / "out").glob("red-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "red_api/k8s/affinity.json" in names and "red_operator/__main__.py" in names
