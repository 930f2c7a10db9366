"""Red as a user runs it: the chart installed with its default values, a Federation applied, real Pods.

Nothing here is simulated. The suite's real node (tests/cluster/node.sh: a kubelet with containerd and
runc) runs the operator image and the runtime image that tests/cluster/images/build built from
images/*.Dockerfile, KubeRay creates the head and worker Pods, its submitter Pod submits the RayJob
(K8sJobMode), the driver trains inside the head container, and the node actors run in the worker Pod.
Only GPUs are missing, so this Federation asks for none.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator

import pytest
import yaml

from red_api.spec import RaySpec
from tests.e2e.test_e2e import Watch
from tests.helm.conftest import CHART, Helm, helm  # noqa: F401 - the fixture
from tests.operator.test_operator_cluster import get, status

pytestmark = pytest.mark.e2e

NODE = "red-node"  # tests/cluster/node.sh
ROUNDS = 3
RUNTIME_IMAGE = RaySpec().image  # what a Federation runs unless it names another, built by the suite


@pytest.fixture(autouse=True)
def _the_suites_real_node(kube):
    if os.environ.get("RED_TEST_KUBECONFIG"):
        pytest.skip("needs the suite's real node with Red's images loaded (tests/cluster/ctl up)")
    if kube.kubectl("get", "node", NODE, check=False).returncode != 0:
        pytest.fail(f"no Node {NODE}: tests/cluster/ctl up starts it (RED_CLUSTER_NODE=0 leaves it out)")


def federation(name: str) -> dict:
    """Two nodes on digits, one worker Pod; sized for a 2-core machine (requests are also limits)."""
    spec = {
        "rounds": ROUNDS,
        "topology": {"kind": "star"},
        "nodes": {"count": 2, "role": "train-eval", "resources": {"cpu": 0.5}},
        "placement": {"strategy": "SPREAD"},
        "algorithm": {"name": "fedavg"},
        "task": {
            "dataset": {"name": "digits"},
            "partition": {"kind": "iid"},
            "model": {"name": "mlp", "hidden": [32]},
            "train": {"epochs": 2, "batchSize": 32, "optimizer": "sgd", "lr": 0.1},
            "seed": 0,
        },
        "ray": {
            "head": {"cpu": "500m", "memory": "3Gi"},
            "workerGroups": [{"name": "cpu", "replicas": 1, "cpu": "500m", "memory": "2Gi"}],
            "keepCluster": True,
        },
    }
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec}


def diagnose(kube, namespace: str) -> str:
    """What a user would look at when it does not finish: Pods, events, the head's log."""
    out = [kube.kubectl("get", "pods", "-o", "wide", namespace=namespace, check=False).stdout]
    out.append(
        kube.kubectl("get", "events", "--sort-by=.lastTimestamp", namespace=namespace, check=False).stdout[-4000:]
    )
    for name in kube.kubectl("get", "pods", "-o", "name", namespace=namespace, check=False).stdout.split():
        log = kube.kubectl("logs", name, "--all-containers", "--tail=40", namespace=namespace, check=False)
        out.append(f"--- {name}\n{log.stdout}{log.stderr}")
    return "\n".join(out)


def pods_of(kube, namespace: str, selector: str) -> list[dict]:
    return kube.kubectl_json("get", "pods", "-l", selector, namespace=namespace)["items"]


def ray_list(kube, namespace: str, head: dict, what: str) -> list[dict]:
    """`ray list WHAT` in the head Pod: Ray's own record of its nodes, actors, jobs."""
    cmd = ["exec", head["metadata"]["name"], "-c", head["spec"]["containers"][0]["name"], "--"]
    cmd += ["ray", "list", what, "--detail", "--format", "yaml", "--limit", "1000"]
    return yaml.safe_load(kube.kubectl(*cmd, namespace=namespace).stdout)


def node_hosts_in(kube, namespace: str, head: dict, pod: dict) -> list[dict]:
    """The node actors (NodeHost) that Ray placed in `pod`, alive or, after the run, killed by the driver."""
    nodes = [n["node_id"] for n in ray_list(kube, namespace, head, "nodes") if n["node_ip"] == pod["status"]["podIP"]]
    actors = ray_list(kube, namespace, head, "actors")
    return [a for a in actors if a["class_name"] == "NodeHost" and a["node_id"] in nodes]


def wait_for_the_end(kube, namespace: str, name: str, rounds: int) -> dict:
    """The Federation's final status, once it has Succeeded after all its rounds (else what went wrong)."""
    final = kube.wait_for(
        lambda: (s := status(kube, namespace, name)).get("phase") in ("Succeeded", "Failed") and s,
        timeout=900,
        interval=2,
        message=lambda: (
            f"the end of {name}: {json.dumps(status(kube, namespace, name))[:1500]}\n" + diagnose(kube, namespace)
        ),
    )
    assert final["phase"] == "Succeeded", json.dumps(final, indent=1) + "\n" + diagnose(kube, namespace)
    assert (final["round"], final["progress"]) == (rounds, f"{rounds}/{rounds}"), final
    return final


@pytest.fixture
def chart(helm: Helm, node_namespace: str) -> Iterator[str]:  # noqa: F811
    """The chart, installed as its README says, with its default values; uninstalled afterwards. The CRD
    exists already, shared with the other tests: --take-ownership adopts it (byte-identical)."""
    name = f"red-{uuid.uuid4().hex[:6]}"
    args = ("--namespace", node_namespace, "--take-ownership", "--wait", "--timeout", "5m")
    helm.run("install", name, CHART, *args, timeout=360)
    yield name
    helm.run("uninstall", name, "--namespace", node_namespace, "--wait", check=False)


def test_the_chart_and_a_federation_run_in_real_pods(kube, chart: str, node_namespace: str):
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
