"""reconcile() against an in-memory API: what it creates, replaces and deletes, pass after pass."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from red_api.spec import parse_manifest
from red_operator import builders
from red_operator.reconcile import reconcile

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

    def exists(self, kind, namespace, name):
        return (kind, name) in self.objects

    def list(self, kind, namespace, selector):
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(o)
            for (k, _), o in sorted(self.objects.items())
            if k == kind and o["metadata"].get("labels", {}).get(key) == value
        ]

    def create(self, obj):
        """As Rest.create: the object and whether this call made it (a name taken answers what is there)."""
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            return copy.deepcopy(self.objects[key]), False
        self.objects[key] = copy.deepcopy(obj)
        self.objects[key]["metadata"].setdefault("uid", f"uid-{len(self.log)}")  # as the API server gives one
        self.log.append(("create", *key))
        return copy.deepcopy(self.objects[key]), True

    def patch(self, kind, namespace, name, body, subresource=""):
        """A JSON merge patch (RFC 7386): mappings merge, None removes a key, anything else replaces."""
        merge(self.objects[(kind, name)], copy.deepcopy(body))
        self.log.append(("patch", kind, name))
        return self.objects[(kind, name)]

    def json_patch(self, kind, namespace, name, ops):
        """The ops reconcile sends (RFC 6902 test, replace, add, on paths of plain keys); a failed test changes
        nothing and raises, as the API server answers 422."""
        obj = copy.deepcopy(self.objects[(kind, name)])
        for op in ops:
            *parents, leaf = [part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]]
            target = obj
            for part in parents:
                target = target[part]
            if op["op"] == "test":
                if target.get(leaf) != op["value"]:
                    raise ValueError(f"test failed at {op['path']}")
            else:
                target[leaf] = copy.deepcopy(op["value"])
        self.objects[(kind, name)] = obj
        self.log.append(("patch", kind, name))
        return copy.deepcopy(obj)

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


def merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = value


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
    assert len(creations) == 6 and ("create", "PersistentVolumeClaim", "f-storage") in creations
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
    before = rest.objects[("RayCluster", "f-ray")]["metadata"]["labels"][builders.LABEL_RAY_HASH]
    settle(rest, federation({"rounds": 3, "ray": {"head": {"cpu": "4"}}}, generation=2))
    after = rest.objects[("RayCluster", "f-ray")]["metadata"]["labels"][builders.LABEL_RAY_HASH]
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


def foreign(kind, name, **extra):
    """An object of a child's name that this Federation does not control (a user's, or another's)."""
    api = {"RayCluster": "ray.io/v1", "RayJob": "ray.io/v1", "RayService": "ray.io/v1", "ServiceAccount": "v1"}.get(
        kind, "rbac.authorization.k8s.io/v1"
    )
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": "ns", "uid": "theirs"}, **extra}


def conditions(status):
    return {c["type"]: c for c in status["conditions"]}


def test_a_raycluster_of_someone_else_is_never_touched_and_is_a_conflict():
    rest = FakeRest()
    theirs = foreign("RayCluster", "f-ray", spec={"headGroupSpec": {}})
    rest.objects[("RayCluster", "f-ray")] = copy.deepcopy(theirs)
    status = settle(rest, federation())
    assert rest.objects[("RayCluster", "f-ray")] == theirs
    assert rest.names("RayJob") == [], "a RayJob would run on their cluster"
    ready = conditions(status)["Ready"]
    assert (ready["status"], ready["reason"], status["reason"]) == ("False", "Conflict", "Conflict")
    assert "RayCluster f-ray" in ready["message"]


