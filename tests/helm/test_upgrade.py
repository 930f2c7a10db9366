"""`helm upgrade` from the previous release to this one, under a running Federation: nothing is replaced,
and the Federation still finishes with the RayJob it had.

There is no container runtime here, so kwok plays the operator's Pod and `red operator` runs beside it as a
subprocess authenticated as the chart's ServiceAccount (as in test_install.py): first the previous release's
code (`git archive` of RED_TEST_UPGRADE_FROM, its runtime/ and operator/ on PYTHONPATH) under the previous
chart's RBAC, then, after `helm upgrade` to this chart, this checkout's code under the new RBAC. On kwok no
Ray runs: a K8sJobMode RayJob ends when KubeRay gives up on it, which is how a Federation finishes here.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from red_operator.status import job_outcome
from tests.conftest import Kube
from tests.helm.conftest import CHART, Helm, sets
from tests.helm.test_install import WAIT, service_account_kubeconfig
from tests.operator.conftest import CRD, Operator
from tests.operator.test_operator_cluster import apply, federation, get, status, uids, wait_children

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
# The last release before the operator hashed what the user asked for (and put a finalizer on each Federation).
PREVIOUS = os.environ.get("RED_TEST_UPGRADE_FROM", "425389c")


def checkout(commit: str, into: Path) -> Path:
    into.mkdir()
    archive = subprocess.run(
        ["git", "archive", commit, "runtime", "operator", "helm"], cwd=ROOT, capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def operator_as(kube, namespace: str, release: str, log_dir: Path, source: Path | None = None) -> Operator:
    log_dir.mkdir()
    config = service_account_kubeconfig(kube, namespace, f"{release}-red-operator", log_dir / "kubeconfig")
    return Operator(Kube(str(config)), namespace, log_dir, source=source)


def test_helm_upgrade_under_a_running_federation_replaces_nothing(
    kube, crd, helm: Helm, namespace: str, release: str, tmp_path: Path, request
):
    previous = checkout(PREVIOUS, tmp_path / "previous")
    # As a real upgrade starts: the previous release's CRD. This checkout's comes back with the upgrade, and in
    # any case when the test ends, for the tests after it.
    request.addfinalizer(lambda: kube.apply_crd(CRD))
    kube.apply_crd(previous / "helm" / "red-operator" / "files" / "federation-crd.yaml")
    values = sets("crds.install=false", f"watchNamespaces={{{namespace}}}")
    helm.run("install", release, previous / "helm" / "red-operator", "--namespace", namespace, *values, *WAIT)
    old = operator_as(kube, namespace, release, tmp_path / "old", source=previous)
    old.start()
    try:
        apply(kube, namespace, federation("upgraded", mode="K8sJobMode"))
        job = wait_children(kube, namespace, "upgraded")["rayJobName"]
        children = uids(kube, namespace, "upgraded")
        assert len(children) == 5, children
        running_at_upgrade = job_outcome(get(kube, namespace, "rayjob", job)) is None
    finally:
        old.stop()

    kube.apply_crd(CRD)  # a chart upgrade's CRD, then its operator
    helm.run("upgrade", release, CHART, "--namespace", namespace, *values, *WAIT)
    new = operator_as(kube, namespace, release, tmp_path / "new")
    new.start()
    try:
        kube.wait_for(
            lambda: not get(kube, namespace, "federation", "upgraded")["metadata"].get("finalizers"),
            timeout=60,
            message="the previous release's finalizer removed",
        )
        if running_at_upgrade:
            # Nothing replaced: every child there now is the one from before. Only the RayCluster may be gone,
            # and only because the job ended meanwhile (on kwok KubeRay gives up within seconds): the operator
            # then releases it, and says so.
            now = uids(kube, namespace, "upgraded")
            assert {k: v for k, v in now.items() if children.get(k) != v} == {}, "the upgrade replaced a child"
            if gone := set(children) - set(now):
                assert gone == {"raycluster/upgraded-ray"}, gone
                assert job_outcome(get(kube, namespace, "rayjob", job)) is not None, "released under a running job"
                # by the new operator, or the old one between the check above and its stop (its wording)
                logs = old.log() + new.log()
                assert re.search(r"deleted RayCluster upgraded-ray \((the )?job finished\)", logs), logs[-3000:]
        final = kube.wait_for(
            lambda: (s := status(kube, namespace, "upgraded")).get("phase") in ("Succeeded", "Failed") and s,
            timeout=240,
            interval=1,
            message=lambda: f"the Federation to finish\n{new.log()[-3000:]}",
        )
    finally:
        new.stop()
    assert final["rayJobName"] == job and final["attempts"] == 1, "the job it had, not a replacement"
    assert final["reason"] not in ("Conflict", "InvalidSpec")
    job_status = get(kube, namespace, "rayjob", job)["status"]
    assert final["reason"] == job_status["reason"], "finished by KubeRay's verdict on the original RayJob"
    log = new.log()
    assert "Forbidden" not in log and "deleted RayCluster upgraded-ray (spec.ray changed" not in log, log[-3000:]
