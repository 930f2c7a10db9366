"""The test control plane itself: the API server, RBAC, TokenRequest, the controllers
(garbage collector, Job, namespace), the scheduler + kwok nodes, and the real KubeRay
operator reconciling a RayCluster.

These run against `tests/cluster/ctl up` or any cluster given by RED_TEST_KUBECONFIG.
The KubeRay/kwok tests expect the KubeRay CRDs + operator and schedulable nodes, which a
kind cluster also has once KubeRay is installed (pods then really pull the Ray image).
"""

from __future__ import annotations

import base64
import json

import pytest

pytestmark = pytest.mark.cluster

RAY_IMAGE = "rayproject/ray:2.52.0"


def _jwt_claims(token: str) -> dict:
    payload = token.split(".")[1]
    payload += "=" * (-len(payload) % 4)
    return json.loads(base64.urlsafe_b64decode(payload))


def test_readyz(kube):
    out = kube.kubectl("get", "--raw", "/readyz").stdout.strip()
    assert out == "ok"
    verbose = kube.kubectl("get", "--raw", "/readyz?verbose").stdout
    assert "[+]etcd ok" in verbose
    # the python client works against the same kubeconfig
    assert any(ns.metadata.name == "kube-system" for ns in kube.core.list_namespace().items)


def test_rbac_can_i(kube, namespace):
    kube.kubectl("create", "serviceaccount", "nobody", namespace=namespace)
    sa = f"system:serviceaccount:{namespace}:nobody"

    def can_i(*args: str, ns: str = namespace) -> str:
        # `auth can-i` exits 1 for "no"
        return kube.kubectl("auth", "can-i", *args, namespace=ns, check=False).stdout.strip()

    assert can_i("list", "secrets") == "yes"  # admin (system:masters)
    assert can_i("list", "secrets", "--as", sa) == "no"
    assert can_i("create", "pods", "--as", sa) == "no"

    # RBAC is evaluated live: bind a Role, the answer flips
    kube.kubectl("create", "role", "secret-reader", "--verb=get,list", "--resource=secrets", namespace=namespace)
    kube.kubectl(
        "create",
        "rolebinding",
        "nobody-reads",
        "--role=secret-reader",
        f"--serviceaccount={namespace}:nobody",
        namespace=namespace,
    )
    kube.wait_for(lambda: can_i("list", "secrets", "--as", sa) == "yes", timeout=30, message="RoleBinding effect")
    assert can_i("create", "pods", "--as", sa) == "no"
    assert can_i("list", "secrets", "--as", sa, ns="default") == "no"  # a Role is namespaced


def test_token_request_authenticates(kube, namespace):
    kube.kubectl("create", "serviceaccount", "robot", namespace=namespace)
    token = kube.kubectl("create", "token", "robot", "--duration=10m", namespace=namespace).stdout.strip()
    claims = _jwt_claims(token)
    assert claims["sub"] == f"system:serviceaccount:{namespace}:robot"
    assert claims["iss"]

    # the token really authenticates against the API server (and RBAC applies to it)
    who = kube.kubectl_as_token(token, "auth", "whoami", "-o", "json").stdout
    assert json.loads(who)["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:robot"
    denied = kube.kubectl_as_token(token, "get", "secrets", "-n", namespace, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
    can_i = kube.kubectl_as_token(token, "auth", "can-i", "list", "secrets", "-n", namespace, check=False)
    assert can_i.stdout.strip() == "no"

    # TokenReview, through the python client
    from kubernetes import client

    review = client.AuthenticationV1Api(kube.api).create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=token))
    )
    assert review.status.authenticated is True


def test_garbage_collection_deletes_dependents(kube, namespace):
    kube.kubectl("create", "configmap", "owner", "--from-literal=a=b", namespace=namespace)
    uid = kube.kubectl_json("get", "configmap", "owner", namespace=namespace)["metadata"]["uid"]
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "dependent",
                "namespace": namespace,
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}],
            },
            "data": {"x": "y"},
        }
    )
    kube.kubectl("get", "configmap", "dependent", namespace=namespace)
    kube.kubectl("delete", "configmap", "owner", "--wait=true", namespace=namespace)

    def gone() -> bool:
        r = kube.kubectl("get", "configmap", "dependent", "--ignore-not-found", "-o", "name", namespace=namespace)
        return r.stdout.strip() == ""

    kube.wait_for(gone, timeout=60, message="garbage collector to delete configmap/dependent")


def test_job_runs_to_completion_on_kwok_node(kube, namespace):
    """Job controller creates a Pod, the scheduler binds it, kwok runs and completes it."""
    kube.kubectl("create", "job", "hello", "--image=busybox:1.36", "--", "true", namespace=namespace)

    def succeeded() -> bool:
        job = kube.kubectl_json("get", "job", "hello", namespace=namespace)
        return (job.get("status") or {}).get("succeeded", 0) >= 1

    kube.wait_for(succeeded, timeout=120, message="job/hello to succeed")
    pods = kube.kubectl_json("get", "pods", "-l", "job-name=hello", namespace=namespace)["items"]
    assert pods and pods[0]["spec"]["nodeName"].startswith("kwok-")


