"""reconcile() against an in-memory API: what it creates, replaces and deletes, pass after pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from red_operator import builders
from red_operator.reconcile import reconcile
from red_runtime.spec import parse_manifest

pytestmark = pytest.mark.unit


class FakeRest:
    """Namespaced objects by (kind, name); deletion is immediate unless `finalizing` holds the kind."""

    def __init__(self):
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.log: list[tuple[str, str, str]] = []
        self.finalizing: set[str] = set()

    def get(self, kind, namespace, name):
        obj = self.objects.get((kind, name))
        return copy.deepcopy(obj) if obj else None

    def list(self, kind, namespace, selector):
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(o)
            for (k, _), o in sorted(self.objects.items())
            if k == kind and o["metadata"].get("labels", {}).get(key) == value
        ]

    def create(self, obj):
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            return None
        self.objects[key] = copy.deepcopy(obj)
        self.log.append(("create", *key))
        return copy.deepcopy(obj)

    def patch(self, kind, namespace, name, body, subresource=""):
        self.objects[(kind, name)].update(copy.deepcopy(body))
        self.log.append(("patch", kind, name))
        return self.objects[(kind, name)]

    def delete(self, kind, namespace, name):
        if (kind, name) not in self.objects:
            return False
        self.log.append(("delete", kind, name))
        if kind in self.finalizing:
            self.objects[(kind, name)]["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        else:
            del self.objects[(kind, name)]
        return True

    def names(self, kind):
        return sorted(n for k, n in self.objects if k == kind)

    def set_status(self, kind, name, **status):
        self.objects[(kind, name)]["status"] = status


DRIVER_DONE = {"round": 3, "rounds": 3, "completionTime": "2026-01-01T00:00:00Z"}  # the driver's final report


def federation(spec=None, generation=1, status=None):
    return {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": "f", "namespace": "ns", "uid": "u1", "generation": generation},
        "spec": spec if spec is not None else {"rounds": 3},
        "status": status or {},
    }


def settle(rest, body, passes=3):
    """Run reconcile until nothing changes, as the timer would; returns the last status."""
    result = None
    for _ in range(passes):
        result = reconcile(body, rest)
        body = {**body, "status": {**body.get("status", {}), **result.status}}
    return result.status


def test_first_pass_creates_every_child_and_later_passes_create_nothing():
    rest = FakeRest()
    status = settle(rest, federation())
    assert rest.names("ServiceAccount") == rest.names("Role") == rest.names("RoleBinding") == ["f-driver"]
    assert rest.names("RayCluster") == ["f-ray"]
    (job,) = rest.names("RayJob")
    assert status["rayJobName"] == job and status["rayClusterName"] == "f-ray"
    assert status["phase"] == "Provisioning"
    creations = [entry for entry in rest.log if entry[0] == "create"]
    assert len(creations) == 5
    reconcile(federation(), rest)
    assert [entry for entry in rest.log if entry[0] == "create"] == creations


def test_status_follows_kuberay_and_the_cluster_goes_when_the_job_is_done():
    rest = FakeRest()
    settle(rest, federation())
    (job,) = rest.names("RayJob")
    rest.set_status("RayCluster", "f-ray", state="ready")
    rest.set_status("RayJob", job, jobDeploymentStatus="Running", jobStatus="RUNNING")
    assert reconcile(federation(), rest).status["phase"] == "Running"
    rest.set_status("RayJob", job, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    status = reconcile(federation(status=DRIVER_DONE), rest).status
    assert status["phase"] == "Succeeded"
    assert rest.names("RayCluster") == [] and rest.names("RayJob") == [job]
    assert settle(rest, federation(status=DRIVER_DONE))["phase"] == "Succeeded"
    assert rest.names("RayCluster") == [], "a finished Federation must not get its cluster back"


def test_keep_cluster_keeps_it():
    rest = FakeRest()
    spec = {"rounds": 3, "ray": {"keepCluster": True}}
    settle(rest, federation(spec))
    rest.set_status("RayJob", rest.names("RayJob")[0], jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    assert reconcile(federation(spec, status=DRIVER_DONE), rest).status["phase"] == "Succeeded"
    assert rest.names("RayCluster") == ["f-ray"]


def test_a_spec_change_replaces_the_rayjob_one_at_a_time():
    rest = FakeRest()
    rest.finalizing.add("RayJob")  # KubeRay's finalizer stops the Ray job before the RayJob goes
    settle(rest, federation())
    (old,) = rest.names("RayJob")
    changed = federation({"rounds": 4}, generation=2)
    reconcile(changed, rest)
    assert rest.names("RayJob") == [old], "the new RayJob waits until the old one is gone"
    del rest.objects[("RayJob", old)]
    status = reconcile(changed, rest).status
    (new,) = rest.names("RayJob")
    assert new != old and status["rayJobName"] == new
    assert rest.names("RayCluster") == ["f-ray"], "the cluster's own spec did not change"


def test_a_cluster_spec_change_recreates_the_cluster():
    rest = FakeRest()
    settle(rest, federation())
    before = rest.objects[("RayCluster", "f-ray")]["metadata"]["labels"][builders.LABEL_CLUSTER_HASH]
    settle(rest, federation({"rounds": 3, "ray": {"head": {"cpu": "4"}}}, generation=2))
    after = rest.objects[("RayCluster", "f-ray")]["metadata"]["labels"][builders.LABEL_CLUSTER_HASH]
    assert before != after
    assert ("delete", "RayCluster", "f-ray") in rest.log


def test_suspend_removes_the_compute_and_resume_brings_it_back():
    rest = FakeRest()
    settle(rest, federation())
    (job,) = rest.names("RayJob")
    status = settle(rest, federation({"rounds": 3, "suspend": True}, generation=2))
    assert status["phase"] == "Suspended"
    assert rest.names("RayJob") == [] and rest.names("RayCluster") == []
    assert rest.names("Role") == ["f-driver"]
    status = settle(rest, federation({"rounds": 3, "suspend": False}, generation=3))
    assert rest.names("RayJob") == [job] and rest.names("RayCluster") == ["f-ray"]
    assert status["phase"] == "Provisioning"


def test_a_failed_job_is_retried_up_to_max_job_retries():
    rest = FakeRest()
    spec = {"rounds": 3, "faultTolerance": {"maxJobRetries": 1}}
    settle(rest, federation(spec))
    (first,) = rest.names("RayJob")
    rest.set_status("RayJob", first, jobDeploymentStatus="Failed", reason="AppFailed")
    status = settle(rest, federation(spec))
    (second,) = rest.names("RayJob")
    assert second != first and second.endswith("-2") and status["attempts"] == 2
    rest.set_status("RayJob", second, jobDeploymentStatus="Failed", reason="AppFailed", message="exit 1")
    status = settle(rest, federation(spec))
    assert status["phase"] == "Failed" and status["reason"] == "AppFailed"
    assert rest.names("RayJob") == [second] and rest.names("RayCluster") == []


def test_an_event_older_than_the_children_changes_nothing():
    rest = FakeRest()
    settle(rest, federation({"rounds": 4}, generation=5))
    log = list(rest.log)
    assert reconcile(federation({"rounds": 3}, generation=4), rest) is None
    assert rest.log == log


def test_an_invalid_spec_creates_nothing_and_says_why():
    rest = FakeRest()
    spec = {"topology": {"kind": "custom", "edges": [[0, 1], [2, 3]]}, "nodes": {"count": 4}}
    result = reconcile(federation(spec), rest)
    assert rest.log == []
    assert result.status["phase"] == "Failed" and result.status["reason"] == "InvalidSpec"
    assert "not connected" in result.invalid


def test_rbac_drift_is_put_back():
    rest = FakeRest()
    settle(rest, federation())
    rest.objects[("Role", "f-driver")]["rules"] = [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]
    reconcile(federation(), rest)
    assert rest.objects[("Role", "f-driver")]["rules"] == builders.driver_rules(parse_manifest(federation()))
