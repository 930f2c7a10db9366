"""The operator image reconciles: with only its own packages, it parses Federations and builds their children.

images/operator.Dockerfile installs kopf, kubernetes, PyYAML and prometheus-client, not Red's training
stack. A Python that sees only those distributions (and theirs), and in which numpy, torch, ray, scikit-learn
and matplotlib raise ImportError wherever they are found (and red_runtime is not on the path at all), loads
`python -m red_operator`'s modules, parses every example manifest (and one per strategy) and runs the
operator's pure builders, as a reconcile does in the image.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from red_api.spec import ALGORITHMS
from tests.helm.test_images import operator_image_requirements, with_dependencies

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "manifests" / "examples").glob("*.yaml"))
NOT_IN_THE_IMAGE = ("numpy", "torch", "ray", "sklearn", "matplotlib")

RECONCILE_IN_THE_IMAGE = """
import json, sys

class NotInTheImage:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not installed in the operator image")
        return None

BLOCKED = set(json.loads(sys.argv[1]))
sys.meta_path.insert(0, NotInTheImage())
before = set(sys.modules)

import yaml
import red_operator.__main__, red_operator.handlers, red_operator.run  # what `python -m red_operator` loads
from red_operator import builders
from red_api.spec import SpecError, parse_manifest

def reconcile_pure(doc):
    fed = parse_manifest(doc)
    builders.build_raycluster(fed)
    builders.build_rayjob(fed, attempt=1, generation=1)
    builders.build_rbac(fed)

def federation(spec):
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": "f"}, "spec": spec}

for path in json.loads(sys.argv[2]):
    with open(path) as fh:
        doc = yaml.safe_load(fh)
    doc["metadata"].update(namespace="team-a", uid="uid-1")
    reconcile_pure(doc)
for name in json.loads(sys.argv[3]):
    reconcile_pure(federation({"algorithm": {"name": name}, "nodes": {"count": 8}}))
    try:  # an invalid spec is reported, not an ImportError: the privacy check asks whether it is linear
        reconcile_pure(federation({"algorithm": {"name": name, "privacy": {}, "options": {"nope": 1}}}))
    except SpecError:
        pass
loaded = [sys.modules[m] for m in set(sys.modules) - before]
print(json.dumps(sorted({m.__file__ for m in loaded if getattr(m, "__file__", None)})))
"""


@pytest.fixture(scope="module")
def image_site(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A site-packages with only the distributions the image installs (and theirs), as test_images builds
    it, and the distribution each of its top-level entries comes from."""
    site = tmp_path_factory.mktemp("operator-image") / "site-packages"
    site.mkdir()
    owners = {}
    for name in with_dependencies({r.name for r in operator_image_requirements()}):
        dist = importlib.metadata.distribution(name)
        for top in {Path(str(f)).parts[0] for f in dist.files or []} - {".."}:
            if not (site / top).exists():
                (site / top).symlink_to(dist.locate_file(top))
                owners[top] = canonicalize_name(name)
    return site, owners


@pytest.fixture(scope="module")
def loaded(image_site) -> list[str]:
    """Start the operator and reconcile in that Python; the files of every module it loaded."""
    path = os.pathsep.join(map(str, [image_site[0], ROOT / "api", ROOT / "operator"]))
    args = [json.dumps(NOT_IN_THE_IMAGE), json.dumps([str(p) for p in EXAMPLES]), json.dumps(ALGORITHMS)]
    proc = subprocess.run(
        [sys.executable, "-S", "-c", RECONCILE_IN_THE_IMAGE, *args],
        env={**os.environ, "PYTHONPATH": path, "PYTHONNOUSERSITE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"the operator image cannot reconcile:\n{proc.stderr[-3000:]}"
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_example_parses_and_builds_without_numpy_torch_or_ray(loaded):
    assert EXAMPLES and any(f.startswith(str(ROOT / "operator")) for f in loaded)


def test_every_package_the_dockerfile_installs_is_used(image_site, loaded):
    """A missing package fails the reconcile above; this is the other direction: nothing installed in vain."""
    listed = {canonicalize_name(r.name) for r in operator_image_requirements()}
    site, owners = image_site
    used = {owners[Path(f).relative_to(site).parts[0]] for f in loaded if Path(f).is_relative_to(site)}
    assert listed <= used, (
        f"images/operator.Dockerfile installs {sorted(listed - used)}, which the operator never loads"
    )


def test_the_operator_starts_as_a_uid_with_no_passwd_entry(monkeypatch):
    """The image runs as uid 10001, which no /etc/passwd names: kopf must not need the user's name."""
    import getpass
    import pwd

    import kopf

    from red_operator import run

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    for var in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(OSError if sys.version_info >= (3, 13) else KeyError):
        getpass.getuser()  # what kopf's default identity would call
    started: dict = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: started.update(kw))
    monkeypatch.setattr("red_operator.metrics.serve", lambda port: None)
    assert run.run_operator(liveness=None) == 0
    assert started["identity"] and "/" in started["identity"]
