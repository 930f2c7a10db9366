"""A Federation queued by Kueue, against the in-memory API: what the operator creates, holds back and reports
while Kueue holds its RayCluster, and what it does when Kueue admits or evicts it. (The real Kueue is in
tests/e2e/test_real_pod_queueing.py.)"""

from __future__ import annotations

import pytest

from red_api.spec import QUEUE_LABEL, SpecError, parse_manifest
from red_operator import builders
from red_operator.reconcile import KUEUE_JOB_UID, reconcile
from tests.operator.test_reconcile import FakeRest, federation, settle

pytestmark = pytest.mark.unit


def queued(spec=None, queue="team-a", **kw):
    doc = federation(spec, **kw)
    doc["metadata"]["labels"] = {QUEUE_LABEL: queue}
    return doc


def workload(rest, cluster_uid, **conditions):
    """Kueue's Workload for the RayCluster, with conditions given as type=(status, reason, message)."""
    rest.objects[("Workload", "raycluster-f-ray-1a2b3")] = {
        "kind": "Workload",
        "metadata": {"name": "raycluster-f-ray-1a2b3", "labels": {KUEUE_JOB_UID: cluster_uid}},
        "status": {
            "conditions": [{"type": t, "status": s, "reason": r, "message": m} for t, (s, r, m) in conditions.items()]
        },
    }


def condition(status, kind):
    return next(c for c in status["conditions"] if c["type"] == kind)


def test_a_queued_federation_gets_a_suspended_labelled_cluster_and_no_rayjob_until_admitted():
    rest = FakeRest()
    spec = {"rounds": 3, "priorityClassName": "high"}
    status = settle(rest, queued(spec))
    cluster = rest.objects[("RayCluster", "f-ray")]
    assert cluster["spec"]["suspend"] is True
    labels = cluster["metadata"]["labels"]
    assert labels[QUEUE_LABEL] == "team-a" and labels["kueue.x-k8s.io/priority-class"] == "high"
    assert rest.names("RayJob") == []
    assert status["phase"] == "Queued"
    queued_condition = condition(status, "Queued")
    assert queued_condition["status"] == "True"
    assert "LocalQueue team-a" in queued_condition["message"] and "no Workload yet" in queued_condition["message"]
    assert condition(status, "Ready")["status"] == "False" and condition(status, "Ready")["reason"] == "Queued"

    # Kueue's own words say why it waits.
    why = "couldn't assign flavors to pod set head: insufficient unused quota for cpu in flavor default"
    workload(rest, cluster["metadata"]["uid"], QuotaReserved=("False", "Pending", why))
    status = reconcile(queued(spec), rest).status
    message = condition(status, "Queued")["message"]
    assert "Workload raycluster-f-ray-1a2b3" in message and why in message

    # Admitted: Kueue lifts the suspension, and the RayJob follows.
    rest.objects[("RayCluster", "f-ray")]["spec"]["suspend"] = False
    rest.set_status("RayCluster", "f-ray", state="ready")
    status = reconcile(queued(spec), rest).status
    assert len(rest.names("RayJob")) == 1 and status["phase"] == "Provisioning"
    assert condition(status, "Queued")["status"] == "False" and condition(status, "Queued")["reason"] == "Admitted"


def test_an_evicted_federation_loses_its_rayjob_and_waits_again_saying_where_it_resumes():
    rest = FakeRest()
    settle(rest, queued())
    rest.objects[("RayCluster", "f-ray")]["spec"]["suspend"] = False
    rest.set_status("RayCluster", "f-ray", state="ready")
    reconcile(queued(), rest)
    (job,) = rest.names("RayJob")
    rest.set_status("RayJob", job, jobDeploymentStatus="Running", jobStatus="RUNNING")

    # Kueue preempts: it suspends the RayCluster and says why on the Workload.
    rest.objects[("RayCluster", "f-ray")]["spec"]["suspend"] = True
    uid = rest.objects[("RayCluster", "f-ray")]["metadata"]["uid"]
    workload(
        rest, uid, Evicted=("True", "Preempted", "Preempted to accommodate a workload (UID: x) due to prioritization")
    )
    status = reconcile(queued(status={"lastCheckpoint": {"round": 4, "path": "/red/x"}}), rest).status
    assert rest.names("RayJob") == [], "no driver may run on a cluster Kueue has taken back"
    assert rest.names("RayCluster") == ["f-ray"], "the cluster stays, suspended, for Kueue to readmit"
    assert status["phase"] == "Queued" and status["reason"] == "Preempted"
    assert "resumes after round 4" in condition(status, "Queued")["message"]

    # Readmitted: a new RayJob, whose driver resumes from the checkpoint in the Federation's storage.
    rest.objects[("RayCluster", "f-ray")]["spec"]["suspend"] = False
    status = reconcile(queued(), rest).status
    assert len(rest.names("RayJob")) == 1 and status["phase"] == "Provisioning"


def test_a_federation_without_the_label_is_not_queued():
    rest = FakeRest()
    status = settle(rest, federation())
    assert "suspend" not in rest.objects[("RayCluster", "f-ray")]["spec"]
    assert QUEUE_LABEL not in rest.objects[("RayCluster", "f-ray")]["metadata"]["labels"]
    assert not [c for c in status["conditions"] if c["type"] == "Queued"]


