"""The operator against the real API server and KubeRay: it touches only what it owns, survives bad edits
and superseded drivers, needs no finalizer, and says what it did in Events.

kwok plays the Pods (see test_operator_cluster.py): an HTTPMode RayJob stays Running.
"""

from __future__ import annotations

import json
import signal
import time

import pytest
import yaml

from red_operator import builders
from red_runtime.report import kube as driver_kube
from tests.operator.test_operator_cluster import INTERVAL_S, apply, federation, get, names, status, wait_children

pytestmark = pytest.mark.cluster


def conditions(st: dict) -> dict:
    return {c["type"]: c for c in st.get("conditions") or []}


def event_reasons(kube, namespace: str, name: str) -> list[str]:
    found = kube.kubectl_json("get", "events", "--field-selector", f"involvedObject.name={name}", namespace=namespace)
    return [e["reason"] for e in found["items"]]


def test_a_raycluster_that_is_not_ours_is_never_touched(kube, namespace, operator):
    """Today: a foreign `x-ray` has no hash label, looks changed, and is deleted."""
    theirs = {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": "mine-ray", "labels": {"team": "other"}},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {"spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.60.0"}]}},
            }
        },
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(theirs), namespace=namespace)
    uid = get(kube, namespace, "raycluster", "mine-ray")["metadata"]["uid"]
    apply(kube, namespace, federation("mine"))
    st = kube.wait_for(
        lambda: (s := status(kube, namespace, "mine")).get("reason") == "Conflict" and s,
        timeout=60,
        message="a Conflict",
    )
    ready = conditions(st)["Ready"]
    assert ready["status"] == "False" and "RayCluster mine-ray" in ready["message"]
    time.sleep(3 * INTERVAL_S)
    cluster = get(kube, namespace, "raycluster", "mine-ray")
    assert cluster["metadata"]["uid"] == uid and "ownerReferences" not in cluster["metadata"]
    assert names(kube, namespace, "rayjob", "mine") == [], "a RayJob would run on their cluster"
    assert "Conflict" in event_reasons(kube, namespace, "mine")
    # Once theirs is gone, the Federation gets its own.
    kube.kubectl("delete", "raycluster", "mine-ray", "--wait=true", namespace=namespace)
    wait_children(kube, namespace, "mine", timeout=90)


def test_rbac_that_is_not_ours_is_neither_adopted_nor_rewritten(kube, namespace, operator):
    """Today: the operator adopts `x-driver` and rewrites a RoleBinding of that name, roleRef unchecked."""
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "rb-driver"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }
    kube.kubectl("apply", "-f", "-", input=json.dumps(binding), namespace=namespace)
    before = get(kube, namespace, "rolebinding", "rb-driver")
    apply(kube, namespace, federation("rb"))
    st = kube.wait_for(
        lambda: (s := status(kube, namespace, "rb")).get("reason") == "Conflict" and s, timeout=60, message="Conflict"
    )
    assert "RoleBinding rb-driver" in conditions(st)["Ready"]["message"]
    time.sleep(3 * INTERVAL_S)
    after = get(kube, namespace, "rolebinding", "rb-driver")
    assert (after["roleRef"], after["subjects"]) == (before["roleRef"], before["subjects"])
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert names(kube, namespace, "raycluster", "rb") == [], "the head would run as a ServiceAccount bound elsewhere"


def test_an_invalid_edit_of_a_running_federation_releases_its_compute(kube, namespace, operator):
    apply(kube, namespace, federation("edit"))
    job = wait_children(kube, namespace, "edit")["rayJobName"]
    # The CRD cannot see that this graph falls apart; the spec model can.
    bad = {"spec": {"nodes": {"count": 4}, "topology": {"kind": "custom", "edges": [[0, 1], [2, 3]]}}}
    kube.kubectl("patch", "federation", "edit", "--type=merge", "-p", json.dumps(bad), namespace=namespace)
    kube.wait_for(
        lambda: not names(kube, namespace, "rayjob", "edit") and not names(kube, namespace, "raycluster", "edit"),
        timeout=90,
        message="RayJob and RayCluster gone",
    )
    st = status(kube, namespace, "edit")
    assert (st["phase"], st["reason"]) == ("Failed", "InvalidSpec")
    conds = conditions(st)
    assert "not connected" in conds["Ready"]["message"]
    assert conds["JobRunning"]["message"] == f"RayJob {job} stopped: the spec is invalid"
    assert "RayCluster edit-ray deleted" in conds["ClusterProvisioned"]["message"]
    assert names(kube, namespace, "role", "edit") == ["edit-driver"]
    assert {"DeletedRayJob", "DeletedRayCluster"} <= set(event_reasons(kube, namespace, "edit"))
    assert "Traceback" not in operator.log(), "an invalid spec is a status, not a retried error"


def test_a_superseded_drivers_late_report_is_refused(kube, namespace, operator):
    """A tagged report lands only while the status names its RayJob; the API server decides, atomically."""
    apply(kube, namespace, federation("tag"))
    first = wait_children(kube, namespace, "tag")["rayJobName"]
    api = kube.api
    driver_kube.patch_status(api, namespace, "tag", {"round": 1, "completionTime": None, "driverRayJob": first})
    assert status(kube, namespace, "tag")["round"] == 1
    kube.kubectl("patch", "federation", "tag", "--type=merge", "-p", '{"spec": {"rounds": 7}}', namespace=namespace)
    kube.wait_for(lambda: status(kube, namespace, "tag").get("rayJobName") not in (None, first), timeout=60)
    with pytest.raises(driver_kube.Superseded):
        late = {"round": 3, "completionTime": "2026-01-01T00:00:00Z", "driverError": "late", "driverRayJob": first}
        driver_kube.patch_status(api, namespace, "tag", late)
    st = status(kube, namespace, "tag")
    assert st["round"] == 1 and "completionTime" not in st and "driverError" not in st
    # The current attempt's driver reports, and a null clears a field.
    current = st["rayJobName"]
    driver_kube.patch_status(api, namespace, "tag", {"round": 2, "driverError": "x", "driverRayJob": current})
    driver_kube.patch_status(api, namespace, "tag", {"driverError": None, "driverRayJob": current})
    st = status(kube, namespace, "tag")
    assert st["round"] == 2 and "driverError" not in st and st["driverRayJob"] == current


def test_a_federation_deleted_without_the_operator_goes_and_takes_its_children(kube, namespace, operator):
    """Today kopf's timer finalizer makes this delete hang until an operator comes back."""
    apply(kube, namespace, federation("orphan"))
    wait_children(kube, namespace, "orphan")
    fed = get(kube, namespace, "federation", "orphan")
    assert not fed["metadata"].get("finalizers")
    operator.stop(signal.SIGKILL)
    kube.kubectl("delete", "federation", "orphan", "--wait=true", "--timeout=30s", namespace=namespace)
    kube.wait_for(
        lambda: not any(names(kube, namespace, k, "orphan") for k in ("raycluster", "rayjob", "role")),
        timeout=90,
        message="GC of the children",
    )


def test_every_child_created_is_an_event(kube, namespace, operator):
    apply(kube, namespace, federation("told"))
    wait_children(kube, namespace, "told")
    expected = {f"Created{k}" for k in ("ServiceAccount", "Role", "RoleBinding", "RayCluster", "RayJob")}
    kube.wait_for(lambda: expected <= set(event_reasons(kube, namespace, "told")), timeout=30, message="Events")
    job = get(kube, namespace, "rayjob", status(kube, namespace, "told")["rayJobName"])
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env[builders.DRIVER_RAYJOB_ENV] == job["metadata"]["name"]