def test_namespace_deletion_finishes(kube):
    kube.kubectl("create", "namespace", "t-ns-deletion")
    kube.kubectl("create", "configmap", "c", "--from-literal=a=b", "-n", "t-ns-deletion")
    kube.kubectl("delete", "namespace", "t-ns-deletion", "--wait=true", "--timeout=120s", timeout=150)
    r = kube.kubectl("get", "namespace", "t-ns-deletion", "--ignore-not-found", "-o", "name")
    assert r.stdout.strip() == ""


def _raycluster(name: str) -> dict:
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayCluster",
        "metadata": {"name": name},
        "spec": {
            "headGroupSpec": {
                "rayStartParams": {},
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": "ray-head",
                                "image": RAY_IMAGE,
                                "resources": {
                                    "requests": {"cpu": "500m", "memory": "1Gi"},
                                    "limits": {"cpu": "1", "memory": "2Gi"},
                                },
                            }
                        ]
                    }
                },
            }
        },
    }


def test_kuberay_raycluster_head_becomes_ready(kube, namespace):
    kube.apply(_raycluster("mini"), namespace=namespace)
    sel = "ray.io/cluster=mini,ray.io/node-type=head"

    def head_pod():
        items = kube.kubectl_json("get", "pods", "-l", sel, namespace=namespace)["items"]
        return items[0] if items else None

    pod = kube.wait_for(head_pod, timeout=90, message="KubeRay to create the head Pod")
    # KubeRay creates the head Service too
    kube.wait_for(
        lambda: kube.kubectl("get", "service", "-l", sel, "-o", "name", namespace=namespace).stdout.strip(),
        timeout=60,
        message="the head Service",
    )

    def running():
        p = head_pod()
        return p if p and p["status"].get("phase") == "Running" and p["spec"].get("nodeName") else None

    pod = kube.wait_for(running, timeout=120, message=lambda: f"head pod Running, last: {head_pod()}")
    assert pod["spec"]["nodeName"].startswith("kwok-")  # bound by the real scheduler to a kwok node
    node = kube.kubectl_json("get", "node", pod["spec"]["nodeName"])
    assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"

    def ready():
        rc = kube.kubectl_json("get", "raycluster", "mini", namespace=namespace)
        status = rc.get("status") or {}
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        return rc if status.get("state") == "ready" and conds.get("HeadPodReady") == "True" else None

    rc = kube.wait_for(
        ready,
        timeout=120,
        message=lambda: (
            "RayCluster ready; status: "
            + json.dumps(kube.kubectl_json("get", "raycluster", "mini", namespace=namespace).get("status"))
        ),
    )
    assert rc["status"]["head"]["podName"] == pod["metadata"]["name"]


def test_helm_talks_to_the_cluster(kube, namespace):
    """helm (built by ctl from the pinned module) works with the same kubeconfig."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    built = Path(os.environ.get("RED_CLUSTER_BIN", Path(__file__).parent / ".bin")) / "helm"
    helm = str(built) if built.is_file() else shutil.which("helm")
    if not helm:
        pytest.skip("no helm binary")
    out = subprocess.run(
        [helm, "list", "-n", namespace, "-o", "json"], env=kube.env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_gpu_request_is_scheduled_on_a_gpu_node(kube, namespace):
    """The fake GPU nodes advertise nvidia.com/gpu and are tainted as GKE and EKS taint theirs; the real
    scheduler places a Pod that asks for GPUs and tolerates the taint there, and only a Pod that tolerates it."""
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "wants-gpu", "namespace": namespace},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "busybox:1.36",
                        "resources": {"limits": {"nvidia.com/gpu": "2", "cpu": "1", "memory": "1Gi"}},
                    }
                ],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            },
        }
    )

    def running():
        pod = kube.kubectl_json("get", "pod", "wants-gpu", namespace=namespace)
        return pod if pod["status"].get("phase") == "Running" else None

    pod = kube.wait_for(running, timeout=90, message="GPU pod Running")
    assert pod["spec"]["nodeName"].startswith("kwok-gpu-")

    # Without the toleration, no node can take it: the GPU nodes are tainted.
    container = {"name": "c", "image": "busybox:1.36", "resources": {"limits": {"nvidia.com/gpu": "1"}}}
    kube.apply(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-toleration"}, "spec": {"containers": [container]}},
        namespace=namespace,
    )

    def refused() -> str:
        pod = kube.kubectl_json("get", "pod", "no-toleration", namespace=namespace)
        conditions = {c["type"]: c for c in pod["status"].get("conditions", [])}
        return conditions.get("PodScheduled", {}).get("message", "") if "nodeName" not in pod["spec"] else "bound"

    assert "untolerated taint" in kube.wait_for(refused, timeout=60, message="the scheduler's verdict on no-toleration")
