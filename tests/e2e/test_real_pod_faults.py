"""Faults for real, on the suite's real node: Pods deleted mid-run, as a node drain or an eviction would.

Each test installs the chart with its default values in a namespace that enforces Pod Security
`restricted`, applies a Federation and deletes one of the Pods that run it while it trains.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.e2e.real_node import (
    NODE,
    delete_pod,
    diagnose,
    federation,
    node_hosts_in,
    pods_of,
    progress,
    slow_federation,
    wait_for_round,
    wait_for_the_end,
)
from tests.e2e.real_node import (
    SLOW_ROUNDS as ROUNDS,
)
from tests.e2e.test_e2e import Watch
from tests.operator.test_operator_cluster import status

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("chart")]


def test_a_deleted_worker_pod_is_survived_and_its_restarts_counted(kube, node_namespace: str):
    namespace, name = node_namespace, "lose-worker"
    kube.apply(slow_federation(name), namespace=namespace)
    cluster = wait_for_round(kube, namespace, name, 1)["rayClusterName"]
    (head,) = pods_of(kube, namespace, f"ray.io/cluster={cluster},ray.io/node-type=head")
    (worker,) = pods_of(kube, namespace, f"ray.io/cluster={cluster},ray.io/node-type=worker")
    assert node_hosts_in(kube, namespace, head, worker), "no node actor in the worker Pod: nothing to lose"
    delete_pod(kube, namespace, worker)
    assert progress(status(kube, namespace, name)) < ROUNDS - 2, "the run ended before the Pod went"

    final = wait_for_the_end(kube, namespace, name, ROUNDS)
    # The node actors on the lost Pod were restarted (KubeRay replaced the Pod) and the count says so.
    assert final["nodeRestarts"] >= 1, json.dumps(final, indent=1)
    assert final["nodeCounts"]["Healthy"] == 2, final["nodeCounts"]
    (replacement,) = pods_of(kube, namespace, f"ray.io/cluster={cluster},ray.io/node-type=worker")
    assert replacement["metadata"]["uid"] != worker["metadata"]["uid"]
    assert replacement["spec"]["nodeName"] == NODE


def test_a_deleted_head_pod_resumes_from_the_checkpoint_in_its_storage(kube, node_namespace: str):
    """Checkpoints go to the Federation's storage (by default a claim of its own, which the suite's default
    StorageClass binds); the head is deleted mid-run, and the run that follows continues after the last one."""
    namespace, name = node_namespace, "lose-head"
    doc = slow_federation(name)
    spec = doc["spec"]
    spec["checkpoint"] = {"every": 1}
    spec["faultTolerance"] = {"maxJobRetries": 2}
    kube.apply(doc, namespace=namespace)
    watch = Watch(kube, namespace, name)

    before = kube.wait_for(
        lambda: (s := status(kube, namespace, name)).get("lastCheckpoint", {}).get("round", 0) >= 2 and s,
        timeout=600,
        interval=1,
        message=lambda: (
            f"a checkpoint of {name}: {json.dumps(status(kube, namespace, name))[:1500]}\n" + diagnose(kube, namespace)
        ),
    )
    saved = before["lastCheckpoint"]["round"]
    cluster = before["rayClusterName"]
    (head,) = pods_of(kube, namespace, f"ray.io/cluster={cluster},ray.io/node-type=head")
    delete_pod(kube, namespace, head)
    seen = len(watch.rows)
    assert progress(status(kube, namespace, name)) < ROUNDS - 2, "the run ended before the Pod went"

    final = wait_for_the_end(kube, namespace, name, ROUNDS)
    time.sleep(1)  # the watch prints the last version
    rows = watch.stop()
    # After the head went, no driver started over: each one reported the round it resumed after, never 0.
    after = [int(r[0].split("/")[0]) for r in rows[seen:] if r and r[0] != "<none>"]
    assert after and min(after) >= saved, (saved, rows)
    assert final["lastCheckpoint"]["round"] == ROUNDS, final
    (new_head,) = pods_of(kube, namespace, f"ray.io/cluster={cluster},ray.io/node-type=head")
    assert new_head["metadata"]["uid"] != head["metadata"]["uid"]
    # The checkpoints are on the claim, not in the container: the new head Pod lists the last one.
    listing = kube.kubectl(
        "exec",
        new_head["metadata"]["name"],
        "-c",
        new_head["spec"]["containers"][0]["name"],
        "--",
        "ls",
        f"/red/storage/{name}/checkpoints",
        namespace=namespace,
    ).stdout.split()
    assert any(f.startswith(f"round-{ROUNDS:06d}-") and f.endswith(".pt") for f in listing), listing


KWOK = {
    "nodeSelector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def test_a_deleted_operator_pod_leaves_no_duplicate_children(kube, node_namespace: str):
    """The operator Pod is killed (no grace) right after eight Federations arrive, while it reconciles them;
    its Deployment's next Pod finishes the work, and each Federation has one RayCluster and one RayJob.
    Their Ray Pods go to kwok's nodes (spec nodeSelector and tolerations): only the operator matters here."""
    namespace = node_namespace
    names = [f"crash-{i}" for i in range(8)]
    docs = []
    for name in names:
        doc = federation(name)
        ray = doc["spec"]["ray"]
        ray["submissionMode"] = "HTTPMode"  # no submitter Pod: nothing runs on the real node but the operator
        ray["head"].update(KWOK)
        ray["workerGroups"][0].update(KWOK)
        docs.append(doc)
    (operator,) = pods_of(kube, namespace, "app.kubernetes.io/name=red-operator")
    kube.apply(docs, namespace=namespace)
    kube.kubectl("delete", "pod", operator["metadata"]["name"], "--grace-period=0", "--force", namespace=namespace)

    def children(kind: str, name: str) -> list[dict]:
        return kube.kubectl_json("get", kind, "-l", f"red.dev/federation={name}", namespace=namespace)["items"]

    kube.wait_for(
        lambda: all(children("rayjob", n) and status(kube, namespace, n).get("rayJobName") for n in names),
        timeout=300,
        interval=2,
        message=lambda: (
            "a RayJob for every Federation: "
            + json.dumps({n: status(kube, namespace, n).get("conditions") for n in names})[:1500]
            + "\n"
            + diagnose(kube, namespace)
        ),
    )
    (replacement,) = [
        p
        for p in pods_of(kube, namespace, "app.kubernetes.io/name=red-operator")
        if not p["metadata"].get("deletionTimestamp")
    ]
    assert replacement["metadata"]["uid"] != operator["metadata"]["uid"]
    time.sleep(5)  # a duplicate made late by either operator Pod would show by now
    for name in names:
        uid = kube.kubectl_json("get", "federation", name, namespace=namespace)["metadata"]["uid"]
        for kind in ("raycluster", "rayjob"):
            found = children(kind, name)
            assert len(found) == 1, (name, kind, [o["metadata"]["name"] for o in found])
            owners = [r for r in found[0]["metadata"]["ownerReferences"] if r.get("controller")]
            assert [r["uid"] for r in owners] == [uid], (name, kind, owners)
        assert status(kube, namespace, name)["rayJobName"] == children("rayjob", name)[0]["metadata"]["name"]