def manifest(labels=None, **spec):
    return {
        "apiVersion": "red.dev/v1alpha1",
        "kind": "Federation",
        "metadata": {"name": "f", "labels": labels or {}},
        "spec": {"rounds": 3, **spec},
    }


def groups(n, first="g"):
    return {"workerGroups": [{"name": f"{first}{i}" if i else first, "replicas": 1} for i in range(n)]}


def test_a_spec_kueue_cannot_queue_is_refused_naming_the_field():
    with pytest.raises(SpecError) as err:
        parse_manifest(manifest({QUEUE_LABEL: "q"}, ray=groups(8)))
    assert "spec.ray.workerGroups: 8 groups" in str(err.value) and "at most 7" in str(err.value)
    with pytest.raises(SpecError, match=r"spec.ray.workerGroups\[0\].name: 'head'"):
        parse_manifest(manifest({QUEUE_LABEL: "q"}, ray=groups(1, first="head")))
    with pytest.raises(SpecError, match=r"spec.priorityClassName: 'high': a Kueue priority needs a queue"):
        parse_manifest(manifest(priorityClassName="high"))
    with pytest.raises(SpecError, match=r"metadata.labels\['kueue.x-k8s.io/queue-name'\]: 'Not_A_Name'"):
        parse_manifest(manifest({QUEUE_LABEL: "Not_A_Name"}))
    # Unqueued, eight groups are fine; queued, seven are.
    assert len(parse_manifest(manifest(ray=groups(8))).spec.ray.workerGroups) == 8
    assert parse_manifest(manifest({QUEUE_LABEL: "q"}, ray=groups(7))).queue == "q"


def test_a_refused_spec_runs_nothing_and_keeps_the_storage():
    rest = FakeRest()
    status = settle(rest, queued({"rounds": 3, "ray": groups(8)}))
    assert status["phase"] == "Failed" and status["reason"] == "InvalidSpec"
    assert "spec.ray.workerGroups: 8 groups" in condition(status, "Ready")["message"]
    assert rest.names("RayCluster") == [] and rest.names("RayJob") == []


def test_priority_does_not_retrain_and_the_head_drains_its_driver_before_it_goes():
    fed = parse_manifest(manifest({QUEUE_LABEL: "q"}, priorityClassName="high", ray=groups(2)))
    plain = parse_manifest(manifest({QUEUE_LABEL: "q"}, ray=groups(2)))
    assert builders.spec_hash(fed.spec) == builders.spec_hash(plain.spec)
    cluster = builders.build_raycluster(fed)["spec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    (container,) = head["containers"]
    assert container["lifecycle"]["preStop"]["exec"]["command"][:3] == ["python", "-m", "red_runtime.apps.drain"]
    # The hook's wait fits in the Pod's grace period, with room for Ray's own shutdown.
    assert head["terminationGracePeriodSeconds"] > builders.JOB_STOP_WAIT_S
    # A worker's hook keeps its node actors until the driver has let them go (its last round, the checkpoint).
    for group in cluster["workerGroupSpecs"]:
        worker = group["template"]["spec"]
        assert worker["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1] == "--actors"
        assert worker["terminationGracePeriodSeconds"] > builders.JOB_STOP_WAIT_S


def test_a_cluster_that_kueue_queued_by_its_namespace_default_is_held_too():
    """Kueue labels a job that names no queue for a LocalQueue called `default`, and suspends it: the operator
    then waits as for a Federation that asked for the queue, rather than submit to a cluster with no Pods."""
    rest = FakeRest()
    settle(rest, federation())
    for (kind, _), obj in list(rest.objects.items()):
        if kind == "RayJob":
            del rest.objects[(kind, obj["metadata"]["name"])]
    cluster = rest.objects[("RayCluster", "f-ray")]
    cluster["metadata"]["labels"][QUEUE_LABEL] = "default"
    cluster["spec"]["suspend"] = True
    status = reconcile(federation(), rest).status
    assert rest.names("RayJob") == [] and status["phase"] == "Queued"
    assert "LocalQueue default" in condition(status, "Queued")["message"]


def test_a_suspended_federation_still_names_the_rayjob_whose_driver_is_stopping():
    """The driver stops after its round and reports the checkpoint it wrote; its status sink holds a report
    back once the status names another RayJob, so the suspended status keeps naming the stopped one."""
    rest = FakeRest()
    status = settle(rest, federation())
    (job,) = rest.names("RayJob")
    suspended = settle(rest, federation({"rounds": 3, "suspend": True}, generation=2, status=status))
    assert suspended["phase"] == "Suspended" and rest.names("RayJob") == []
    assert suspended["rayJobName"] == job


def test_an_evicted_federations_rayjob_is_deleted_once_while_kuberays_finalizer_holds_it():
    rest = FakeRest()
    rest.finalizing.add("RayJob")  # KubeRay stops the Ray job before the RayJob goes
    settle(rest, queued())
    rest.objects[("RayCluster", "f-ray")]["spec"]["suspend"] = False
    reconcile(queued(), rest)
    (job,) = rest.names("RayJob")
    rest.objects[("RayCluster", "f-ray")]["spec"]["suspend"] = True
    result = reconcile(queued(), rest)
    assert rest.log.count(("delete", "RayJob", job)) == 1, "one DELETE and one Event per RayJob"
    assert [a.reason for a in result.actions] == ["DeletedRayJob"]
    assert "Kueue holds RayCluster f-ray (LocalQueue team-a)" in result.actions[0].message
