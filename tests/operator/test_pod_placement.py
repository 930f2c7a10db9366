"""Ray Pods fit real clusters: admitted under Pod Security `restricted`, placed on tainted GPU nodes.

Against the real API server (its PodSecurity admission), the real KubeRay (which makes the head, worker and
submitter Pods from the Federation's templates), kube-scheduler and the Job controller; kwok's nodes
`kwok-gpu-0/1` carry `nvidia.com/gpu: 8` and are tainted here the way GKE and EKS taint GPU nodes.
"""

from __future__ import annotations

import json

import pytest

from tests.operator.test_operator_cluster import apply, federation, get, items

pytestmark = pytest.mark.cluster

GPU_NODES = ("kwok-gpu-0", "kwok-gpu-1")
GPU_TAINT = "nvidia.com/gpu=present:NoSchedule"
IDENTITY = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/red-datasets"}


@pytest.fixture
def restricted(kube, namespace) -> str:
    """The test's namespace under `restricted` enforcement, shown to refuse a plain Pod."""
    kube.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite")
    plain = kube.kubectl(
        "run", "plain", "--image=busybox", "--restart=Never", "--dry-run=server", namespace=namespace, check=False
    )
    assert plain.returncode != 0 and "violates PodSecurity" in plain.stderr, plain.stderr
    return namespace


@pytest.fixture
def tainted_gpu_nodes(kube) -> tuple[str, ...]:
    """The GPU nodes tainted as a cloud's are (idempotent: tests/cluster/ctl may have done it already)."""
    for node in GPU_NODES:
        kube.kubectl("taint", "nodes", node, GPU_TAINT, "--overwrite")
    for node in GPU_NODES:
        taints = get(kube, "", "node", node)["spec"]["taints"]
        assert {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"} in taints
    return GPU_NODES


def pods(kube, namespace: str, selector: str) -> list[dict]:
    return items(kube, namespace, "pods", selector)


def scheduled(kube, namespace: str, selector: str, count: int) -> list[dict]:
    found = [p for p in pods(kube, namespace, selector) if p["spec"].get("nodeName")]
    return found if len(found) >= count else []


def test_a_restricted_namespace_admits_every_pod_and_gpu_workers_land_on_tainted_gpu_nodes(
    kube, restricted, tainted_gpu_nodes, operator
):
    namespace = restricted
    volumes = [{"name": "scratch", "emptyDir": {}}, {"name": "config", "configMap": {"name": "red-config"}}]
    mounts = [{"name": "scratch", "mountPath": "/scratch"}, {"name": "config", "mountPath": "/etc/red"}]
    spec = {
        "rounds": 3,
        "nodes": {"count": 4},
        "ray": {
            "keepCluster": True,  # the Pods stay after KubeRay fails the job (no Ray runs on kwok)
            "head": {"cpu": "1", "memory": "1Gi", "imagePullSecrets": [{"name": "regcred"}], "labels": {"team": "a"}},
            "workerGroups": [
                {
                    "name": "gpu",
                    "replicas": 2,
                    "cpu": "1",
                    "gpu": 1,
                    "memory": "1Gi",
                    "serviceAccountAnnotations": IDENTITY,
                    "volumes": volumes,
                    "volumeMounts": mounts,
                },
                {"name": "cpu", "replicas": 1, "cpu": "1", "memory": "1Gi"},
            ],
        },
    }
    apply(kube, namespace, federation("fit", spec, mode="K8sJobMode"))
    cluster = "ray.io/cluster=fit-ray"
    (head,) = kube.wait_for(
        lambda: scheduled(kube, namespace, f"{cluster},ray.io/node-type=head", 1), timeout=120, message="head Pod"
    )
    gpu = kube.wait_for(lambda: scheduled(kube, namespace, f"{cluster},ray.io/group=gpu", 2), timeout=120)
    (cpu,) = kube.wait_for(lambda: scheduled(kube, namespace, f"{cluster},ray.io/group=cpu", 1), timeout=120)

    # The default toleration takes the GPU workers onto the tainted GPU nodes; the rest stay off them.
    assert {p["spec"]["nodeName"] for p in gpu} <= set(GPU_NODES)
    for pod in gpu:
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"]["tolerations"]
        assert pod["spec"]["serviceAccountName"] == "fit-worker-gpu"
        assert pod["spec"]["automountServiceAccountToken"] is False
        mounted = {m["mountPath"] for m in pod["spec"]["containers"][0]["volumeMounts"]}
        assert {"/scratch", "/etc/red"} <= mounted
    assert head["spec"]["nodeName"] not in GPU_NODES and cpu["spec"]["nodeName"] not in GPU_NODES
    assert head["spec"]["imagePullSecrets"] == [{"name": "regcred"}] and head["metadata"]["labels"]["team"] == "a"
    account = get(kube, namespace, "serviceaccount", "fit-worker-gpu")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == IDENTITY["eks.amazonaws.com/role-arn"]
    assert account["metadata"]["ownerReferences"][0]["name"] == "fit"

    # KubeRay's submitter Pod (K8sJobMode) is admitted too, with the head's pull secrets and no token.
    job = kube.wait_for(lambda: get(kube, namespace, "federation", "fit")["status"].get("rayJobName"), timeout=60)
    (submitter,) = kube.wait_for(lambda: pods(kube, namespace, f"batch.kubernetes.io/job-name={job}"), timeout=180)
    assert submitter["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert submitter["spec"]["automountServiceAccountToken"] is False
    for pod in (head, *gpu, cpu, submitter):
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    refused = [
        e["message"]
        for e in kube.kubectl_json("get", "events", namespace=namespace)["items"]
        if "PodSecurity" in e.get("message", "")
    ]
    assert refused == []


def test_a_hostpath_volume_is_refused_by_the_api_server_naming_the_field(kube, restricted, operator):
    spec = {"ray": {"workerGroups": [{"name": "w", "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}]}}
    manifest = json.dumps(federation("host", spec))
    proc = kube.kubectl("apply", "--validate=strict", "-f", "-", input=manifest, namespace=restricted, check=False)
    assert proc.returncode != 0 and "spec.ray.workerGroups[0].volumes[0].hostPath" in proc.stderr, proc.stderr
    # A client that does not validate strictly has the field pruned, and the one-kind rule refuses what is left.
    proc = kube.kubectl("apply", "--validate=false", "-f", "-", input=manifest, namespace=restricted, check=False)
    assert proc.returncode != 0 and "spec.ray.workerGroups[0].volumes[0]" in proc.stderr, proc.stderr
    assert items(kube, restricted, "federations") == []
