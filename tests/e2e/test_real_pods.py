"""Red as a user runs it: the chart installed with its default values, a Federation applied, real Pods.

Nothing here is simulated. The suite's real node (tests/cluster/node.sh: a kubelet with containerd and
runc) runs the operator image and the runtime image that tests/cluster/images/build built from
images/*.Dockerfile, KubeRay creates the head and worker Pods, its submitter Pod submits the RayJob
(K8sJobMode), the driver trains inside the head container, and the node actors run in the worker Pod.
Only GPUs are missing, so this Federation asks for none.
"""

from __future__ import annotations

import time

import pytest
import yaml

from tests.e2e.real_node import (
    NODE,
    ROUNDS,
    RUNTIME_IMAGE,
    federation,
    node_hosts_in,
    pods_of,
    wait_for_the_end,
)
from tests.e2e.test_e2e import Watch
from tests.operator.test_operator_cluster import get

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("chart")]


def test_the_chart_and_a_federation_run_in_real_pods(kube, node_namespace: str):
    namespace = node_namespace
    operator = pods_of(kube, namespace, "app.kubernetes.io/name=red-operator")
    assert [p["spec"]["nodeName"] for p in operator] == [NODE], operator

    kube.apply(federation("real"), namespace=namespace)
    watch = Watch(kube, namespace, "real")
    final = wait_for_the_end(kube, namespace, "real", ROUNDS)

    # `kubectl get fed -w` showed the rounds go by, in order, while it trained.
    time.sleep(1)  # the watch prints the last version
    rows = watch.stop()
    rounds = [int(r[0].split("/")[0]) for r in rows if r and r[0] != "<none>"]
    assert rounds == sorted(rounds) and rounds[-1] == ROUNDS and len(set(rounds)) >= 2, rows
    assert any(r[2] == "Running" for r in rows if len(r) == 3), rows

    # `kubectl get fed -o yaml` counts every node's health and lists those that are not Healthy: none.
    doc = yaml.safe_load(kube.kubectl("get", "fed", "real", "-o", "yaml", namespace=namespace).stdout)
    assert doc["status"]["nodeCounts"]["Healthy"] == 2 and sum(doc["status"]["nodeCounts"].values()) == 2
    assert not doc["status"].get("nodes") and doc["status"]["completionTime"] and doc["status"]["startTime"]
    conditions = {c["type"]: c["status"] for c in doc["status"]["conditions"]}
    assert conditions["Succeeded"] == "True" and conditions["NodesHealthy"] == "True"

    # The printer columns a user reads.
    row = kube.kubectl("get", "fed", "real", "--no-headers", namespace=namespace).stdout.split()
    ready, phase, progress, nodes, accuracy = row[1:6]
    assert (ready, phase, progress, nodes) == ("True", "Succeeded", f"{ROUNDS}/{ROUNDS}", "2/2")
    assert float(accuracy) > 0.7

    # KubeRay ran a head and a worker Pod from the runtime image, in containerd, on the real node, and its
    # submitter Pod submitted the job.
    cluster = final["rayClusterName"]
    ray_pods = pods_of(kube, namespace, f"ray.io/cluster={cluster}")
    kinds = sorted(p["metadata"]["labels"]["ray.io/node-type"] for p in ray_pods)
    assert kinds == ["head", "worker"], kinds
    for pod in ray_pods:
        assert pod["spec"]["nodeName"] == NODE
        container = pod["status"]["containerStatuses"][0]
        assert container["containerID"].startswith("containerd://"), container
        assert container["image"] == RUNTIME_IMAGE, container
    job = get(kube, namespace, "rayjob", final["rayJobName"])
    assert job["status"]["jobStatus"] == "SUCCEEDED", job["status"]
    submitters = kube.kubectl_json("get", "pods", "-l", f"job-name={final['rayJobName']}", namespace=namespace)["items"]
    assert submitters and submitters[0]["status"]["phase"] == "Succeeded", submitters

    # The node actors ran in the worker Pod, not only on the head: Ray's own records say where.
    head = next(p for p in ray_pods if p["metadata"]["labels"]["ray.io/node-type"] == "head")
    worker = next(p for p in ray_pods if p["metadata"]["labels"]["ray.io/node-type"] == "worker")

    assert node_hosts_in(kube, namespace, head, worker), "no node actor ran in the worker Pod"
