"""The operator against a real API server, the real KubeRay operator and kube-controller-manager's GC.

Pods are kwok's: the head Pod becomes Running and Ready, a submitter Job's Pod completes, but no Ray runs.
So a RayJob in K8sJobMode really fails (KubeRay gives up 30 s after the submitter finished without a Ray
job to ask about), while one in HTTPMode stays Running (KubeRay keeps retrying the unreachable dashboard):
tests that need a Federation to stay up use HTTPMode.
"""

from __future__ import annotations

import json
import signal
import time
from typing import Any

import pytest
import yaml

from red_api.spec import parse_manifest
from red_operator import builders
from tests.operator.conftest import EXAMPLES

pytestmark = pytest.mark.cluster

INTERVAL_S = 2.0  # the operator fixture's RED_RECONCILE_INTERVAL


def federation(name: str, spec: dict | None = None, mode: str = "HTTPMode") -> dict[str, Any]:
    spec = spec or {"rounds": 3, "nodes": {"count": 4}}
    spec.setdefault("ray", {}).setdefault("submissionMode", mode)
    spec["ray"].setdefault("head", {"cpu": "1", "memory": "1Gi"})
    return {"apiVersion": "red.dev/v1alpha1", "kind": "Federation", "metadata": {"name": name}, "spec": spec}


def apply(kube, namespace: str, manifest: dict | str) -> None:
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    kube.kubectl("apply", "--validate=strict", "-f", "-", input=text, namespace=namespace)