def test_rbac_of_someone_else_is_neither_adopted_nor_rewritten():
    rest = FakeRest()
    admin = {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"}
    owner = {"apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "theirs", "controller": True}
    objs = [
        foreign("ServiceAccount", "f-driver"),
        foreign("Role", "f-driver", rules=[{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
        foreign("RoleBinding", "f-driver", roleRef=admin, subjects=[{"kind": "User", "name": "eve"}]),
    ]
    objs[2]["metadata"]["ownerReferences"] = [owner]
    for obj in objs:
        rest.objects[(obj["kind"], "f-driver")] = copy.deepcopy(obj)
    status = settle(rest, federation())
    assert [rest.objects[(o["kind"], "f-driver")] for o in objs] == objs
    assert not [entry for entry in rest.log if entry[0] == "patch"]
    assert rest.names("RayCluster") == rest.names("RayJob") == [], "nothing may run as their ServiceAccount"
    message = conditions(status)["Ready"]["message"]
    assert "ServiceAccount f-driver" in message and "Role f-driver" in message
    assert "RoleBinding f-driver exists and is controlled by ConfigMap/other" in message


class Blind:
    """A view that has not seen anything yet (an index that lags): every child is found only by creating it."""

    def get(self, kind, namespace, name):
        return None

    def jobs(self, namespace, fed_name, fed_uid):
        return []

    def accounts(self, namespace, fed_name, fed_uid):
        return []


def test_a_name_taken_at_create_time_is_not_adopted():
    rest = FakeRest()
    rest.objects[("RayCluster", "f-ray")] = foreign("RayCluster", "f-ray")
    status = reconcile(federation(), rest, Blind()).status
    assert conditions(status)["Ready"]["reason"] == "Conflict"
    assert rest.names("RayJob") == []
    ours = FakeRest()
    settle(ours, federation())
    again = reconcile(federation(), ours, Blind())  # our own children, answered by 409: used, not conflicts
    assert again.conflicts == [] and ours.names("RayCluster") == ["f-ray"]


def test_a_rayjob_with_our_label_that_another_controls_is_left_alone():
    rest = FakeRest()
    job = foreign("RayJob", "f-zzzzz-1")
    job["metadata"]["labels"] = {builders.LABEL_FEDERATION: "f", builders.LABEL_GENERATION: "1"}
    rest.objects[("RayJob", "f-zzzzz-1")] = copy.deepcopy(job)
    settle(rest, federation())
    assert rest.objects[("RayJob", "f-zzzzz-1")] == job
    assert len(rest.names("RayJob")) == 2


def test_an_owned_rolebinding_with_a_changed_role_ref_is_replaced():
    rest = FakeRest()
    settle(rest, federation())
    rest.objects[("RoleBinding", "f-driver")]["roleRef"]["name"] = "other"
    reconcile(federation(), rest)
    assert rest.objects[("RoleBinding", "f-driver")]["roleRef"]["name"] == "f-driver"


def test_an_upgrade_replaces_nothing_under_a_running_job():
    """Children made by an older release: other hash labels (a rendered cluster, another spec hash format)."""
    rest = FakeRest()
    settle(rest, federation())
    (job,) = rest.names("RayJob")
    rest.objects[("RayJob", job)]["metadata"]["labels"][builders.LABEL_SPEC_HASH] = "0123456789"
    labels = rest.objects[("RayCluster", "f-ray")]["metadata"]["labels"]
    del labels[builders.LABEL_RAY_HASH]
    labels["red.dev/cluster-hash"] = "abcdefabcd"
    rest.set_status("RayCluster", "f-ray", state="ready")
    rest.set_status("RayJob", job, jobDeploymentStatus="Running", jobStatus="RUNNING")
    status = settle(rest, federation())
    assert not [entry for entry in rest.log if entry[0] == "delete"]
    assert rest.names("RayJob") == [job] and status["phase"] == "Running" and status["rayJobName"] == job


def test_an_invalid_edit_of_a_running_federation_releases_its_compute():
    rest = FakeRest()
    settle(rest, federation())
    (job,) = rest.names("RayJob")
    rest.set_status("RayJob", job, jobDeploymentStatus="Running", jobStatus="RUNNING")
    running = reconcile(federation(), rest).status
    bad = {"topology": {"kind": "custom", "edges": [[0, 1], [2, 3]]}, "nodes": {"count": 4}}
    result = reconcile(federation(bad, generation=2, status=running), rest)
    assert rest.names("RayJob") == [] and rest.names("RayCluster") == []
    assert rest.names("Role") == rest.names("RoleBinding") == rest.names("ServiceAccount") == ["f-driver"]
    status = result.status
    assert (status["phase"], status["reason"]) == ("Failed", "InvalidSpec")
    conds = conditions(status)
    assert "not connected" in conds["Ready"]["message"]
    assert conds["JobRunning"]["message"] == f"RayJob {job} stopped: the spec is invalid"
    assert "RayCluster f-ray deleted" in conds["ClusterProvisioned"]["message"]
    assert "storage is kept" in conds["ClusterProvisioned"]["message"]
    assert {a.reason for a in result.actions} == {"DeletedRayJob", "DeletedRayCluster"}


@pytest.mark.parametrize(
    "algorithm",
    [
        {"name": "krum", "options": {"f": "x"}},
        {"name": "fedprox", "options": {"mu": float("nan")}},
        {"name": "fedprox", "options": {"mu": float("inf")}},
    ],
)
def test_every_parse_failure_is_invalid_spec(algorithm):
    rest = FakeRest()
    result = reconcile(federation({"rounds": 3, "nodes": {"count": 4}, "algorithm": algorithm}), rest)
    assert (result.status["phase"], result.status["reason"]) == ("Failed", "InvalidSpec")
    assert "algorithm" in result.invalid and rest.log == []


def with_accounts(head=None, **groups):
    """A spec whose head and named worker groups have these serviceAccountAnnotations."""
    ray = {"workerGroups": [{"name": g, "serviceAccountAnnotations": a} for g, a in groups.items()]}
    if head is not None:
        ray["head"] = {"serviceAccountAnnotations": head}
    return {"rounds": 3, "ray": ray}


def test_worker_accounts_follow_the_spec_and_keep_what_others_annotate():
    rest = FakeRest()
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/red"}
    settle(rest, federation(with_accounts(head=role, gpu=role)))
    assert rest.names("ServiceAccount") == ["f-driver", "f-worker-gpu"]
    for name in ("f-driver", "f-worker-gpu"):
        annotations = rest.objects[("ServiceAccount", name)]["metadata"]["annotations"]
        assert annotations["eks.amazonaws.com/role-arn"] == role["eks.amazonaws.com/role-arn"]
        annotations["webhook.example.com/injected"] = "yes"  # someone else's, kept throughout
    other = {"eks.amazonaws.com/audience": "sts"}
    settle(rest, federation(with_accounts(head=other, gpu=other), generation=2))
    for name in ("f-driver", "f-worker-gpu"):
        annotations = rest.objects[("ServiceAccount", name)]["metadata"]["annotations"]
        assert "eks.amazonaws.com/role-arn" not in annotations, "a key the spec dropped goes"
        assert annotations["eks.amazonaws.com/audience"] == "sts"
        assert annotations["webhook.example.com/injected"] == "yes"
    # A hand edit of a spec annotation is put back, as RBAC drift is.
    rest.objects[("ServiceAccount", "f-worker-gpu")]["metadata"]["annotations"]["eks.amazonaws.com/audience"] = "x"
    reconcile(federation(with_accounts(head=other, gpu=other), generation=2), rest)
    assert (
        rest.objects[("ServiceAccount", "f-worker-gpu")]["metadata"]["annotations"]["eks.amazonaws.com/audience"]
        == "sts"
    )
    # The group gone (renamed): its account goes, the driver's stays.
    settle(rest, federation(with_accounts(head=other, cpu=other), generation=3))
    assert rest.names("ServiceAccount") == ["f-driver", "f-worker-cpu"]
    assert ("delete", "ServiceAccount", "f-worker-gpu") in rest.log


def test_a_worker_account_of_someone_else_blocks_the_cluster_and_is_not_deleted():
    rest = FakeRest()
    theirs = foreign("ServiceAccount", "f-worker-gpu")
    theirs["metadata"]["labels"] = {builders.LABEL_FEDERATION: "f"}  # our label, but not our controller
    rest.objects[("ServiceAccount", "f-worker-gpu")] = copy.deepcopy(theirs)
    status = settle(rest, federation(with_accounts(gpu={"a.io/b": "c"})))
    assert rest.objects[("ServiceAccount", "f-worker-gpu")] == theirs
    assert rest.names("RayCluster") == [], "the group's Pods would run as their account"
    assert "ServiceAccount f-worker-gpu" in conditions(status)["Ready"]["message"]
    settle(rest, federation({"rounds": 3}, generation=2))
    assert rest.objects[("ServiceAccount", "f-worker-gpu")] == theirs, "not ours to delete"


S3_STORAGE = {"rounds": 3, "storage": {"uri": "s3://bucket/feds", "secretRef": {"name": "s3-creds"}}}


class NoSecretRights(FakeRest):
    """The API as the chart's Role lets the operator see it: any request about a Secret is forbidden."""

    def _refuse(self, kind):
        if kind == "Secret":
            raise AssertionError("the operator asked the API server about a Secret: it has no rights on Secrets")

    def get(self, kind, namespace, name):
        self._refuse(kind)
        return super().get(kind, namespace, name)

    def exists(self, kind, namespace, name):
        self._refuse(kind)
        return super().exists(kind, namespace, name)

    def list(self, kind, namespace, selector):
        self._refuse(kind)
        return super().list(kind, namespace, selector)


def ray_pod(name: str, cluster: str, waiting: dict | None = None) -> dict:
    """A Ray Pod as the kubelet reports it: waiting (with its reason and message), or running."""
    state = {"waiting": waiting} if waiting else {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    return {
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"ray.io/cluster": cluster, "ray.io/node-type": "head"}},
        "status": {
            "phase": "Pending" if waiting else "Running",
            "containerStatuses": [{"name": "ray-head", "state": state}],
        },
    }


def test_a_missing_storage_secret_is_read_off_the_waiting_pod_never_off_the_secret():
    rest = NoSecretRights()
    status = settle(rest, federation(S3_STORAGE))
    assert rest.names("RayCluster") == ["f-ray"], "the cluster is made: only its Pod can tell the Secret is missing"
    assert {c["type"]: c for c in status["conditions"]}["StorageReady"]["status"] == "True"

    # The kubelet cannot make the head's container: its envFrom names a Secret that does not exist.
    missing = {"reason": "CreateContainerConfigError", "message": 'secret "s3-creds" not found'}
    rest.objects[("Pod", "f-ray-head")] = ray_pod("f-ray-head", "f-ray", missing)
    status = settle(rest, federation(S3_STORAGE))
    conds = {c["type"]: c for c in status["conditions"]}
    assert status["phase"] == "Pending" and status["reason"] == "StorageUnavailable"
    assert conds["StorageReady"]["status"] == "False"
    assert conds["StorageReady"]["message"].startswith("spec.storage.secretRef.name: 's3-creds': no such Secret")

    # As the API server words it (the kubelet's Get strategy): the same condition.
    missing = {"reason": "CreateContainerConfigError", "message": 'secrets "s3-creds" not found'}
    rest.objects[("Pod", "f-ray-head")] = ray_pod("f-ray-head", "f-ray", missing)
    assert settle(rest, federation(S3_STORAGE))["reason"] == "StorageUnavailable"

    # Another Secret missing (the user's own envFrom) is not the storage's; a head that runs is fine.
    other = {"reason": "CreateContainerConfigError", "message": 'secret "their-own" not found'}
    rest.objects[("Pod", "f-ray-head")] = ray_pod("f-ray-head", "f-ray", other)
    assert settle(rest, federation(S3_STORAGE)).get("reason") != "StorageUnavailable"
    rest.objects[("Pod", "f-ray-head")] = ray_pod("f-ray-head", "f-ray")
    rest.set_status("RayCluster", "f-ray", state="ready")
    status = settle(rest, federation(S3_STORAGE))
    assert {c["type"]: c for c in status["conditions"]}["StorageReady"]["status"] == "True"
    assert rest.names("PersistentVolumeClaim") == []


def test_a_named_claim_that_does_not_exist_holds_the_cluster_back():
    rest = FakeRest()
    status = settle(rest, federation({"rounds": 3, "storage": {"pvc": {"claimName": "results"}}}))
    assert (
        status["reason"] == "StorageUnavailable"
        and "spec.storage.pvc.claimName: 'results'" in status["conditions"][0]["message"]
    )
    assert rest.names("RayCluster") == [] and rest.names("PersistentVolumeClaim") == []


def test_a_claim_of_the_name_made_by_someone_else_is_a_conflict_and_left_alone():
    rest = FakeRest()
    theirs = {"kind": "PersistentVolumeClaim", "metadata": {"name": "f-storage", "labels": {"app": "theirs"}}}
    rest.objects[("PersistentVolumeClaim", "f-storage")] = copy.deepcopy(theirs)
    status = settle(rest, federation())
    assert status["reason"] == "Conflict" and "PersistentVolumeClaim f-storage" in status["conditions"][0]["message"]
    assert rest.names("RayCluster") == []
    assert rest.objects[("PersistentVolumeClaim", "f-storage")] == theirs


def test_a_retained_claim_has_no_owner_and_outlives_its_federation_and_is_picked_up_again():
    rest = FakeRest()
    settle(rest, federation())
    claim = rest.objects[("PersistentVolumeClaim", "f-storage")]
    assert "ownerReferences" not in claim["metadata"]
    assert claim["metadata"]["annotations"] == {"red.dev/claim-of": "u1"}
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
    # The Federation is deleted (GC removes what it owns) and re-created under its name: a new uid.
    for key in [k for k in rest.objects if k[0] != "PersistentVolumeClaim"]:
        del rest.objects[key]
    again = federation()
    again["metadata"]["uid"] = "u2"
    status = settle(rest, again)
    assert status["reason"] != "Conflict" and rest.names("RayCluster") == ["f-ray"]


def test_an_unretained_claim_is_owned_so_it_goes_with_its_federation():
    rest = FakeRest()
    settle(
        rest,
        federation({"rounds": 3, "storage": {"pvc": {"size": "5Gi", "storageClassName": "fast"}, "retain": False}}),
    )
    claim = rest.objects[("PersistentVolumeClaim", "f-storage")]
    assert [r["uid"] for r in claim["metadata"]["ownerReferences"]] == ["u1"]
    assert claim["spec"]["storageClassName"] == "fast" and claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


SERVED = {"rounds": 3, "serve": {"replicas": 2}}


def succeeded(rest, spec, generation=1):
    """The Federation's RayJob run to success, and the pass that sees it (the driver's final report in)."""
    settle(rest, federation(spec, generation))
    rest.set_status("RayJob", rest.names("RayJob")[0], jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    return reconcile(federation(spec, generation, status=DRIVER_DONE), rest)


def args(rest):
    import yaml

    service = rest.objects[("RayService", "f-serve")]
    return yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["args"]


def test_the_model_is_served_once_the_federation_has_succeeded():
    rest = FakeRest()
    running = settle(rest, federation(SERVED))
    assert rest.names("RayService") == [] and running["serveURL"] == ""
    job = rest.names("RayJob")[0]
    rest.set_status("RayJob", job, jobDeploymentStatus="Complete", jobStatus="SUCCEEDED")
    # KubeRay says done, but the driver's final report has not landed: not Succeeded yet, nothing served
    awaiting = reconcile(federation(SERVED), rest).status
    assert awaiting["phase"] == "Running" and rest.names("RayService") == []
    result = reconcile(federation(SERVED, status=DRIVER_DONE), rest)
    assert result.status["phase"] == "Succeeded" and result.conflicts == []
    assert rest.names("RayService") == ["f-serve"] and rest.names("RayCluster") == []
    assert result.status["serveURL"] == "http://f-serve-serve-svc.ns.svc:8000"
    assert args(rest) == {"run": "/red/storage/f", "replicas": 2, "cpu": 1.0, "gpu": 0.0}
    assert ("CreatedRayService", "created RayService f-serve") in [(a.reason, a.message) for a in result.actions]
    serving = conditions(result.status)["Serving"]
    assert (serving["status"], serving["reason"]) == ("False", "Deploying")
    ready = {"type": "Ready", "status": "True", "reason": "NonZeroServeEndpoints", "message": "2 endpoints"}
    rest.set_status("RayService", "f-serve", conditions=[ready])
    serving = conditions(reconcile(federation(SERVED, status=DRIVER_DONE), rest).status)["Serving"]
    assert (serving["status"], serving["reason"]) == ("True", "NonZeroServeEndpoints")
    assert serving["message"] == "RayService f-serve: 2 endpoints"
    assert "Serving" not in conditions(running), "a Federation that serves nothing has no such condition"
    created = [e for e in rest.log if e[0] == "create"]
    settle(rest, federation(SERVED, status=DRIVER_DONE))
    assert [e for e in rest.log if e[0] == "create"] == created and rest.names("RayJob") == [job]


def test_a_serve_change_patches_the_service_and_trains_nothing():
    rest = FakeRest()
    succeeded(rest, SERVED)
    job, uid = rest.names("RayJob"), rest.objects[("RayService", "f-serve")]["metadata"].get("uid")
    resized = {"rounds": 3, "serve": {"replicas": 5, "cpu": 0.5}}
    status = reconcile(federation(resized, 2, status=DRIVER_DONE), rest).status
    assert status["phase"] == "Succeeded" and status["observedGeneration"] == 2
    assert rest.names("RayJob") == job, "serving must not retrain"
    assert args(rest) == {"run": "/red/storage/f", "replicas": 5, "cpu": 0.5, "gpu": 0.0}
    service = rest.objects[("RayService", "f-serve")]
    assert service["metadata"].get("uid") == uid
    assert service["metadata"]["labels"][builders.LABEL_SERVE_HASH] == builders.serve_hash(
        parse_manifest(federation(resized)).spec
    )
    patches = [e for e in rest.log if e[0] == "patch" and e[1] == "RayService"]
    reconcile(federation(resized, 2, status=DRIVER_DONE), rest)
    assert [e for e in rest.log if e[0] == "patch" and e[1] == "RayService"] == patches, "patched once"


@pytest.mark.parametrize(
    "change",
    [{"rounds": 3}, {"rounds": 3, "serve": None}, {"rounds": 3, "serve": {"replicas": 2}, "suspend": True}],
    ids=["serve removed", "serve null", "suspended"],
)
def test_serving_stops_when_serve_goes_or_the_federation_is_suspended(change):
    rest = FakeRest()
    succeeded(rest, SERVED)
    status = reconcile(federation(change, 2, status=DRIVER_DONE), rest).status
    assert rest.names("RayService") == [] and status["serveURL"] == "" and "Serving" not in conditions(status)


def test_retraining_stops_serving_the_old_model():
    rest = FakeRest()
    succeeded(rest, SERVED)
    status = reconcile(federation({**SERVED, "rounds": 4}, 2, status=DRIVER_DONE), rest).status
    assert status["phase"] != "Succeeded" and rest.names("RayService") == [] and status["serveURL"] == ""


def test_an_invalid_spec_stops_serving():
    rest = FakeRest()
    succeeded(rest, SERVED)
    status = reconcile(federation({**SERVED, "rounds": -1}, 2, status=DRIVER_DONE), rest).status
    assert status["reason"] == "InvalidSpec" and rest.names("RayService") == []


def test_a_rayservice_of_someone_else_is_never_touched_and_is_a_conflict():
    rest = FakeRest()
    theirs = foreign("RayService", "f-serve", spec={"serveConfigV2": "applications: []"})
    rest.objects[("RayService", "f-serve")] = copy.deepcopy(theirs)
    status = succeeded(rest, SERVED).status
    assert rest.objects[("RayService", "f-serve")] == theirs and status["serveURL"] == ""
    assert status["phase"] == "Succeeded" and status["reason"] == "Conflict"
    assert "RayService f-serve exists and is controlled by nothing" in conditions(status)["Ready"]["message"]
    for spec in ({"rounds": 3}, {**SERVED, "suspend": True}, {**SERVED, "rounds": -1}):
        reconcile(federation(spec, 2, status=DRIVER_DONE), rest)
        assert rest.objects[("RayService", "f-serve")] == theirs, "never deleted, whatever the spec says"
    # a Federation that serves nothing does not claim the name: no conflict
    assert reconcile(federation({"rounds": 3}, 2, status=DRIVER_DONE), rest).conflicts == []