def get(kube, namespace: str, kind: str, name: str) -> dict | None:
    proc = kube.kubectl("get", kind, name, "-o", "json", namespace=namespace, check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def items(kube, namespace: str, kind: str, selector: str | None = None) -> list[dict]:
    args = ["get", kind] + (["-l", selector] if selector else [])
    return kube.kubectl_json(*args, namespace=namespace)["items"]


def names(kube, namespace: str, kind: str, fed: str | None = None) -> list[str]:
    selector = f"{builders.LABEL_FEDERATION}={fed}" if fed else builders.LABEL_FEDERATION
    return sorted(o["metadata"]["name"] for o in items(kube, namespace, kind, selector))


def status(kube, namespace: str, name: str) -> dict:
    return (get(kube, namespace, "federation", name) or {}).get("status") or {}


def wait_children(kube, namespace: str, name: str, timeout: float = 60) -> dict:
    """Until the RayCluster and the RayJob that the status names both exist; returns the status."""

    def ready():
        st = status(kube, namespace, name)
        job = st.get("rayJobName")
        return (
            st
            if job and get(kube, namespace, "rayjob", job) and get(kube, namespace, "raycluster", f"{name}-ray")
            else None
        )

    return kube.wait_for(ready, timeout=timeout, message=f"children of {namespace}/{name}")


def uids(kube, namespace: str, fed: str) -> dict[str, str]:
    out = {}
    for kind in ("raycluster", "rayjob", "serviceaccount", "role", "rolebinding"):
        for obj in items(kube, namespace, kind, f"{builders.LABEL_FEDERATION}={fed}"):
            out[f"{kind}/{obj['metadata']['name']}"] = obj["metadata"]["uid"]
    return out


def subset(small: Any, big: Any) -> bool:
    """Everything we sent is still there: the server dropped no field of ours (it may add defaults).

    A zero value may be missing: KubeRay writes its objects back through Go structs with omitempty."""
    if isinstance(small, dict):
        return isinstance(big, dict) and all(
            subset(v, big[k]) if k in big else v in (False, 0, "", None) for k, v in small.items()
        )
    if isinstance(small, list):
        return isinstance(big, list) and len(small) == len(big) and all(subset(a, b) for a, b in zip(small, big))
    return small == big or str(small) == str(big)


def test_each_example_gets_its_children_and_a_head_pod(kube, namespace, operator):
    """Every example (all six topologies among them): RayCluster, RayJob, ServiceAccount, Role, RoleBinding;
    KubeRay makes the head Pod."""
    feds = []
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        # HTTPMode: kwok runs no Ray, so a K8sJobMode submitter fails at once and the finished job's cluster
        # is released (as it should be) before this test has read it
        doc["spec"].setdefault("ray", {}).update(head={"cpu": "1", "memory": "1Gi"}, submissionMode="HTTPMode")
        apply(kube, namespace, doc)
        feds.append(doc["metadata"]["name"])
    assert len(feds) == len(EXAMPLES)
    kinds = {yaml.safe_load(p.read_text())["spec"]["topology"]["kind"] for p in EXAMPLES}
    assert kinds == {"star", "ring", "mesh", "kregular", "custom", "hierarchical"}
    for name in feds:
        st = wait_children(kube, namespace, name)
        assert names(kube, namespace, "serviceaccount", name) == [f"{name}-driver"]
        assert names(kube, namespace, "role", name) == [f"{name}-driver"]
        assert names(kube, namespace, "rolebinding", name) == [f"{name}-driver"]
        assert names(kube, namespace, "rayjob", name) == [st["rayJobName"]]
        fed_obj = get(kube, namespace, "federation", name)
        parsed = parse_manifest({**fed_obj, "metadata": {**fed_obj["metadata"], "namespace": namespace}})
        cluster = get(kube, namespace, "raycluster", f"{name}-ray")
        assert subset(builders.build_raycluster(parsed)["spec"], cluster["spec"]), "a RayCluster field was dropped"
        job = get(kube, namespace, "rayjob", st["rayJobName"])
        assert subset(builders.build_rayjob(parsed, 1, 1)["spec"], job["spec"]), "a RayJob field was dropped"
        assert job["metadata"]["ownerReferences"][0]["uid"] == fed_obj["metadata"]["uid"]
        kube.wait_for(
            lambda n=name: items(kube, namespace, "pods", f"ray.io/cluster={n}-ray,ray.io/node-type=head"),
            timeout=60,
            message=f"KubeRay's head Pod of {name}",
        )
    table = kube.kubectl("get", "fed", "-o", "wide", namespace=namespace).stdout
    header = table.splitlines()[0].split()
    wide = ["RAYJOB", "RAYCLUSTER", "REASON", "MODEL", "SERVE"]
    assert header == ["NAME", "READY", "PHASE", "ROUND", "NODES", "ACCURACY", "AGE", *wide]
    for line in table.splitlines()[1:]:
        assert line.split()[1] in ("True", "False") and line.split()[2] in ("Provisioning", "Running", "Failed")


def test_driver_columns_show_and_survive_the_operator(kube, namespace, operator):
    """The driver's fields (written here as the driver's ServiceAccount) fill ROUND, NODES and ACCURACY, are
    kept by the status schema, and are never overwritten by the operator's patches."""
    apply(kube, namespace, federation("cols"))
    wait_children(kube, namespace, "cols")
    driver = {
        "round": 3,
        "rounds": 20,
        "progress": "3/20",
        "nodesReady": "4/4",
        "metrics": {"loss": 0.21, "accuracy": 0.93, "grad_norm": 1.5},
        "nodes": [{"id": "node-0", "state": "Healthy", "restarts": 0, "lastRound": 3, "bundle": 1, "gpu": 0.0}],
        "lastCheckpoint": {"round": 3, "path": "/ckpt/3"},
        "startTime": "2026-01-01T00:00:00Z",
    }
    kube.kubectl(
        "patch", "federation", "cols", "--subresource=status", "--type=merge", "-p", json.dumps({"status": driver}),
        f"--as=system:serviceaccount:{namespace}:cols-driver", namespace=namespace,
    )  # fmt: skip
    time.sleep(3 * INTERVAL_S)
    st = status(kube, namespace, "cols")
    assert {k: st.get(k) for k in driver} == driver
    nodes_healthy = {c["type"]: c for c in st["conditions"]}["NodesHealthy"]
    assert nodes_healthy["status"] == "True"
    row = kube.kubectl("get", "fed", "cols", "--no-headers", namespace=namespace).stdout.split()
    assert row[3:6] == ["3/20", "4/4", "0.93"]


def test_invalid_manifests_are_rejected_and_create_nothing(kube, namespace, operator):
    cases = {
        "spec.rounds": federation("neg", {"rounds": -1}),
        "spec.topology.kind": federation("tree", {"topology": {"kind": "tree"}}),
        "spec.topology.degree": federation(
            "deg", {"topology": {"kind": "kregular", "degree": 8}, "nodes": {"count": 8}}
        ),
        "spec.topology.edges": federation(
            "edge", {"topology": {"kind": "custom", "edges": [[0, 9]]}, "nodes": {"count": 8}}
        ),
        "metadata.name": federation("n" * 51),
    }
    for field, manifest in cases.items():
        proc = kube.kubectl(
            "apply", "--validate=strict", "-f", "-", input=json.dumps(manifest), namespace=namespace, check=False
        )
        assert proc.returncode != 0 and field in proc.stderr, proc.stderr
    time.sleep(2 * INTERVAL_S)
    assert items(kube, namespace, "federations") == []
    for kind in ("rayclusters", "rayjobs", "roles"):
        assert items(kube, namespace, kind) == []


def test_an_operator_restart_creates_no_duplicates(kube, namespace, operator):
    apply(kube, namespace, federation("restart"))
    operator.stop(signal.SIGKILL)  # in the middle: maybe before, maybe during the first reconcile
    operator.start()
    wait_children(kube, namespace, "restart")
    before = uids(kube, namespace, "restart")
    assert len(before) == 5, before
    for _ in range(2):
        operator.stop(signal.SIGKILL)
        operator.start()
        time.sleep(3 * INTERVAL_S)
        assert uids(kube, namespace, "restart") == before


def test_a_spec_change_replaces_the_rayjob(kube, namespace, operator):
    apply(kube, namespace, federation("change"))
    first = wait_children(kube, namespace, "change")["rayJobName"]
    cluster_uid = get(kube, namespace, "raycluster", "change-ray")["metadata"]["uid"]
    kube.kubectl("patch", "federation", "change", "--type=merge", "-p", '{"spec": {"rounds": 7}}', namespace=namespace)

    def replaced():
        st = status(kube, namespace, "change")
        jobs = names(kube, namespace, "rayjob", "change")
        return st.get("rayJobName") not in (None, first) and jobs == [st["rayJobName"]]

    kube.wait_for(replaced, timeout=60, message="the RayJob replaced")
    st = status(kube, namespace, "change")
    job = get(kube, namespace, "rayjob", st["rayJobName"])
    assert job["metadata"]["labels"][builders.LABEL_GENERATION] == "2"
    assert st["observedGeneration"] == 2
    assert get(kube, namespace, "raycluster", "change-ray")["metadata"]["uid"] == cluster_uid


def test_suspend_and_resume(kube, namespace, operator):
    apply(kube, namespace, federation("pause"))
    job = wait_children(kube, namespace, "pause")["rayJobName"]
    kube.kubectl(
        "patch", "federation", "pause", "--type=merge", "-p", '{"spec": {"suspend": true}}', namespace=namespace
    )
    kube.wait_for(
        lambda: (
            status(kube, namespace, "pause").get("phase") == "Suspended"
            and not names(kube, namespace, "rayjob", "pause")
            and not names(kube, namespace, "raycluster", "pause")
        ),
        timeout=60,
        message="suspended with no compute",
    )
    assert names(kube, namespace, "role", "pause") == ["pause-driver"]
    kube.kubectl(
        "patch", "federation", "pause", "--type=merge", "-p", '{"spec": {"suspend": false}}', namespace=namespace
    )
    st = wait_children(kube, namespace, "pause")
    assert st["rayJobName"] == job, "same spec, same RayJob name"
    kube.wait_for(lambda: status(kube, namespace, "pause").get("phase") != "Suspended", timeout=30)


def test_deleting_the_federation_leaves_nothing(kube, namespace, operator):
    apply(kube, namespace, federation("gone"))
    wait_children(kube, namespace, "gone")
    kube.wait_for(lambda: items(kube, namespace, "pods", "ray.io/cluster=gone-ray"), timeout=60, message="head Pod")
    kube.kubectl("delete", "federation", "gone", "--wait=true", namespace=namespace)

    def empty():
        left = {k: names(kube, namespace, k) for k in ("raycluster", "rayjob", "serviceaccount", "role", "rolebinding")}
        left["pods"] = [p["metadata"]["name"] for p in items(kube, namespace, "pods")]
        left["jobs"] = [j["metadata"]["name"] for j in items(kube, namespace, "jobs")]
        return not any(left.values())

    kube.wait_for(empty, timeout=90, message="GC of every child")


def can_i(kube, namespace: str, sa: str, *args: str) -> bool:
    proc = kube.kubectl(
        "auth", "can-i", *args, f"--as=system:serviceaccount:{namespace}:{sa}", namespace=namespace, check=False
    )
    return proc.stdout.strip() == "yes"


def test_the_driver_may_touch_only_its_own_federation(kube, namespace, operator):
    for name in ("alpha", "beta"):
        apply(kube, namespace, federation(name))
    for name in ("alpha", "beta"):
        kube.wait_for(lambda n=name: names(kube, namespace, "rolebinding", n), timeout=60)
    sa = "alpha-driver"
    assert can_i(kube, namespace, sa, "patch", "federations.red.dev/alpha", "--subresource=status")
    assert can_i(kube, namespace, sa, "get", "federations.red.dev/alpha")
    assert not can_i(kube, namespace, sa, "patch", "federations.red.dev/beta", "--subresource=status")
    assert not can_i(kube, namespace, sa, "patch", "federations.red.dev/alpha")
    assert not can_i(kube, namespace, sa, "get", "secrets")
    assert not can_i(kube, namespace, sa, "create", "pods")
    assert not can_i(kube, namespace, sa, "list", "federations.red.dev")
    denied = kube.kubectl(
        "patch", "federation", "beta", "--subresource=status", "--type=merge", "-p", '{"status": {"round": 1}}',
        f"--as=system:serviceaccount:{namespace}:{sa}", namespace=namespace, check=False,
    )  # fmt: skip
    assert denied.returncode != 0 and "forbidden" in denied.stderr


def test_a_rayjob_that_kuberay_fails_fails_the_federation(kube, namespace, operator):
    """A real failure, reported by the real KubeRay: no Ray runs on kwok, so after the K8sJobMode submitter
    Pod completes KubeRay marks the RayJob Failed (JobDeploymentStatusTransitionGracePeriodExceeded). With
    maxJobRetries 1 the operator starts a second RayJob first, then gives up and releases the cluster."""
    spec = {"rounds": 3, "nodes": {"count": 4}, "faultTolerance": {"maxJobRetries": 1}}
    apply(kube, namespace, federation("doomed", spec, mode="K8sJobMode"))
    st = kube.wait_for(
        lambda: (s := status(kube, namespace, "doomed")).get("phase") == "Failed" and s,
        timeout=240,
        interval=1,
        message="phase Failed",
    )
    assert st["attempts"] == 2 and st["rayJobName"].endswith("-2")
    job = get(kube, namespace, "rayjob", st["rayJobName"])
    assert job["status"]["jobDeploymentStatus"] == "Failed"
    failed = {c["type"]: c for c in st["conditions"]}["Failed"]
    assert failed["status"] == "True" and failed["reason"] == job["status"]["reason"] == st["reason"]
    assert failed["message"] == job["status"]["message"]
    kube.wait_for(lambda: get(kube, namespace, "raycluster", "doomed-ray") is None, timeout=60)
    events = kube.kubectl_json("get", "events", "--field-selector", "involvedObject.name=doomed", namespace=namespace)
    reasons = {e["reason"] for e in events["items"]}
    assert "Failed" in reasons and reasons & {"Pending", "Provisioning", "Running"}
